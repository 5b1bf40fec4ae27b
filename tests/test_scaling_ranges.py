"""The GRPO-S formulas on the ranges of inputs a run meets (METHOD.md §2.4): rewards of Bradley-Terry heads within
about ±20, cosines in [−1, 1], group sizes G = 2..16, gaps close to 0, float32 and bfloat16 tensors.

Each check could fail: a guard sized wrongly (an eps that swamps a small gap, a saturation that clips a realistic
ratio, a "zero variance" that is really rounding noise) changes the numbers below."""

from __future__ import annotations

import math

import pytest
import torch

from drirl.align.scaling import (
    clip_weights,
    combine_weights,
    data_hardness_weight,
    gap_scale,
    greedy_match_similarity,
    hardness_delta,
    masked_mean_gap,
    model_responsiveness_weight,
    outlier_mask,
    reward_gaps,
)
from drirl.align.scaling_batch import CategoryRunningMean, compute_group_scaling
from drirl.align.settings import ScalingConfig

DTYPES = (torch.float32, torch.bfloat16)
GROUP_SIZES = (2, 3, 4, 8, 16)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ----------------------------------------------------------------------------------------------------- α^D inputs

@pytest.mark.parametrize("dtype", DTYPES)
def test_identical_and_opposite_sentences_give_w_of_plus_and_minus_one(dtype):
    # A few ulps off ±1 at most (normalisation rounds), and never outside [−1, 1]: δ stays in [0, 2].
    ulps = 4 * torch.finfo(dtype).eps
    e = torch.tensor([[0.3, -1.2, 2.0, 0.5]], dtype=dtype)
    same, opposite = greedy_match_similarity(e, e).item(), greedy_match_similarity(e, -e).item()
    assert 1.0 - ulps <= same <= 1.0
    assert -1.0 <= opposite <= -1.0 + ulps
    assert 0.0 <= hardness_delta(greedy_match_similarity(e, e)).item() <= ulps
    assert 2.0 - ulps <= hardness_delta(greedy_match_similarity(e, -e)).item() <= 2.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_alpha_d_at_the_ends_of_delta_range_matches_the_formula(dtype):
    # δ = 0 (the demonstration itself) and δ = 2 (opposite) in one group: σ(δ_i) / σ(mean δ), mean δ = 1.
    alpha = data_hardness_weight(torch.tensor([[0.0, 2.0]], dtype=dtype)).float()
    expected = [sigmoid(0.0) / sigmoid(1.0), sigmoid(2.0) / sigmoid(1.0)]
    torch.testing.assert_close(alpha, torch.tensor([expected]), rtol=1e-2 if dtype == torch.bfloat16 else 1e-6,
                               atol=0.0)


def test_tiny_embeddings_keep_their_direction():
    # Encoders never give rows of norm 1e-20, but a row that small must still be a direction, not the zero vector:
    # the cosine eps applies after the row is scaled by its largest entry.
    e = torch.tensor([[1e-20, 2e-20, -1e-20]])
    assert greedy_match_similarity(e, e * 1e20).item() == pytest.approx(1.0, abs=1e-6)


def test_all_zero_embedding_counts_as_no_match():
    assert greedy_match_similarity(torch.zeros(1, 4), torch.ones(2, 4)).item() == 0.0


@pytest.mark.parametrize("g", GROUP_SIZES)
def test_a_group_of_equal_deltas_gets_alpha_d_one(g):
    alpha = data_hardness_weight(torch.full((3, g), 0.6173))
    assert torch.equal(alpha, torch.ones(3, g))


# ----------------------------------------------------------------------------------------------------- α^M inputs

@pytest.mark.parametrize("g", GROUP_SIZES)
def test_gaps_of_1e_4_are_averaged_exactly(g):
    gaps = torch.arange(1, g + 1, dtype=torch.float64).unsqueeze(0) * 1e-4
    mean = masked_mean_gap(gaps.float(), torch.ones(1, g, dtype=torch.bool))
    assert mean.item() == pytest.approx(gaps.mean().item(), rel=1e-6)


def test_relative_mask_sees_a_spread_of_1e_4():
    # Four gaps 1e-4 apart and one 1e-3 away: the relative mask is scale-free, so the far one is the outlier.
    gaps = torch.tensor([[1e-4, 2e-4, 3e-4, 2e-4, 1.3e-3]])
    assert outlier_mask(gaps, 2.0, relative=True).tolist() == [[True, True, True, True, False]]


def test_gap_scale_sees_a_spread_of_1e_4():
    gaps = torch.tensor([5.0, 5.0001, 5.0002, 5.0001])
    assert gap_scale(gaps).item() == pytest.approx(7.07e-5, rel=0.05)


