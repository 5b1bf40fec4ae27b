"""The settings of GRPO-S dynamic reward scaling (METHOD.md §2.4), defined once and checked when a config is built.

This module imports nothing heavy, so a config can be loaded and validated (``drirl run``'s early check, ``--help``)
without torch. The formulas themselves live in :mod:`drirl.align.scaling`,
applied to batches in :mod:`drirl.align.scaling_batch`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from drirl.errors import ConfigError

__all__ = [
    "COMBINE_MODES",
    "DATA_REFERENCES",
    "DELTA_ON",
    "EMPTY_MASK_RULES",
    "MODEL_REFERENCES",
    "SCALING_MODES",
    "ScalingConfig",
    "ScalingConfigError",
    "check_outlier_tau",
]

SCALING_MODES = ("none", "data", "model", "both")
COMBINE_MODES = ("product", "sum")
DATA_REFERENCES = ("group", "category_running_mean")
MODEL_REFERENCES = ("category_running_mean", "group_mean")
DELTA_ON = ("full", "answer")
SENTENCE_SPLITTERS = ("fast", "pysbd")
EMPTY_MASK_RULES = ("group_mean", "neutral", "zero")


class ScalingConfigError(ConfigError, ValueError):
    """A scaling setting has a value outside its allowed set (a ``ValueError`` and a ``ConfigError`` naming the key)."""



@dataclass
class ScalingConfig:
    """The settings of GRPO-S dynamic reward scaling, defined here once; each ablation of METHOD.md §2.4 is one field.

    ``AlignConfig`` (``drirl align`` and the pipeline's ``align`` section), TRL-side ``GRPOSConfig`` and the DPO
    baseline's config inherit these fields, so a key is spelled, documented, defaulted and validated in one place
    and a bad value fails when the config is built (i.e. when it is loaded), not when training starts.
    """

    scaling_mode: str = field(
        default="both",
        metadata={
            "help": "Which difficulty factors scale the advantages: 'none' (plain GRPO), 'data' (α^D only), "
            "'model' (α^M only) or 'both' (combined with scaling_combine)."
        },
    )
    scaling_combine: str = field(
        default="product",
        metadata={
            "help": "How α^D and α^M combine when scaling_mode='both': 'product' (α^D·α^M, the paper's choice) or "
            "'sum' (w·α^D + (1−w)·α^M)."
        },
    )
    scaling_sum_data_weight: float = field(
        default=0.5,
        metadata={"help": "w in [0, 1], the weight of α^D when scaling_combine='sum'."},
    )
    scaling_data_reference: str = field(
        default="group",
        metadata={
            "help": "Reference δ̄ of α^D = σ(δ)/σ(δ̄): 'group' (mean δ of the G completions; α^D then averages about 1 "
            "in every group) or 'category_running_mean' (exponential moving mean of δ over the prompt's category, "
            "so a whole group that strays further than usual is scaled up)."
        },
    )
    scaling_model_reference: str = field(
        default="category_running_mean",
        metadata={
            "help": "Reference ḡ_ref of α^M = σ(ḡ_P)/σ(ḡ_ref): 'category_running_mean' (exponential moving mean "
            "of the group mean gap over the prompt's category) or 'group_mean' (this group's mean gap)."
        },
    )
    scaling_running_mean_momentum: float = field(
        default=0.9,
        metadata={
            "help": "Momentum m in [0, 1] of the category running means: new = m·old + (1−m)·value; "
            "the first value of a category initialises it."
        },
    )
    scaling_outlier_tau: float = field(
        default=4.0,
        metadata={
            "help": "τ >= 0 of the outlier mask m_i = 1[(g_i − ḡ)² <= τ] on reward gaps; .inf disables the mask. "
            "By default absolute, in squared reward units as in METHOD.md (τ=4 drops gaps more than 2 reward units "
            "from their group's mean). With scaling_outlier_tau_relative it is a multiple of the group's gap "
            "variance, and must then be below G−1 (no deviation² can exceed (G−1)·Var in a group of G)."
        },
    )
    scaling_outlier_tau_relative: bool = field(
        default=False,
        metadata={
            "help": "false (default, the paper's form): τ is absolute. true: the threshold is τ·Var(g) of the "
            "group, scale-free; checked against num_generations when the config is loaded."
        },
    )
    scaling_empty_mask: str = field(
        default="group_mean",
        metadata={
            "help": "ḡ_P of a group whose outlier mask keeps no gap (METHOD.md leaves Σ m_i = 0 undefined; it "
            "happens to a bimodal group, e.g. two refusals and two answers whose gaps all lie more than √τ from "
            "their mean): group_mean (default) uses the unmasked group mean ḡ; neutral gives that group α^M = 1; "
            "zero uses ḡ_P = 0, which is neutral only against a reference of 0 (against a category running mean "
            "of −10 it gives α^M = σ(0)/σ(−10), clipped to alpha_max: the reference alone decides)."
        },
    )
    scaling_sharpness: float = field(
        default=1.0,
        metadata={
            "help": "Sharpness k > 0 of both sigmoid ratios: α^D = σ(k·δ)/σ(k·δ̄) and α^M = σ(k·ḡ_P)/σ(k·ḡ_ref). "
            "k = 1 is the paper. With k = 1 α^D stays near 1; a larger k widens it only up to k of about 4 (k·δ "
            "then sits in σ's flat tail), unless scaling_centered is true."
        },
    )
    scaling_centered: bool = field(
        default=False,
        metadata={
            "help": "false (the paper): α^D = σ(k·δ)/σ(k·δ̄) and α^M = σ(k·ḡ_P)/σ(k·ḡ_ref). true: σ(k·(δ − δ̄))/σ(0) "
            "and σ(k·(ḡ_P − ḡ_ref))/σ(0), 1 at the reference as before, but k then stretches the deviation itself: "
            "since δ is mostly 0.4–0.9, σ(k·δ) saturates and the paper's form flattens towards 1 as k grows."
        },
    )
    scaling_standardize_gaps: bool = field(
        default=False,
        metadata={
            "help": "false (the paper): α^M uses raw reward gaps. true: the gaps and their reference are divided "
            "by the standard deviation of the batch's finite gaps first, so k acts on z-scores whatever the "
            "reward model's scale."
        },
    )
    scaling_delta_on: str = field(
        default="full",
        metadata={
            "help": "Text that δ = 1 − W compares: 'full' (the whole response and demonstration, the paper) or "
            "'answer' (the part after 'Answer:' of a Chain-of-Draft text, so the terse draft notes do not "
            "dominate W; text without the label is used whole)."
        },
    )
    scaling_sentence_splitter: str = field(
        default="fast",
        metadata={
            "help": "How a text is cut into the sentences S^k whose embeddings W compares: 'fast' (punctuation and "
            "line breaks, aware of common abbreviations, initials and list numbers) or 'pysbd' (a rule-based "
            "splitter about 70× slower: on a GPU its time on the host was a third of a GRPO-S step)."
        },
    )
    alpha_min: float = field(
        default=0.5,
        metadata={"help": "Lower clip bound of α (> 0, so scaling never flips an advantage's sign)."},
    )
    alpha_max: float = field(
        default=2.0,
        metadata={"help": "Upper clip bound of α (>= alpha_min)."},
    )
    text_encoder: str = field(
        default="minilm",
        metadata={"help": "Sentence-transformers model Φ of α^D (folder, hub id, or the bundled alias 'minilm')."},
    )
    encoder_batch_size: int = field(
        default=64,
        metadata={"help": "Sentences per call of the text encoder Φ."},
    )

    def __post_init__(self) -> None:
        self.check_scaling()

    def check_scaling(self) -> None:
        """Raise :class:`ScalingConfigError` naming the first scaling field whose value is not allowed."""
        for name, allowed in (
            ("scaling_mode", SCALING_MODES),
            ("scaling_combine", COMBINE_MODES),
            ("scaling_data_reference", DATA_REFERENCES),
            ("scaling_model_reference", MODEL_REFERENCES),
            ("scaling_delta_on", DELTA_ON),
            ("scaling_sentence_splitter", SENTENCE_SPLITTERS),
            ("scaling_empty_mask", EMPTY_MASK_RULES),
        ):
            value = getattr(self, name)
            if value not in allowed:
                raise _config_error(name, f"must be one of {list(allowed)}, got {value!r}")
        for name in ("scaling_sum_data_weight", "scaling_running_mean_momentum"):
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 <= value <= 1.0:
                raise _config_error(name, f"must be in [0, 1], got {value!r}")
        if not _is_number(self.scaling_outlier_tau) or self.scaling_outlier_tau < 0:
            raise _config_error("scaling_outlier_tau", f"must be >= 0 (.inf allowed), got {self.scaling_outlier_tau!r}")
        for name in ("scaling_outlier_tau_relative", "scaling_standardize_gaps", "scaling_centered"):
            if not isinstance(getattr(self, name), bool):
                raise _config_error(name, f"must be true or false, got {getattr(self, name)!r}")
        k = self.scaling_sharpness
        if not _is_number(k) or not math.isfinite(k) or k <= 0:
            raise _config_error("scaling_sharpness", f"must be a finite number > 0, got {k!r}")
        if not _is_number(self.alpha_min) or not math.isfinite(self.alpha_min) or self.alpha_min <= 0:
            raise _config_error("alpha_min", f"must be a finite number > 0, got {self.alpha_min!r}")
        if not _is_number(self.alpha_max) or self.alpha_max < self.alpha_min:
            raise _config_error("alpha_max", f"must be >= alpha_min ({self.alpha_min}), got {self.alpha_max!r}")
        if not isinstance(self.text_encoder, str) or not self.text_encoder.strip():
            raise _config_error("text_encoder", f"must name a text encoder, got {self.text_encoder!r}")
        if isinstance(self.encoder_batch_size, bool) or not isinstance(self.encoder_batch_size, int) \
                or self.encoder_batch_size < 1:
            raise _config_error("encoder_batch_size", f"must be an integer >= 1, got {self.encoder_batch_size!r}")

    def scaling_settings(self) -> ScalingConfig:
        """A plain :class:`ScalingConfig` with this config's scaling values (for configs that inherit the fields)."""
        return ScalingConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(ScalingConfig)})


def check_outlier_tau(tau: float, relative: bool, group_size: int, *, key: str = "scaling_outlier_tau") -> None:
    """Refuse a relative τ that can never mask anything in a group of ``group_size`` (G) completions.

    In a group of G finite gaps, (g_i − ḡ)² ≤ (G − 1)·Var(g) for every i (population variance; equality when all
    the other gaps are equal), so the relative test (g_i − ḡ)² ≤ τ·Var(g) keeps every gap when τ ≥ G − 1: the
    mask m_i of METHOD.md §2.4 would be silently inert. ``tau = inf`` is the explicit "no mask" and is allowed;
    an absolute τ depends on the reward scale and is not checked.
    """
    if not relative or math.isinf(tau) or group_size < 2:
        return
    if tau >= group_size - 1:
        raise _config_error(
            key,
            f"a relative τ of {tau:g} can never mask a gap in a group of {group_size} completions: no deviation² "
            f"exceeds (G−1)·Var = {group_size - 1}·Var. Use τ < {group_size - 1}, an absolute τ "
            "(scaling_outlier_tau_relative: false), or .inf to disable the mask",
        )


def _config_error(name: str, message: str) -> ScalingConfigError:
    return ScalingConfigError(message, key=name)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
