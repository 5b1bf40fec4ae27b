"""The GRPO-S formulas (:mod:`drirl.align.scaling`) applied to a batch: gathered GRPO groups, DPO pairs, and the
per-category running means that serve as references.

* :func:`compute_group_scaling` turns B gathered groups of G completions into the α that multiplies the advantages
  (:class:`GroupScaling`, with the clip and mask rates that are logged);
* :func:`dpo_pair_weights` gives the same α for N offline DPO pairs (DPO-S, :class:`PairScaling`);
* :class:`CategoryRunningMean` keeps the running references δ̄ and ḡ_ref of each category;
* :func:`mask_fraction` is the logged rate of the outlier mask m_i.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from drirl.align.scaling import (
    _finite_mean,
    _float_dtype,
    clip_weights,
    combine_weights,
    data_hardness_weight,
    gap_scale,
    masked_mean_gap,
    model_responsiveness_weight,
    outlier_mask,
    reward_gaps,
)
from drirl.align.settings import ScalingConfig, _is_number

__all__ = [
    "CategoryRunningMean",
    "GroupScaling",
    "PairScaling",
    "compute_group_scaling",
    "dpo_pair_weights",
    "mask_fraction",
]


# ---------------------------------------------------------------------------------------------------------------
# Running means: the category references δ̄ and ḡ_ref
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
# A batch of gathered groups (GRPO-S)
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
        gap_p = masked_mean_gap(gaps, mask, config.scaling_empty_mask)
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
        # Without a single finite gap the group says nothing about responsiveness; with scaling_empty_mask: neutral
        # neither does one whose outlier mask keeps no gap.
        alpha_model = torch.where(has_gap, alpha_model, ones_b)
        if config.scaling_empty_mask == "neutral":
            alpha_model = torch.where((mask.bool() & torch.isfinite(gaps)).any(-1), alpha_model, ones_b)

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


def mask_fraction(mask: Tensor, gaps: Tensor) -> float:
    """The fraction of finite gaps that the outlier mask drops (0.0 when there is none): how often m_i fires."""
    finite = torch.isfinite(gaps)
    total = int(finite.sum().item())
    if not total:
        return 0.0
    return float((finite & ~mask.bool()).sum().item()) / total

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
                # scaling_empty_mask: neutral leaves ḡ_P undefined (α^M = 1) for a prompt whose mask keeps nothing.
                if config.scaling_empty_mask != "neutral" or bool((mask.bool() & finite).any()):
                    gap_p[index] = masked_mean_gap(group, mask, config.scaling_empty_mask)
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
