"""GRPO-S dynamic reward scaling (METHOD.md §2.4): the formulas, in the spec's order, as small pure functions.

GRPO-S multiplies each group-normalised advantage by a per-completion difficulty factor

    A_i = α_i · (r_i − mean(r_1..G)) / std(r_1..G),      α_i = clip(α^D_i ⊗ α^M, α_min, α_max)

where ⊗ is a product (default) or a weighted sum. Formula map (symbol → function), in the order of §2.4:

    α^D, data-level hardness
      S^1..S^K, S̃^1..S̃^L: sentences of o_i, õ                       drirl.responses.split_sentences of hardness_text
      s_{k,l} = cos(Φ(S^k), Φ(S̃^l)); W_i = (1/K) Σ_k max_l s_{k,l}   greedy_match_similarity
      δ_i = 1 − W_i                                                   hardness_delta
      α^D_i = σ(δ_i) / σ(δ̄)                                          data_hardness_weight
    α^M, model-level responsiveness
      g_i = R_j(q, o_i) − R_j(q, õ)                                   reward_gaps
      m_i = 1[(g_i − ḡ)² ≤ τ]                                         outlier_mask
      ḡ_P = Σ m_i g_i / Σ m_i                                         masked_mean_gap
      s: std of the batch's gaps (Choice: ḡ_P/s, ḡ_ref/s)             gap_scale
      α^M = σ(ḡ_P) / σ(ḡ_ref)                                         model_responsiveness_weight
    combination and clipping
      α_i = α^D_i · α^M  or  w·α^D_i + (1 − w)·α^M                    combine_weights
      α_i ← clip(α_i, α_min, α_max); how often it binds               clip_weights

Tensors follow one convention: the last dimension is the group of G completions of one prompt (shape ``[..., G]``);
per-group quantities drop it (``[...]``). Nothing here loads a model or knows about the trainer: embeddings and
rewards come in as tensors. Applying the formulas to a batch of gathered groups or of DPO pairs, with the category
running means, is :mod:`drirl.align.scaling_batch`; the settings are :mod:`drirl.align.settings`.

All functions return finite values for finite inputs and for the degenerate cases a trainer meets in practice: an
empty completion (K = 0), a single sentence, all-equal rewards, NaN rewards, zero-variance groups and G = 1. The
numeric guards are sized to the inputs that occur (tests/test_scaling_ranges.py): cosines in [−1, 1], δ in [0, 2],
rewards of Bradley-Terry heads within about ±20 (gaps within ±40), gaps that differ by 1e-4, G = 2..16, and
float32 or bfloat16 tensors; each guard says why it is there.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor
from torch.nn import functional as F

from drirl.align.settings import COMBINE_MODES, DELTA_ON
from drirl.responses import answer_part

__all__ = [
    "clip_weights",
    "combine_weights",
    "data_hardness_weight",
    "gap_scale",
    "greedy_match_similarity",
    "hardness_delta",
    "hardness_text",
    "masked_mean_gap",
    "model_responsiveness_weight",
    "outlier_mask",
    "reward_gaps",
]


# ---------------------------------------------------------------------------------------------------------------
# Data-level hardness α^D: W_i, δ_i, α^D_i
# ---------------------------------------------------------------------------------------------------------------

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


# Below this norm an embedding is treated as the zero vector (cosine 0), so an empty or degenerate sentence
# embedding can never divide by zero. Sized to the rows it meets: _unit_rows divides each row by its largest |entry|
# first, so a nonzero row has norm ≥ 1 and only an all-zero row ever reaches the clamp (1e-8 is a normal number in
# float32 and bfloat16 alike).
_COSINE_EPS = 1e-8


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
    # Rounding can push a cosine of unit vectors a few ulps past ±1; the clamp moves nothing else.
    return cosine.amax(dim=1).mean().clamp(-1.0, 1.0)


def hardness_delta(similarity: Tensor) -> Tensor:
    """δ_i = 1 − W_i: distance of the response from the demonstration (0 = same content, up to 2 = opposite)."""
    return 1.0 - similarity


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

# ---------------------------------------------------------------------------------------------------------------
# Model-level responsiveness α^M: g_i, m_i, ḡ_P, α^M
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


def masked_mean_gap(gaps: Tensor, mask: Tensor, empty: str = "zero") -> Tensor:
    """ḡ_P = Σ_i m_i g_i / Σ_i m_i over the group (last dimension); shape ``gaps.shape[:-1]``.

    Gaps outside the mask may be NaN: they are never multiplied, only skipped. A group with no kept gap
    (Σ m_i = 0, left undefined by METHOD.md) gets, by ``empty`` (``scaling_empty_mask``): ``"zero"`` ḡ_P = 0, or
    ``"group_mean"`` the mean of its finite gaps ḡ (0 when it has none); never NaN. (The third rule, ``"neutral"``,
    sets α^M = 1 for such a group and is applied where α^M is formed.)
    """
    # Why "zero" is not the default: 0 is neutral only against ḡ_ref = 0. With the absolute τ = 4 (|g − ḡ| ≤ 2
    # reward units) a bimodal group of Bradley-Terry rewards, e.g. gaps (−10, −10, +10, +10) of two refusals and two
    # answers, keeps nothing, and against a category running mean of −10, α^M = σ(0)/σ(−10) ≈ 1.1e4, clipped to
    # α_max, whatever the group's gaps were.
    if empty not in ("zero", "group_mean", "neutral"):
        raise ValueError(f"empty must be 'zero', 'group_mean' or 'neutral', got {empty!r}")
    mask = mask.bool() & torch.isfinite(gaps)
    masked = torch.where(mask, gaps, torch.full_like(gaps, float("nan")))
    mean, kept = _finite_mean(masked)
    if empty == "group_mean":
        group_mean, _ = _finite_mean(gaps)
        mean = torch.where(kept, mean, group_mean)
    return mean


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
    # Equal gaps have s = 0 exactly, but centring them on their rounded mean leaves one ulp of noise (s ≈ 1e-7 for
    # gaps of 1.7 in float32) that would turn ḡ_P / s into a huge z-score; test equality itself instead of an eps,
    # so a real spread of 1e-4 still counts.
    if bool(finite.amax() == finite.amin()):
        return torch.ones((), dtype=dtype, device=gaps.device)
    # Centre before squaring and divide by the largest |deviation| so huge but finite gaps cannot overflow.
    deviation = finite - finite.mean()
    top = deviation.abs().amax()
    if not torch.isfinite(top) or top == 0:
        return torch.ones((), dtype=dtype, device=gaps.device)
    scale = top * torch.sqrt(((deviation / top) ** 2).mean())
    return scale if bool(torch.isfinite(scale)) and scale > 0 else torch.ones((), dtype=dtype, device=gaps.device)


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
# Numerics shared by the formulas: dtype, unit rows, finite means, the sigmoid ratio, k
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


def _finite_mean(x: Tensor, dim: int = -1) -> tuple[Tensor, Tensor]:
    """Mean of the finite entries of ``x`` over ``dim`` and whether there was any finite entry.

    Where there is none the mean is 0. The values are scaled by their largest |entry| before summing so that
    the sum of G huge but finite values cannot overflow to inf.
    The clamp (the dtype's smallest normal) matters only for a group of zeros, whose mean is then exactly 0; any
    realistic entry, a gap of 1e-4 included, is far above it and is divided by exactly its own scale.
    """
    finite = torch.isfinite(x)
    values = torch.where(finite, x, torch.zeros_like(x))
    count = finite.sum(dim=dim)
    scale = values.abs().amax(dim=dim, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    mean = (values / scale).sum(dim=dim) / count.clamp_min(1) * scale.squeeze(dim)
    return mean, count > 0


def _sigmoid_ratio(x: Tensor, reference: Tensor) -> Tensor:
    """σ(x) / σ(reference), computed as exp(log σ(x) − log σ(reference)) so that σ underflowing to 0 gives no 0/0."""
    return _saturate(torch.exp(_log_sigmoid(x) - _log_sigmoid(reference)))


def _log_sigmoid(x: Tensor) -> Tensor:
    # log σ(x) = −softplus(−x), exact in both tails; F.logsigmoid is the same function but two orders of
    # magnitude slower on small CPU tensors.
    return -F.softplus(-x)


def _saturate(x: Tensor) -> Tensor:
    # A sigmoid ratio of extreme logits is a genuine overflow/underflow (e.g. σ(0)/σ(−1000) = e^1000); keep it
    # finite and strictly positive so it still points the right way and clipping can handle it. Sized so realistic
    # values never reach it: gaps within ±40 give ratios within e^±40, far inside float32's and bfloat16's range
    # (about e^±88); only k·z beyond about 88 saturates, and clip_weights binds long before that.
    info = torch.finfo(x.dtype)
    return torch.nan_to_num(x, posinf=info.max).clamp(info.tiny, info.max)


def _sharpness(k: float) -> float:
    if not isinstance(k, (int, float)) or isinstance(k, bool) or not math.isfinite(k) or k <= 0:
        raise ValueError(f"sharpness k must be a finite number > 0, got {k!r}")
    return float(k)
