"""Property tests of GRPO-S dynamic reward scaling: finite, bounded, well-shaped α for any input (METHOD.md §2.4)."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from drirl.align.scaling import (
    clip_weights,
    data_hardness_weight,
    greedy_match_similarity,
    masked_mean_gap,
    outlier_mask,
)
from drirl.align.scaling_batch import CategoryRunningMean, compute_group_scaling
from drirl.align.settings import COMBINE_MODES, DATA_REFERENCES, MODEL_REFERENCES, SCALING_MODES, ScalingConfig

MAIN = settings(max_examples=1000, deadline=None)
SMALL = settings(max_examples=300, deadline=None)

# Any finite float32 (up to ±3.4e38) so that overflow inside means and variances is exercised too.
finite32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
any32 = st.floats(allow_nan=True, allow_infinity=True, width=32)
CATEGORIES = ("crime", "privacy", "insult")


@st.composite
def configs(draw) -> ScalingConfig:
    alpha_min = draw(st.sampled_from([0.1, 0.5, 1.0]))
    return ScalingConfig(
        scaling_mode=draw(st.sampled_from(SCALING_MODES)),
        scaling_combine=draw(st.sampled_from(COMBINE_MODES)),
        scaling_sum_data_weight=draw(st.sampled_from([0.0, 0.3, 0.5, 1.0])),
        scaling_data_reference=draw(st.sampled_from(DATA_REFERENCES)),
        scaling_model_reference=draw(st.sampled_from(MODEL_REFERENCES)),
        scaling_running_mean_momentum=draw(st.sampled_from([0.0, 0.5, 0.9, 1.0])),
        scaling_outlier_tau=draw(st.sampled_from([0.0, 0.5, 1.0, 4.0, math.inf])),
        scaling_outlier_tau_relative=draw(st.booleans()),
        alpha_min=alpha_min,
        alpha_max=alpha_min * draw(st.sampled_from([1.0, 2.0, 4.0, 100.0])),
    )


@st.composite
def batches(draw, rewards_elements=finite32):
    b = draw(st.integers(1, 4))
    g = draw(st.integers(1, 8))
    matrix = st.lists(st.lists(finite32, min_size=g, max_size=g), min_size=b, max_size=b)
    delta = torch.tensor(draw(matrix), dtype=torch.float32)
    rewards = torch.tensor(
        draw(st.lists(st.lists(rewards_elements, min_size=g, max_size=g), min_size=b, max_size=b)),
        dtype=torch.float32,
    )
    demo = torch.tensor(draw(st.lists(finite32, min_size=b, max_size=b)), dtype=torch.float32)
    categories = draw(st.lists(st.sampled_from(CATEGORIES), min_size=b, max_size=b))
    return delta, rewards, demo, categories


@st.composite
def running_means(draw, momentum: float) -> CategoryRunningMean:
    running = CategoryRunningMean(momentum)
    for category, value in draw(st.lists(st.tuples(st.sampled_from(CATEGORIES), finite32), max_size=3)):
        running.update(category, value)
    return running


def check_scaling(result, delta, config) -> None:
    b, g = delta.shape
    assert result.alpha.shape == (b, g)
    assert result.alpha_data.shape == (b, g)
    assert result.alpha_model.shape == (b,)
    assert result.delta.shape == result.gaps.shape == result.outlier_mask.shape == (b, g)
    assert result.outlier_mask.dtype == torch.bool
    assert torch.isfinite(result.alpha).all()
    assert torch.isfinite(result.alpha_data).all() and (result.alpha_data > 0).all()
    assert torch.isfinite(result.alpha_model).all() and (result.alpha_model > 0).all()
    assert 0.0 <= result.fraction_clipped <= 1.0
    if config.scaling_mode == "none":
        assert (result.alpha == 1.0).all()
        assert result.fraction_clipped == 0.0
    else:
        assert (result.alpha >= config.alpha_min).all()
        assert (result.alpha <= config.alpha_max).all()
    if config.scaling_mode in ("none", "model"):
        assert (result.alpha_data == 1.0).all()
    if config.scaling_mode in ("none", "data"):
        assert (result.alpha_model == 1.0).all()


@MAIN
@given(batch=batches(), config=configs(), data=st.data())
def test_alpha_finite_bounded_and_shaped(batch, config, data):
    delta, rewards, demo, categories = batch
    delta_running = data.draw(running_means(config.scaling_running_mean_momentum))
    gap_running = data.draw(running_means(config.scaling_running_mean_momentum))
    result = compute_group_scaling(delta, rewards, demo, categories, config, delta_running, gap_running)
    check_scaling(result, delta, config)
    assert result.num_nonfinite_rewards == 0
    for running in (delta_running, gap_running):
        assert all(math.isfinite(v) for v in running.state_dict()["means"].values())


@MAIN
@given(batch=batches(rewards_elements=any32), config=configs())
def test_alpha_with_nonfinite_rewards(batch, config):
    delta, rewards, demo, categories = batch
    result = compute_group_scaling(
        delta, rewards, demo, categories, config, CategoryRunningMean(), CategoryRunningMean()
    )
    check_scaling(result, delta, config)
    nonfinite = ~torch.isfinite(rewards)
    assert result.num_nonfinite_rewards == int(nonfinite.sum())
    assert not result.outlier_mask[nonfinite].any()
    # Their α was 1 before clipping (and no clipping happens with mode none).
    expected = 1.0 if config.scaling_mode == "none" else min(max(1.0, config.alpha_min), config.alpha_max)
    assert (result.alpha[nonfinite] == torch.tensor(expected, dtype=torch.float32)).all()


@SMALL
@given(batch=batches(), config=configs())
def test_batch_equals_group_by_group(batch, config):
    # One process sees the whole gathered batch, another walks it group by group with the same running means:
    # same α either way.
    delta, rewards, demo, categories = batch
    whole = compute_group_scaling(
        delta, rewards, demo, categories, config, CategoryRunningMean(), CategoryRunningMean()
    )
    delta_running, gap_running = CategoryRunningMean(), CategoryRunningMean()
    for i in range(delta.shape[0]):
        part = compute_group_scaling(
            delta[i : i + 1],
            rewards[i : i + 1],
            demo[i : i + 1],
            categories[i : i + 1],
            config,
            delta_running,
            gap_running,
        )
        torch.testing.assert_close(part.alpha[0], whole.alpha[i])


@MAIN
@given(
    k=st.integers(0, 4),
    l_=st.integers(0, 4),
    d=st.integers(1, 4),
    data=st.data(),
)
def test_greedy_match_similarity_finite_in_range(k, l_, d, data):
    # Zeros are drawn often so that zero rows appear.
    element = st.one_of(st.just(0.0), finite32)
    response = torch.tensor(
        data.draw(st.lists(st.lists(element, min_size=d, max_size=d), min_size=k, max_size=k)), dtype=torch.float32
    ).reshape(k, d)
    demo = torch.tensor(
        data.draw(st.lists(st.lists(element, min_size=d, max_size=d), min_size=l_, max_size=l_)), dtype=torch.float32
    ).reshape(l_, d)
    w = greedy_match_similarity(response, demo)
    assert w.shape == ()
    assert torch.isfinite(w)
    assert -1.0 <= w.item() <= 1.0
    if k == 0 or l_ == 0:
        assert w.item() == 0.0


@MAIN
@given(b=st.integers(1, 4), g=st.integers(1, 8), reference=st.one_of(st.none(), finite32), data=st.data())
def test_data_hardness_weight_positive(b, g, reference, data):
    delta = data.draw(st.lists(st.lists(finite32, min_size=g, max_size=g), min_size=b, max_size=b))
    alpha = data_hardness_weight(torch.tensor(delta, dtype=torch.float32), reference)
    assert alpha.shape == (b, g)
    assert torch.isfinite(alpha).all()
    assert (alpha > 0).all()


@SMALL
@given(
    gaps=st.lists(any32, min_size=1, max_size=8),
    tau=st.floats(min_value=1.0, max_value=100.0),
    relative=st.booleans(),
)
def test_outlier_mask_and_masked_mean(gaps, tau, relative):
    gaps = torch.tensor(gaps, dtype=torch.float32)
    mask = outlier_mask(gaps, tau, relative=relative)
    finite = torch.isfinite(gaps)
    assert not mask[~finite].any()
    if relative and finite.any():
        # The gap nearest the mean is never further than one standard deviation: τ >= 1 keeps at least one.
        assert mask.any()
    mean = masked_mean_gap(gaps, mask)
    assert torch.isfinite(mean)
    if mask.any():
        kept = gaps[mask]
        assert kept.min() <= mean <= kept.max() or torch.isclose(mean, kept.min()) or torch.isclose(mean, kept.max())
    else:
        assert mean.item() == 0.0


@SMALL
@given(alpha=st.lists(any32, max_size=8), low=st.floats(0.01, 2.0), span=st.floats(1.0, 10.0))
def test_clip_weights_bounded(alpha, low, span):
    clipped, fraction = clip_weights(torch.tensor(alpha, dtype=torch.float32), low, low * span)
    assert torch.isfinite(clipped).all()
    assert (clipped >= torch.tensor(low, dtype=torch.float32).item() - 1e-6).all()
    assert 0.0 <= fraction <= 1.0