@pytest.mark.parametrize("value", [0.1, 0.3, 1.7, 13.37, -7.3, 19.9])
@pytest.mark.parametrize("n", [3, 7, 16, 48])
def test_gap_scale_of_equal_gaps_is_one_not_rounding_noise(value, n):
    # The rounded mean of n equal float32 values can be one ulp off; its "std" (about 1e-7) must not be used.
    assert gap_scale(torch.full((n,), value)).item() == 1.0


def test_standardized_equal_gaps_with_a_running_reference_stay_moderate():
    # All gaps 1.7 (e.g. identical completions), the category's running mean gap 1.0: α^M = σ(1.7)/σ(1.0) with s = 1.
    config = ScalingConfig(scaling_mode="model", scaling_standardize_gaps=True, alpha_min=0.01, alpha_max=100.0)
    running = CategoryRunningMean()
    running.update("c", 1.0)
    rewards = torch.full((1, 7), 2.7)
    out = compute_group_scaling(torch.zeros(1, 7), rewards, torch.tensor([1.0]), ["c"], config, gap_running=running)
    assert out.alpha_model.item() == pytest.approx(sigmoid(1.7) / sigmoid(1.0), rel=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_alpha_m_of_extreme_realistic_gaps_is_finite_and_not_saturated(dtype):
    # Gaps of ±40 (rewards at ±20): σ(40)/σ(−40) ≈ e^40 ≈ 2.35e17 is representable; the saturation must not bind.
    alpha = model_responsiveness_weight(torch.tensor([40.0, -40.0], dtype=dtype),
                                        torch.tensor([-40.0, 40.0], dtype=dtype)).float()
    assert torch.isfinite(alpha).all()
    assert alpha[0].item() == pytest.approx(math.exp(40.0), rel=1e-2)
    assert alpha[1].item() == pytest.approx(math.exp(-40.0), rel=1e-2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("g", GROUP_SIZES)
def test_all_equal_rewards_give_alpha_one(dtype, g):
    config = ScalingConfig(scaling_mode="both", scaling_model_reference="group_mean")
    rewards = torch.full((2, g), -13.25, dtype=dtype)
    out = compute_group_scaling(torch.full((2, g), 0.5, dtype=dtype), rewards, torch.tensor([3.0, -3.0], dtype=dtype),
                                ["a", "b"], config)
    assert torch.equal(out.alpha.float(), torch.ones(2, g))
    assert out.fraction_masked == 0.0


# ------------------------------------------------------------------------------------------------ α end to end

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("g", GROUP_SIZES)
@pytest.mark.parametrize("standardize", [False, True])
def test_rewards_spanning_plus_minus_20_give_finite_alpha_within_the_clip(dtype, g, standardize):
    generator = torch.Generator().manual_seed(g)
    b = 6
    rewards = (torch.rand(b, g, generator=generator) * 40.0 - 20.0).to(dtype)
    rewards[0, 0], rewards[0, -1] = -20.0, 20.0
    demo = (torch.rand(b, generator=generator) * 40.0 - 20.0).to(dtype)
    delta = (torch.rand(b, g, generator=generator) * 2.0).to(dtype)
    config = ScalingConfig(scaling_mode="both", scaling_standardize_gaps=standardize)
    running_delta, running_gap = CategoryRunningMean(), CategoryRunningMean()
    running_gap.update("crime", -15.0)
    out = compute_group_scaling(delta, rewards, demo, ["crime", "privacy"] * 3, config, running_delta, running_gap)
    assert out.alpha.dtype == dtype
    alpha = out.alpha.float()
    assert torch.isfinite(alpha).all()
    assert alpha.min().item() >= config.alpha_min and alpha.max().item() <= config.alpha_max
    assert torch.isfinite(out.alpha_data.float()).all() and (out.alpha_data.float() > 0).all()
    assert torch.isfinite(out.alpha_model.float()).all() and (out.alpha_model.float() > 0).all()


def test_bfloat16_alpha_tracks_float32():
    generator = torch.Generator().manual_seed(0)
    rewards = torch.rand(4, 8, generator=generator) * 40.0 - 20.0
    demo = torch.rand(4, generator=generator) * 40.0 - 20.0
    delta = torch.rand(4, 8, generator=generator) * 0.5 + 0.4
    config = ScalingConfig(scaling_mode="both", scaling_model_reference="group_mean", scaling_outlier_tau=float("inf"))
    full = compute_group_scaling(delta, rewards, demo, ["c"] * 4, config).alpha
    half = compute_group_scaling(delta.bfloat16(), rewards.bfloat16(), demo.bfloat16(), ["c"] * 4, config).alpha
    # bfloat16 keeps 8 bits: α^D and α^M each lose under 1 % (rounding of δ, r and log σ), so the product within 3 %.
    torch.testing.assert_close(half.float(), full, rtol=3e-2, atol=0.0)


def test_gaps_near_zero_decide_alpha_m_with_standardized_gaps():
    # Gaps of order 1e-4 still order the prompts once standardised: the prompt above the batch mean gets α^M > 1.
    rewards = torch.tensor([[2e-4, 3e-4], [-2e-4, -1e-4]])
    config = ScalingConfig(scaling_mode="model", scaling_standardize_gaps=True, scaling_model_reference="group_mean",
                           scaling_outlier_tau=float("inf"))
    running = CategoryRunningMean()
    running.update("c", 0.0)
    config_running = ScalingConfig(scaling_mode="model", scaling_standardize_gaps=True,
                                   scaling_outlier_tau=float("inf"))
    out = compute_group_scaling(torch.zeros(2, 2), rewards, torch.zeros(2), ["c", "c"], config_running,
                                gap_running=running)
    assert out.alpha_model[0].item() > 1.1 and out.alpha_model[1].item() < 0.9
    # Against the group mean each prompt is its own reference: α^M = 1 whatever the scale.
    same = compute_group_scaling(torch.zeros(2, 2), rewards, torch.zeros(2), ["c", "c"], config)
    torch.testing.assert_close(same.alpha_model, torch.ones(2))


@pytest.mark.parametrize("dtype", DTYPES)
def test_product_and_clip_of_realistic_factors(dtype):
    alpha_d = torch.tensor([[0.8, 1.2]], dtype=dtype)
    combined = combine_weights(alpha_d, torch.tensor([3.0], dtype=dtype))
    clipped, fraction = clip_weights(combined, 0.5, 2.0)
    assert clipped.float().tolist() == [[2.0, 2.0]] and fraction == 1.0
    clipped, fraction = clip_weights(combine_weights(alpha_d, torch.tensor([1.0], dtype=dtype)), 0.5, 2.0)
    assert fraction == 0.0 and clipped.float()[0].tolist() == pytest.approx([0.8, 1.2], rel=1e-2)


def test_reward_gaps_of_bt_rewards_are_exact_differences():
    rewards = torch.tensor([[-20.0, -0.5, 0.5, 20.0]])
    torch.testing.assert_close(reward_gaps(rewards, torch.tensor([19.5])), torch.tensor([[-39.5, -20.0, -19.0, 0.5]]))


def _bimodal(rule: str):
    """Two refusals and two answers: gaps ±10 around ḡ = 0 against a category running reference of −10, so the
    absolute τ = 4 keeps no gap."""
    config = ScalingConfig(scaling_mode="model", scaling_empty_mask=rule)  # absolute τ = 4, running reference
    running = CategoryRunningMean()
    running.update("c", -10.0)
    rewards = torch.tensor([[-12.0, -12.0, 8.0, 8.0]])
    return compute_group_scaling(torch.zeros(1, 4), rewards, torch.tensor([-2.0]), ["c"], config, gap_running=running)


def test_bimodal_group_keeps_no_gap_and_each_rule_decides_its_alpha_model():
    assert _bimodal("neutral").alpha_model.item() == 1.0
    # ḡ_P = 0 under both other rules here (ḡ = 0): α^M = σ(0)/σ(−10) ≈ 1.1e4 before the clip.
    expected = model_responsiveness_weight(torch.tensor([0.0]), torch.tensor([-10.0])).item()
    assert expected > 1e4
    assert _bimodal("zero").alpha_model.item() == pytest.approx(expected)
    assert _bimodal("group_mean").alpha_model.item() == pytest.approx(expected)


def test_group_mean_rule_follows_the_groups_gaps_when_the_mask_keeps_nothing():
    gaps = torch.tensor([[-14.0, -14.0, 6.0, 6.0], [-4.0, -4.0, 16.0, 16.0]])  # ḡ = −4 and +6, nothing within 2
    mask = outlier_mask(gaps, 4.0)
    assert not mask.any()
    torch.testing.assert_close(masked_mean_gap(gaps, mask, "group_mean"), torch.tensor([-4.0, 6.0]))
    torch.testing.assert_close(masked_mean_gap(gaps, mask, "zero"), torch.tensor([0.0, 0.0]))
    kept = torch.tensor([[True, False, False, False], [False, False, True, True]])
    torch.testing.assert_close(masked_mean_gap(gaps, kept, "group_mean"), torch.tensor([-14.0, 16.0]))
    with pytest.raises(ValueError, match="empty must be"):
        masked_mean_gap(gaps, mask, "drop")
