"""GRPO-S dynamic reward scaling (METHOD.md §2.4), as small pure functions over torch tensors.

GRPO-S multiplies each group-normalised advantage by a per-completion difficulty factor

    A_i = α_i · (r_i − mean(r_1..G)) / std(r_1..G),      α_i = clip(α^D_i ⊗ α^M, α_min, α_max)

where ⊗ is a product (default) or a weighted sum, and

* α^D_i = σ(δ_i) / σ(δ̄) is the **data-level hardness**: δ_i = 1 − W_i, with W_i the greedy sentence-matching
  similarity between completion o_i and the demonstration õ in a text encoder's space;
* α^M = σ(ḡ_P) / σ(ḡ_ref) is the **model-level responsiveness**: ḡ_P is the outlier-masked mean of the reward gaps
  g_i = R_j(q, o_i) − R_j(q, õ) of the group.

Every formula lives in its own function, named after the paper's symbol. Tensors follow one convention: the last
dimension is the group of G completions of one prompt (shape ``[..., G]``); per-group quantities drop it (``[...]``).
Nothing here loads a model or knows about the trainer: embeddings and rewards come in as tensors, and
:func:`compute_group_scaling` turns a batch of gathered groups into the α that multiplies the advantages.

All functions return finite values for finite inputs and for the degenerate cases a trainer meets in practice: an
empty completion (K = 0), a single sentence, all-equal rewards, NaN rewards, zero-variance groups and G = 1.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from drirl.align.settings import (
    COMBINE_MODES,
    DATA_REFERENCES,
    DELTA_ON,
    MODEL_REFERENCES,
    SCALING_MODES,
    ScalingConfig,
    ScalingConfigError,
    _is_number,
    check_outlier_tau,
)
from drirl.responses import answer_part

__all__ = [
    "COMBINE_MODES",
    "DATA_REFERENCES",
    "DELTA_ON",
    "MODEL_REFERENCES",
    "SCALING_MODES",
    "CategoryRunningMean",
    "GroupScaling",
    "PairScaling",
    "ScalingConfig",
    "ScalingConfigError",
    "check_outlier_tau",
    "clip_weights",
    "combine_weights",
    "compute_group_scaling",
    "data_hardness_weight",
    "dpo_pair_weights",
    "gap_scale",
    "greedy_match_similarity",
    "hardness_delta",
    "hardness_text",
    "mask_fraction",
    "masked_mean_gap",
    "model_responsiveness_weight",
    "outlier_mask",
    "reward_gaps",
]


# Below this norm an embedding is treated as the zero vector (cosine 0), so an empty or degenerate sentence
# embedding can never divide by zero.
_COSINE_EPS = 1e-8




# ---------------------------------------------------------------------------------------------------------------
# Data-level hardness α^D
# ---------------------------------------------------------------------------------------------------------------


def _float_dtype(*tensors: Tensor) -> torch.dtype:
    dtype = torch.get_default_dtype()
    floats = [t.dtype for t in tensors if t.is_floating_point()]
    if floats:
        dtype = functools.reduce(torch.promote_types, floats)
    return dtype


def _unit_rows(x: Tensor) -> Tensor:
    # Non-finite entries become 0 so one broken embedding cannot turn the whole W into NaN.
    x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    # Dividing by the largest |entry| first keeps the squared norm from overflowing for huge vectors
    # (cosine is scale-invariant, so this changes nothing else).
    scale = x.abs().amax(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    x = x / scale
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(_COSINE_EPS)


def greedy_match_similarity(response_embeddings: Tensor, demo_embeddings: Tensor) -> Tensor:
    """W_i = (1/K) Σ_k max_l cos(Φ(S^k), Φ(S̃^l)): greedy sentence matching of a response to its demonstration.

    Args:
        response_embeddings: ``[K, d]``, Φ of the K sentences of the response o_i.
        demo_embeddings: ``[L, d]``, Φ of the L sentences of the demonstration õ.

    Returns:
        A 0-dim tensor W_i in [-1, 1]. Each response sentence is matched to its closest demonstration sentence,
        so W is high when everything the response says is close to something the demonstration says.

    K = 0 or L = 0 gives W = 0: with nothing to compare there is no evidence of overlap, so the sample counts as
    hard (δ = 1) instead of crashing on an empty max. A zero-norm row has cosine 0 with everything (never NaN).
    """
    if response_embeddings.dim() != 2 or demo_embeddings.dim() != 2:
        raise ValueError(
            "greedy_match_similarity expects 2-D [K, d] and [L, d] embeddings, got shapes "
            f"{tuple(response_embeddings.shape)} and {tuple(demo_embeddings.shape)}"
        )
    dtype = _float_dtype(response_embeddings, demo_embeddings)
    k, l_ = response_embeddings.shape[0], demo_embeddings.shape[0]
    if k == 0 or l_ == 0:
        return torch.zeros((), dtype=dtype, device=response_embeddings.device)
    if response_embeddings.shape[1] != demo_embeddings.shape[1]:
        raise ValueError(
            f"embedding widths differ: responses have d={response_embeddings.shape[1]}, "
            f"demonstration has d={demo_embeddings.shape[1]}"
        )
    response = _unit_rows(response_embeddings.to(dtype))
    demo = _unit_rows(demo_embeddings.to(dtype))
    cosine = response @ demo.T  # s_{k,l}, [K, L]
    # Rounding can push a cosine of unit vectors a hair past ±1.
    return cosine.amax(dim=1).mean().clamp(-1.0, 1.0)


def hardness_delta(similarity: Tensor) -> Tensor:
    """δ_i = 1 − W_i: distance of the response from the demonstration (0 = same content, up to 2 = opposite)."""
    return 1.0 - similarity


def _finite_mean(x: Tensor, dim: int = -1) -> tuple[Tensor, Tensor]:
    """Mean of the finite entries of ``x`` over ``dim`` and whether there was any finite entry.

    Where there is none the mean is 0. The values are scaled by their largest |entry| before summing so that
    the sum of G huge but finite values cannot overflow to inf.
    """
    finite = torch.isfinite(x)
    values = torch.where(finite, x, torch.zeros_like(x))
    count = finite.sum(dim=dim)
    scale = values.abs().amax(dim=dim, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    mean = (values / scale).sum(dim=dim) / count.clamp_min(1) * scale.squeeze(dim)
    return mean, count > 0


def _saturate(x: Tensor) -> Tensor:
    # A sigmoid ratio of extreme logits is a genuine overflow/underflow (e.g. σ(0)/σ(−1000) = e^1000); keep it
    # finite and strictly positive so it still points the right way and clipping can handle it.
    info = torch.finfo(x.dtype)
    return torch.nan_to_num(x, posinf=info.max).clamp(info.tiny, info.max)


def _sigmoid_ratio(x: Tensor, reference: Tensor) -> Tensor:
    """σ(x) / σ(reference), computed as exp(log σ(x) − log σ(reference)) so that σ underflowing to 0 gives no 0/0."""
    return _saturate(torch.exp(_log_sigmoid(x) - _log_sigmoid(reference)))


def _log_sigmoid(x: Tensor) -> Tensor:
    # log σ(x) = −softplus(−x), exact in both tails; F.logsigmoid is the same function but two orders of
    # magnitude slower on small CPU tensors.
    return -F.softplus(-x)


def data_hardness_weight(delta: Tensor, reference_delta: Tensor | None = None, sharpness: float = 1.0,
                         centered: bool = False) -> Tensor:
    """α^D_i = σ(k·δ_i) / σ(k·δ̄): harder-than-reference responses (δ_i > δ̄) get α^D > 1, easier ones α^D < 1.

    Args:
        delta: ``[..., G]`` hardness δ of each completion; the last dimension is the group.
        reference_delta: δ̄. ``None`` (the default **Choice**) uses the mean δ of the group, so α^D compares a
            completion with its siblings. Otherwise a scalar or a tensor broadcastable to
            ``delta.shape[:-1] + (1,)``, e.g. the running mean δ of the prompt's category.
        sharpness: k > 0 (**Choice**; 1 is the paper's σ(δ)/σ(δ̄)). δ lies in [0, 2], where σ is nearly linear,
            so with k = 1 α^D stays within about ±25 % of 1. A larger k widens the range only while k·δ stays
            out of σ's flat tail: δ is mostly 0.4–0.9, so k·δ saturates for k of about 4 and more.
        centered: **Choice**, off by default. α^D = σ(k·(δ_i − δ̄)) / σ(0) = 2·σ(k·(δ_i − δ̄)) instead: the same
            value at δ_i = δ̄ (1) and the same slope at k = 1 up to σ's curvature, but k then scales the deviation
            itself, so the range grows with k towards (0, 2) instead of collapsing to 1.

    Non-finite δ are replaced by the group mean of the finite ones (a failed embedding should not decide the
    weight); a group with no finite δ, or a non-finite reference, gives the neutral α^D = 1. The result is
    always finite and strictly positive.
    """
    dtype = _float_dtype(delta)
    delta = delta.to(dtype)
    group_mean, any_finite = _finite_mean(delta)
    group_mean = group_mean.unsqueeze(-1)
    if reference_delta is None:
        reference = group_mean
    else:
        reference = torch.as_tensor(reference_delta, dtype=dtype, device=delta.device)
        if reference.dim() == delta.dim() - 1 and reference.dim() > 0:
            reference = reference.unsqueeze(-1)
        reference = torch.where(torch.isfinite(reference), reference, group_mean)
    # A group with nothing finite carries no information: make δ equal to the reference so α^D = 1.
    fill = torch.where(any_finite.unsqueeze(-1), group_mean, reference)
    delta = torch.where(torch.isfinite(delta), delta, fill)
    k = _sharpness(sharpness)
    if centered:
        return _sigmoid_ratio(k * (delta - reference), torch.zeros_like(reference))
    return _sigmoid_ratio(k * delta, k * reference)


def _sharpness(k: float) -> float:
    if not isinstance(k, (int, float)) or isinstance(k, bool) or not math.isfinite(k) or k <= 0:
        raise ValueError(f"sharpness k must be a finite number > 0, got {k!r}")
    return float(k)


# ---------------------------------------------------------------------------------------------------------------
# Model-level responsiveness α^M
# ---------------------------------------------------------------------------------------------------------------


def reward_gaps(rewards: Tensor, demo_reward: Tensor | float) -> Tensor:
    """g_i = R_j(q, o_i) − R_j(q, õ): how the reward model scores each completion against the demonstration.

    Args:
        rewards: ``[..., G]`` rewards of the completions.
        demo_reward: R_j(q, õ), one per group (shape ``[...]``, broadcast over the group) or a scalar. It is fixed
            while R_j is frozen, so callers compute it once per prompt and cache it.

    Non-finite rewards give non-finite gaps; :func:`outlier_mask` removes them.
    """
    dtype = _float_dtype(rewards)
    rewards = rewards.to(dtype)
    demo = torch.as_tensor(demo_reward, dtype=dtype, device=rewards.device)
    if demo.dim() > 0 and demo.dim() == rewards.dim() - 1:
        demo = demo.unsqueeze(-1)
    return rewards - demo


def outlier_mask(gaps: Tensor, tau: float, relative: bool = False) -> Tensor:
    """m_i = 1[(g_i − ḡ)² ≤ τ]: keep the gaps close to the group mean ḡ, drop outliers (``[..., G]`` bool).

    ḡ is the mean of the finite gaps of the group (last dimension). By default (``relative=False``, METHOD.md's
    form) τ is an absolute threshold in squared reward units. With ``relative=True`` the threshold is τ·Var(g),
    the population variance of the group's finite gaps, so τ is unitless: τ = 4 keeps gaps within 2 standard
    deviations. In a group of n finite gaps no gap lies more than √(n−1) standard deviations from the mean, so a
    relative τ ≥ n − 1 never masks anything (:func:`check_outlier_tau` refuses it at load time).

    NaN and ±inf gaps are always masked out. A group whose finite gaps are all equal keeps all of them
    (nothing stands out), whatever τ.
    """
    if math.isnan(tau) or tau < 0:
        raise ValueError(f"outlier tau must be >= 0, got {tau}")
    dtype = _float_dtype(gaps)
    gaps = gaps.to(dtype)
    finite = torch.isfinite(gaps)
    if gaps.numel() == 0:
        return finite
    zeros = torch.zeros_like(gaps)
    # Work on gaps divided by the group's largest |gap|: the relative test is scale-invariant and squares of
    # huge (but finite) rewards would otherwise overflow.
    scale = torch.where(finite, gaps, zeros).abs().amax(dim=-1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
    z = torch.where(finite, gaps / scale, zeros)
    count = finite.sum(dim=-1, keepdim=True).clamp_min(1)
    z_mean = z.sum(dim=-1, keepdim=True) / count
    if relative:
        deviation_sq = torch.where(finite, (z - z_mean) ** 2, zeros)
        variance = deviation_sq.sum(dim=-1, keepdim=True) / count
        keep = deviation_sq <= tau * variance
    else:
        # |g − ḡ| ≤ √τ is the same test without squaring (which could overflow); an overflowing difference
        # is inf and correctly fails it.
        keep = (gaps - z_mean * scale).abs() <= math.sqrt(tau)
    # Zero variance makes the relative threshold 0 (or 0·inf = NaN for τ = inf), so say explicitly that a
    # group of identical gaps has no outlier.
    largest = torch.where(finite, gaps, torch.full_like(gaps, -math.inf)).amax(dim=-1, keepdim=True)
    smallest = torch.where(finite, gaps, torch.full_like(gaps, math.inf)).amin(dim=-1, keepdim=True)
    return finite & (keep | (largest == smallest))


def masked_mean_gap(gaps: Tensor, mask: Tensor) -> Tensor:
    """ḡ_P = Σ_i m_i g_i / Σ_i m_i over the group (last dimension); shape ``gaps.shape[:-1]``.

    A group with no kept gap (Σ m_i = 0) gets ḡ_P = 0, the neutral value, never NaN. Gaps outside the mask may
    be NaN: they are never multiplied, only skipped.
    """
    mask = mask.bool() & torch.isfinite(gaps)
    masked = torch.where(mask, gaps, torch.full_like(gaps, float("nan")))
    mean, _ = _finite_mean(masked)
    return mean


def model_responsiveness_weight(gap_p: Tensor, reference_gap: Tensor | float, sharpness: float = 1.0,
                                centered: bool = False) -> Tensor:
    """α^M = σ(k·ḡ_P) / σ(k·ḡ_ref), one per group (shape of ``gap_p``); k = 1 (the default) is the paper's form.
    ``centered`` gives σ(k·(ḡ_P − ḡ_ref)) / σ(0) instead (see :func:`data_hardness_weight`).

    A prompt whose completions score further above the demonstration than the reference (by default the running
    mean of its category) is one the model already responds to: α^M > 1; one lagging behind gets α^M < 1.
    A non-finite ḡ_P or ḡ_ref gives the neutral α^M = 1. Always finite and strictly positive.
    """
    dtype = _float_dtype(gap_p)
    gap_p = gap_p.to(dtype)
    reference = torch.as_tensor(reference_gap, dtype=dtype, device=gap_p.device)
    reference = torch.where(torch.isfinite(reference), reference, gap_p)
    gap_p = torch.where(torch.isfinite(gap_p), gap_p, reference)
    k = _sharpness(sharpness)
    if centered:
        ratio = _sigmoid_ratio(k * (gap_p - reference), torch.zeros_like(reference))
    else:
        ratio = _sigmoid_ratio(k * gap_p, k * reference)
    return torch.where(torch.isfinite(gap_p) & torch.isfinite(reference), ratio, torch.ones_like(ratio))


def gap_scale(gaps: Tensor) -> Tensor:
    """s = the population standard deviation of all finite gaps of the batch (0-dim), or 1 when it is 0 or undefined.

    Dividing ḡ_P and ḡ_ref by s turns them into z-scores (``scaling_standardize_gaps``), so a sharpness k means
    the same whatever the reward model's scale. Computed on the gathered batch, like α itself.
    """
    dtype = _float_dtype(gaps)
    gaps = gaps.to(dtype)
    finite = gaps[torch.isfinite(gaps)]
    if finite.numel() < 2:
        return torch.ones((), dtype=dtype, device=gaps.device)
    # Centre before squaring and divide by the largest |deviation| so huge but finite gaps cannot overflow.
    deviation = finite - finite.mean()
    top = deviation.abs().amax()
    if not torch.isfinite(top) or top == 0:
        return torch.ones((), dtype=dtype, device=gaps.device)
    scale = top * torch.sqrt(((deviation / top) ** 2).mean())
    return scale if bool(torch.isfinite(scale)) and scale > 0 else torch.ones((), dtype=dtype, device=gaps.device)


def mask_fraction(mask: Tensor, gaps: Tensor) -> float:
    """The fraction of finite gaps that the outlier mask drops (0.0 when there is none): how often m_i fires."""
    finite = torch.isfinite(gaps)
    total = int(finite.sum().item())
    if not total:
        return 0.0
    return float((finite & ~mask.bool()).sum().item()) / total


def hardness_text(text: str, delta_on: str = "full") -> str:
    """The part of a response or demonstration that δ compares: all of it (``"full"``) or its answer (``"answer"``).

    With ``"answer"``, a Chain-of-Draft text ("Draft: …\nAnswer: …", METHOD.md §2.2) gives what follows its
    "Answer:" label; a text without that layout (a plain answer, or a draft cut off before its answer) is used
    whole, the same rule the evaluation's judges use.
    """
    if delta_on not in DELTA_ON:
        raise ValueError(f"delta_on must be one of {list(DELTA_ON)}, got {delta_on!r}")
    if delta_on == "full":
        return text or ""
    return answer_part(text or "")


# ---------------------------------------------------------------------------------------------------------------
# Combination and clipping: α_i
# ---------------------------------------------------------------------------------------------------------------


def combine_weights(alpha_data: Tensor, alpha_model: Tensor, mode: str = "product", data_weight: float = 0.5) -> Tensor:
    """α_i = α^D_i · α^M (``"product"``, the paper's better variant) or w·α^D_i + (1 − w)·α^M (``"sum"``).

    ``alpha_data`` is ``[..., G]``; ``alpha_model`` is one per group (``[...]``) and is broadcast over the group,
    or a scalar. ``data_weight`` is w, used only by ``"sum"`` and must lie in [0, 1].
    """
    if mode not in COMBINE_MODES:
        raise ValueError(f"combine mode must be one of {list(COMBINE_MODES)}, got {mode!r}")
    dtype = _float_dtype(alpha_data)
    alpha_data = alpha_data.to(dtype)
    alpha_model = torch.as_tensor(alpha_model, dtype=dtype, device=alpha_data.device)
    if alpha_model.dim() > 0 and alpha_model.dim() == alpha_data.dim() - 1:
        alpha_model = alpha_model.unsqueeze(-1)
    if mode == "product":
        combined = alpha_data * alpha_model
    else:
        if not 0.0 <= data_weight <= 1.0:
            raise ValueError(f"sum data_weight must be in [0, 1], got {data_weight}")
        combined = data_weight * alpha_data + (1.0 - data_weight) * alpha_model
    info = torch.finfo(dtype)
    # Two large but finite factors can overflow the product; saturate so clipping still sees "very large".
    return torch.nan_to_num(combined, nan=math.nan, posinf=info.max, neginf=-info.max)


def clip_weights(alpha: Tensor, alpha_min: float, alpha_max: float) -> tuple[Tensor, float]:
    """Clip α to [α_min, α_max] and report how often the clip binds (**Choice**, METHOD.md §2.4).

    Returns the clipped α and the fraction of elements whose value the clip changed (0.0 for an empty tensor).
    Non-finite α are set to the neutral 1.0 first, so a NaN can never reach the advantages.
    """
    if math.isnan(alpha_min) or math.isnan(alpha_max):
        raise ValueError(f"alpha_min and alpha_max must be numbers, got {alpha_min} and {alpha_max}")
    if alpha_min <= 0:
        raise ValueError(f"alpha_min must be > 0 (α multiplies advantages and must keep their sign), got {alpha_min}")
    if alpha_min > alpha_max:
        raise ValueError(f"alpha_min must be <= alpha_max, got alpha_min={alpha_min} > alpha_max={alpha_max}")
    dtype = _float_dtype(alpha)
    alpha = alpha.to(dtype)
    alpha = torch.where(torch.isfinite(alpha), alpha, torch.ones_like(alpha))
    binds = (alpha < alpha_min) | (alpha > alpha_max)
    fraction = float(binds.float().mean().item()) if alpha.numel() else 0.0
    return alpha.clamp(alpha_min, alpha_max), fraction


# ---------------------------------------------------------------------------------------------------------------
# Configuration and running means
# ---------------------------------------------------------------------------------------------------------------


class CategoryRunningMean:
    """Exponential moving mean of a scalar per category: new = m·old + (1 − m)·value; the first value initialises.

    Used for the category references δ̄ and ḡ_ref. Its state is a plain JSON-able dict so a resumed run continues
    from the same references as the interrupted one.
    """

    def __init__(self, momentum: float = 0.9) -> None:
        if not _is_number(momentum) or not 0.0 <= momentum <= 1.0:
            raise ValueError(f"running mean momentum must be in [0, 1], got {momentum!r}")
        self.momentum = float(momentum)
        self._means: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def get(self, category: str, default: float | None = None) -> float | None:
        """The current mean of ``category``, or ``default`` if it has never been updated."""
        return self._means.get(category, default)

    def update(self, category: str, value: float | Tensor) -> float:
        """Fold ``value`` into the mean of ``category`` and return the new mean.

        A non-finite value raises ``ValueError``: it would poison the mean for the rest of the run.
        """
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"running mean of category {category!r}: value must be finite, got {value}")
        old = self._means.get(category)
        new = value if old is None else self.momentum * old + (1.0 - self.momentum) * value
        self._means[category] = new
        self._counts[category] = self._counts.get(category, 0) + 1
        return new

    def __contains__(self, category: object) -> bool:
        return category in self._means

    def __len__(self) -> int:
        return len(self._means)

    def state_dict(self) -> dict[str, Any]:
        """``{"momentum": m, "means": {category: mean}, "counts": {category: updates}}``, JSON-able."""
        return {"momentum": self.momentum, "means": dict(self._means), "counts": dict(self._counts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the means (and update counts) from :meth:`state_dict`.

        The momentum stays the one this object was built with: the configuration, not the checkpoint, decides it.
        """
        means = state.get("means")
        if not isinstance(means, dict):
            raise ValueError("running mean state must have a 'means' dict")
        restored = {str(k): float(v) for k, v in means.items()}
        bad = [k for k, v in restored.items() if not math.isfinite(v)]
        if bad:
            raise ValueError(f"running mean state has non-finite means for categories {bad}")
        counts = state.get("counts") or {}
        self._means = restored
        self._counts = {k: int(counts.get(k, 1)) for k in restored}


# ---------------------------------------------------------------------------------------------------------------
# Putting it together for a batch of groups
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class GroupScaling:
    """Result of :func:`compute_group_scaling` for B groups of G completions."""

    alpha: Tensor  # [B, G] final, clipped α
    alpha_data: Tensor  # [B, G] α^D (ones when not used)
    alpha_model: Tensor  # [B] α^M (ones when not used)
    delta: Tensor  # [B, G] δ as given
    gaps: Tensor  # [B, G] g
    outlier_mask: Tensor  # [B, G] bool, m
    fraction_clipped: float
    num_nonfinite_rewards: int
    fraction_masked: float = 0.0  # finite gaps dropped by m (0 when α^M is not used)


def compute_group_scaling(
    delta: Tensor,
    rewards: Tensor,
    demo_rewards: Tensor,
    categories: Sequence[str],
    config: ScalingConfig,
    delta_running: CategoryRunningMean | None = None,
    gap_running: CategoryRunningMean | None = None,
) -> GroupScaling:
    """The GRPO-S factor α for B gathered groups of G completions (one row per prompt).

    Args:
        delta: ``[B, G]`` hardness δ = 1 − W of each completion.
        rewards: ``[B, G]`` rewards R_j(q, o_i); NaN/inf entries are allowed (see below).
        demo_rewards: ``[B]`` R_j(q, õ) of each prompt's demonstration.
        categories: the B prompts' categories j, used by the category running means.
        config: the switches; see :class:`ScalingConfig`.
        delta_running: running mean of δ per category; required when ``scaling_data_reference`` is
            ``"category_running_mean"`` and α^D is used.
        gap_running: running mean of the group mean gap ḡ per category; required when ``scaling_model_reference`` is
            ``"category_running_mean"`` and α^M is used.

    Groups are processed in order and each running mean is read *before* it is updated with the current group,
    so the result depends only on the contents and order of the batch. Computed on the gathered batch (like the
    advantages), α is then the same with 1 or N processes. A running mean is touched only when its factor is used.

    Non-finite rewards are counted in ``num_nonfinite_rewards``, left out of the gap statistics by the mask, and
    get α = 1 before clipping (TRL gives them zero advantage anyway). A group with no finite gap gets α^M = 1.
    """
    if delta.dim() != 2 or rewards.shape != delta.shape:
        raise ValueError(f"delta and rewards must both be [B, G], got {tuple(delta.shape)} and {tuple(rewards.shape)}")
    num_groups = delta.shape[0]
    if demo_rewards.shape != (num_groups,):
        raise ValueError(f"demo_rewards must be [B] = [{num_groups}], got {tuple(demo_rewards.shape)}")
    if len(categories) != num_groups:
        raise ValueError(f"need one category per group: {num_groups} groups, {len(categories)} categories")
    use_data = config.scaling_mode in ("data", "both")
    use_model = config.scaling_mode in ("model", "both")
    running_delta = use_data and config.scaling_data_reference == "category_running_mean"
    running_gap = use_model and config.scaling_model_reference == "category_running_mean"
    if running_delta and delta_running is None:
        raise ValueError("scaling_data_reference='category_running_mean' needs a delta_running CategoryRunningMean")
    if running_gap and gap_running is None:
        raise ValueError("scaling_model_reference='category_running_mean' needs a gap_running CategoryRunningMean")

    dtype = _float_dtype(delta, rewards, demo_rewards)
    device = delta.device
    delta = delta.to(dtype)
    rewards = rewards.to(dtype)
    ones_bg = torch.ones_like(delta)
    ones_b = torch.ones(num_groups, dtype=dtype, device=device)
    finite_rewards = torch.isfinite(rewards)
    num_nonfinite = int((~finite_rewards).sum().item())

    gaps = reward_gaps(rewards, demo_rewards.to(dtype))
    mask = outlier_mask(gaps, config.scaling_outlier_tau, relative=config.scaling_outlier_tau_relative)
    sharpness = config.scaling_sharpness

    alpha_data = ones_bg
    if use_data:
        reference: Tensor | None = None
        if running_delta:
            group_delta, has_delta = _finite_mean(delta)
            refs = []
            for b, category in enumerate(categories):
                mean_b = float(group_delta[b])
                refs.append(delta_running.get(category, mean_b))
                if bool(has_delta[b]):
                    delta_running.update(category, mean_b)
            reference = torch.tensor(refs, dtype=dtype, device=device).unsqueeze(-1)
        alpha_data = data_hardness_weight(delta, reference, sharpness, config.scaling_centered)

    alpha_model = ones_b
    if use_model:
        gap_p = masked_mean_gap(gaps, mask)
        group_gap, has_gap = _finite_mean(gaps)
        if running_gap:
            refs = []
            for b, category in enumerate(categories):
                mean_b = float(group_gap[b])
                refs.append(gap_running.get(category, mean_b))
                if bool(has_gap[b]):
                    gap_running.update(category, mean_b)
            gap_reference = torch.tensor(refs, dtype=dtype, device=device)
        else:
            gap_reference = group_gap
        if config.scaling_standardize_gaps:
            scale = gap_scale(gaps)
            gap_p, gap_reference = gap_p / scale, gap_reference / scale
        alpha_model = model_responsiveness_weight(gap_p, gap_reference, sharpness, config.scaling_centered)
        # Without a single finite gap the group says nothing about responsiveness.
        alpha_model = torch.where(has_gap, alpha_model, ones_b)

    fraction_masked = mask_fraction(mask, gaps) if use_model else 0.0
    if config.scaling_mode == "none":
        return GroupScaling(
            alpha=torch.ones_like(delta),
            alpha_data=alpha_data,
            alpha_model=alpha_model,
            delta=delta,
            gaps=gaps,
            outlier_mask=mask,
            fraction_clipped=0.0,
            num_nonfinite_rewards=num_nonfinite,
            fraction_masked=fraction_masked,
        )
    if config.scaling_mode == "both":
        alpha = combine_weights(alpha_data, alpha_model, config.scaling_combine, config.scaling_sum_data_weight)
    elif config.scaling_mode == "data":
        alpha = alpha_data
    else:
        alpha = alpha_model.unsqueeze(-1).expand_as(delta)
    alpha = torch.where(finite_rewards, alpha, ones_bg)
    alpha, fraction = clip_weights(alpha, config.alpha_min, config.alpha_max)
    return GroupScaling(
        alpha=alpha,
        alpha_data=alpha_data,
        alpha_model=alpha_model,
        delta=delta,
        gaps=gaps,
        outlier_mask=mask,
        fraction_clipped=fraction,
        num_nonfinite_rewards=num_nonfinite,
        fraction_masked=fraction_masked,
    )


# ---------------------------------------------------------------------------------------------------------------
# DPO-S: the same α for offline preference pairs
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class PairScaling:
    """Result of :func:`dpo_pair_weights` for N preference pairs."""

    alpha: Tensor  # [N] final, clipped α of each pair
    alpha_data: Tensor  # [N] α^D of the rejected response (ones when not used)
    alpha_model: Tensor  # [N] α^M of the pair's prompt (ones when not used)
    fraction_clipped: float
    fraction_masked: float


def _category_means(values: Tensor, categories: Sequence[str]) -> Tensor:
    """Each entry replaced by the mean of the finite entries of its category (NaN where the category has none)."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for value, category in zip(values.tolist(), categories, strict=True):
        if math.isfinite(value):
            sums[category] = sums.get(category, 0.0) + value
            counts[category] = counts.get(category, 0) + 1
    means = [sums[c] / counts[c] if counts.get(c) else math.nan for c in categories]
    return torch.tensor(means, dtype=values.dtype, device=values.device)


def dpo_pair_weights(
    delta: Tensor,
    gaps: Tensor,
    prompt_keys: Sequence[str],
    categories: Sequence[str],
    config: ScalingConfig,
) -> PairScaling:
    """The GRPO-S factor α for N offline DPO pairs (demonstration chosen, a policy sample rejected): DPO-S.

    Args:
        delta: ``[N]`` hardness δ = 1 − W of each pair's *rejected* response against its demonstration.
        gaps: ``[N]`` reward gaps g = R_j(q, rejected) − R_j(q, õ) (NaN where unscorable; zeros if α^M is unused).
        prompt_keys: the prompt of each pair; the pairs of one prompt form its group (for m_i and ḡ_P).
        categories: the category j of each pair.
        config: the scaling settings; ``scaling_mode``, ``scaling_combine``, ``scaling_sum_data_weight``,
            ``scaling_outlier_tau(_relative)``, ``scaling_sharpness``, ``scaling_standardize_gaps`` and the α clip
            apply as in GRPO-S.

    The pairs are fixed before training, so the references are exact category means over all pairs rather than
    running means: δ̄ is the mean δ of the pair's category (α^D = σ(k·δ_i)/σ(k·δ̄)), and ḡ_ref is the mean over the
    category's prompts of their group-mean gap ḡ (α^M = σ(k·ḡ_P)/σ(k·ḡ_ref), ḡ_P the outlier-masked mean gap of the
    prompt). (The group reference of GRPO-S would make α^D ≡ 1 with one rejected sample per prompt.) A prompt
    without a finite gap gets α^M = 1.
    """
    if delta.dim() != 1 or gaps.shape != delta.shape:
        raise ValueError(f"delta and gaps must both be [N], got {tuple(delta.shape)} and {tuple(gaps.shape)}")
    count = delta.shape[0]
    if len(prompt_keys) != count or len(categories) != count:
        raise ValueError(f"need one prompt and one category per pair: {count} pairs, {len(prompt_keys)} prompts, "
                         f"{len(categories)} categories")
    dtype = _float_dtype(delta, gaps)
    delta, gaps = delta.to(dtype), gaps.to(dtype)
    ones = torch.ones(count, dtype=dtype, device=delta.device)
    mode = config.scaling_mode
    use_data, use_model = mode in ("data", "both"), mode in ("model", "both")
    k = config.scaling_sharpness

    alpha_data = ones
    if use_data:
        # A pair whose category has no finite δ gets α^D = 1 (data_hardness_weight fills a non-finite reference).
        alpha_data = data_hardness_weight(delta.unsqueeze(-1), _category_means(delta, categories).unsqueeze(-1),
                                          k, config.scaling_centered).squeeze(-1)

    alpha_model = ones
    fraction_masked = 0.0
    if use_model:
        groups: dict[str, list[int]] = {}
        for i, key in enumerate(prompt_keys):
            groups.setdefault(key, []).append(i)
        gap_p = torch.full((count,), math.nan, dtype=dtype, device=delta.device)
        group_mean = torch.full((count,), math.nan, dtype=dtype, device=delta.device)
        masked = kept = 0
        for members in groups.values():
            index = torch.tensor(members, device=delta.device)
            group = gaps[index]
            mask = outlier_mask(group, config.scaling_outlier_tau, relative=config.scaling_outlier_tau_relative)
            finite = torch.isfinite(group)
            masked += int((finite & ~mask).sum().item())
            kept += int(finite.sum().item())
            if finite.any():
                gap_p[index] = masked_mean_gap(group, mask)
                group_mean[index] = group[finite].mean()
        fraction_masked = masked / kept if kept else 0.0
        # One entry per prompt in the category mean of ḡ, however many pairs the prompt has.
        first = {members[0] for members in groups.values()}
        per_prompt = torch.where(torch.tensor([i in first for i in range(count)], device=delta.device), group_mean,
                                 torch.full_like(group_mean, math.nan))
        reference = _category_means(per_prompt, categories)
        if config.scaling_standardize_gaps:
            scale = gap_scale(gaps)
            gap_p, reference = gap_p / scale, reference / scale
        alpha_model = model_responsiveness_weight(gap_p, reference, k, config.scaling_centered)
        alpha_model = torch.where(torch.isfinite(gap_p), alpha_model, ones)

    if mode == "none":
        return PairScaling(alpha=ones, alpha_data=alpha_data, alpha_model=alpha_model, fraction_clipped=0.0,
                           fraction_masked=fraction_masked)
    if mode == "both":
        alpha = combine_weights(alpha_data, alpha_model, config.scaling_combine, config.scaling_sum_data_weight)
    else:
        alpha = alpha_data if mode == "data" else alpha_model
    alpha, fraction = clip_weights(alpha, config.alpha_min, config.alpha_max)
    return PairScaling(alpha=alpha, alpha_data=alpha_data, alpha_model=alpha_model, fraction_clipped=fraction,
                       fraction_masked=fraction_masked)
