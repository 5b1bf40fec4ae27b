"""Unit tests of GRPO-S dynamic reward scaling (METHOD.md §2.4) against numbers worked out by hand.

Reference values used below (logistic sigmoid σ(x) = 1 / (1 + e^−x)):
    σ(0)    = 0.5
    σ(0.25) = 0.5621765
    σ(0.5)  = 0.6224593
    σ(1)    = 0.7310586
    σ(−1)   = 0.2689414
"""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from drirl.align.scaling import (
    clip_weights,
    combine_weights,
    data_hardness_weight,
    greedy_match_similarity,
    hardness_delta,
    masked_mean_gap,
    model_responsiveness_weight,
    outlier_mask,
    reward_gaps,
)
from drirl.align.scaling_batch import CategoryRunningMean, GroupScaling, compute_group_scaling
from drirl.align.settings import ScalingConfig
from drirl.errors import ConfigError
from drirl.responses import regex_sentence_split, rule_based_sentence_splitter, split_sentences

SIG_0 = 0.5
SIG_025 = 0.5621765
SIG_05 = 0.6224593
SIG_1 = 0.7310586
SIG_M1 = 0.2689414
NAN = float("nan")
INF = float("inf")


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def close(actual: torch.Tensor, expected, atol: float = 1e-5) -> None:
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=actual.dtype), atol=atol, rtol=1e-5)


# --- sentence splitting --------------------------------------------------------------------------------------


def test_split_sentences_default_three_pieces():
    assert split_sentences("Hello there. How are you? Fine!") == ["Hello there.", "How are you?", "Fine!"]


@pytest.mark.parametrize("text", ["", "   ", "\n\t \n"])
def test_split_sentences_empty_text(text):
    assert split_sentences(text) == []


def test_split_sentences_single_sentence_without_punctuation():
    assert split_sentences("  No punctuation here  ") == ["No punctuation here"]


def test_rule_based_splitter_keeps_abbreviations_and_decimals():
    split = rule_based_sentence_splitter("en")
    # pysbd knows "Dr." and "3.5" do not end a sentence; it does cut at line breaks.
    assert split("Dr. Smith gave 3.5 mg. It helped.") == ["Dr. Smith gave 3.5 mg.", "It helped."]
    assert split("Step 1: assess\nStep 2: refuse") == ["Step 1: assess", "Step 2: refuse"]
    assert split("") == []


def test_split_sentences_custom_splitter_output_is_cleaned():
    assert split_sentences("a|b| |c", splitter=lambda s: s.split("|")) == ["a", "b", "c"]


def test_regex_sentence_split():
    assert regex_sentence_split("Hello there. How are you? Fine!") == ["Hello there.", "How are you?", "Fine!"]
    assert regex_sentence_split("Step one\nStep two\n\n  Done.  ") == ["Step one", "Step two", "Done."]
    # A dot not followed by whitespace is not a boundary.
    assert regex_sentence_split("Take 3.5 mg.Then rest") == ["Take 3.5 mg.Then rest"]
    assert regex_sentence_split("Wait... what?! Yes") == ["Wait...", "what?!", "Yes"]
    assert regex_sentence_split("") == []
    assert regex_sentence_split(" \n ") == []


def test_rule_based_splitter_falls_back_to_regex_without_pysbd(monkeypatch):
    # A None entry in sys.modules makes `import pysbd` raise ImportError.
    monkeypatch.setitem(sys.modules, "pysbd", None)
    split = rule_based_sentence_splitter()
    assert split is regex_sentence_split
    assert split("Hello there. How are you? Fine!") == ["Hello there.", "How are you?", "Fine!"]


# --- W, δ ------------------------------------------------------------------------------------------------------


def test_greedy_match_similarity_two_by_two():
    # Response sentences e1=(1,0), e2=(0,1); demonstration sentences e1=(1,0), u=(√½,√½).
    # cos matrix rows: e1 -> [1, √½], e2 -> [0, √½]; row maxima 1 and √½ = 0.7071068.
    # W = (1 + 0.7071068) / 2 = 0.8535534;  δ = 1 − W = 0.1464466.
    r = math.sqrt(0.5)
    response = t([[1.0, 0.0], [0.0, 1.0]])
    demo = t([[1.0, 0.0], [r, r]])
    w = greedy_match_similarity(response, demo)
    assert w.shape == ()
    close(w, 0.8535534)
    close(hardness_delta(w), 0.1464466)


def test_greedy_match_similarity_is_scale_invariant_and_asymmetric():
    # Scaling rows changes no cosine: (3,0)·(0,5)... -> same W as unit vectors.
    response = t([[3.0, 0.0], [0.0, 5.0]])
    demo = t([[10.0, 0.0]])
    # cos rows: [1], [0] -> W = (1 + 0)/2 = 0.5
    close(greedy_match_similarity(response, demo), 0.5)
    # Swapped roles: the single sentence (1,0) matches (1,0) perfectly -> W = 1.
    close(greedy_match_similarity(demo, response), 1.0)


def test_greedy_match_similarity_opposite_is_minus_one():
    # cos((1,1), (−2,−2)) = −1 -> W = −1, δ = 2 (maximally hard).
    w = greedy_match_similarity(t([[1.0, 1.0]]), t([[-2.0, -2.0]]))
    close(w, -1.0)
    close(hardness_delta(w), 2.0)


def test_greedy_match_similarity_zero_row_is_cosine_zero():
    # Rows (0,0) and (1,0) against (1,0): cosines 0 and 1 -> W = 0.5, no NaN.
    w = greedy_match_similarity(t([[0.0, 0.0], [1.0, 0.0]]), t([[1.0, 0.0]]))
    close(w, 0.5)
    close(greedy_match_similarity(t([[0.0, 0.0]]), t([[0.0, 0.0]])), 0.0)


@pytest.mark.parametrize(("k", "l_"), [(0, 2), (2, 0), (0, 0)])
def test_greedy_match_similarity_empty_is_zero(k, l_):
    w = greedy_match_similarity(torch.ones(k, 3), torch.ones(l_, 3))
    assert w.shape == ()
    assert w.item() == 0.0
    assert hardness_delta(w).item() == 1.0


def test_greedy_match_similarity_rejects_bad_shapes():
    with pytest.raises(ValueError, match="2-D"):
        greedy_match_similarity(torch.ones(3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="widths differ"):
        greedy_match_similarity(torch.ones(2, 3), torch.ones(2, 4))


# --- α^D -----------------------------------------------------------------------------------------------------------


def test_data_hardness_weight_group_reference():
    # δ = [0.5, 0]; δ̄ = 0.25.  α^D = [σ(0.5)/σ(0.25), σ(0)/σ(0.25)] = [0.6224593/0.5621765, 0.5/0.5621765]
    #                                = [1.1072338, 0.8894003]
    alpha = data_hardness_weight(t([0.5, 0.0]))
    close(alpha, [SIG_05 / SIG_025, SIG_0 / SIG_025])
    close(alpha, [1.1072338, 0.8894003])


def test_data_hardness_weight_batched_and_explicit_reference():
    # Row 1 against δ̄ = 0: [σ(1)/σ(0), σ(0)/σ(0)] = [1.4621172, 1].
    # Row 2 against δ̄ = 1: [σ(1)/σ(1), σ(0)/σ(1)] = [1, 0.6839397].
    delta = t([[1.0, 0.0], [1.0, 0.0]])
    alpha = data_hardness_weight(delta, t([0.0, 1.0]))
    close(alpha, [[SIG_1 / SIG_0, 1.0], [1.0, SIG_0 / SIG_1]])
    # Same with a [B, 1] reference and with a scalar.
    close(data_hardness_weight(delta, t([[0.0], [1.0]])), alpha)
    close(data_hardness_weight(delta, 0.0), [[SIG_1 / SIG_0, 1.0], [SIG_1 / SIG_0, 1.0]])


def test_data_hardness_weight_nonfinite_delta_is_group_mean():
    # Finite δ = [0.5, 0] -> mean 0.25; the NaN becomes 0.25 -> α^D = 1 there, the others as above.
    alpha = data_hardness_weight(t([0.5, NAN, 0.0]))
    close(alpha, [SIG_05 / SIG_025, 1.0, SIG_0 / SIG_025])
    # Nothing finite at all: neutral.
    close(data_hardness_weight(t([NAN, INF])), [1.0, 1.0])


def test_data_hardness_weight_single_completion_is_one():
    close(data_hardness_weight(t([[0.7]])), [[1.0]])


# --- g, m, ḡ_P, α^M ---------------------------------------------------------------------------------------------------


def test_reward_gaps():
    # [[1−1, 2−1], [3−4, 5−4]] = [[0, 1], [−1, 1]]
    close(reward_gaps(t([[1.0, 2.0], [3.0, 5.0]]), t([1.0, 4.0])), [[0.0, 1.0], [-1.0, 1.0]])
    close(reward_gaps(t([[1.0, 2.0]]), 0.5), [[0.5, 1.5]])
    close(reward_gaps(t([1.0, 2.0]), torch.tensor(2.0)), [-1.0, 0.0])


def test_outlier_mask_relative_masks_one_gap():
    # g = [0,0,0,0,0,10]: ḡ = 10/6 = 1.6667; (g−ḡ)² = 2.7778 (×5) and 69.444;
    # Var = (5·2.7778 + 69.444)/6 = 13.889; τ·Var = 4·13.889 = 55.556 -> only the 10 exceeds it.
    gaps = t([0.0, 0.0, 0.0, 0.0, 0.0, 10.0])
    mask = outlier_mask(gaps, tau=4.0, relative=True)
    assert mask.tolist() == [True, True, True, True, True, False]
    # ḡ_P = Σ m g / Σ m = 0 / 5 = 0 (the unmasked mean would be 1.6667).
    close(masked_mean_gap(gaps, mask), 0.0)
    # The outlier sits at (n−1)·Var = 5·Var: τ = 5.5 keeps it.
    assert outlier_mask(gaps, tau=5.5, relative=True).all()


def test_outlier_mask_absolute():
    # g = [1, 2, 10]: ḡ = 13/3 = 4.3333; (g−ḡ)² = 11.11, 5.44, 32.11; τ = 25 masks the 10.
    gaps = t([1.0, 2.0, 10.0])
    mask = outlier_mask(gaps, tau=25.0, relative=False)
    assert mask.tolist() == [True, True, False]
    # ḡ_P = (1 + 2)/2 = 1.5
    close(masked_mean_gap(gaps, mask), 1.5)
    assert outlier_mask(gaps, tau=33.0, relative=False).all()


def test_outlier_mask_nonfinite_and_degenerate_groups():
    # NaN/inf are always out; the finite [1, 3] have ḡ = 2, Var = 1, both at distance² 1 ≤ 4.
    mask = outlier_mask(t([1.0, NAN, 3.0, INF, -INF]), tau=4.0, relative=True)
    assert mask.tolist() == [True, False, True, False, False]
    # All equal: zero variance, all kept even with τ = 0.
    assert outlier_mask(t([2.0, 2.0, 2.0]), tau=0.0, relative=True).tolist() == [True, True, True]
    assert outlier_mask(t([2.0, 2.0, NAN]), tau=0.0, relative=False).tolist() == [True, True, False]
    # G = 1 and all-NaN groups.
    assert outlier_mask(t([[5.0], [NAN]]), tau=4.0, relative=True).tolist() == [[True], [False]]
    # Batched: each row has its own statistics.
    rows = t([[0.0, 0.0, 0.0, 0.0, 0.0, 10.0], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    assert outlier_mask(rows, tau=4.0, relative=True).tolist() == [[True] * 5 + [False], [True] * 6]
    with pytest.raises(ValueError, match="tau"):
        outlier_mask(t([1.0]), tau=-1.0)


def test_masked_mean_gap_empty_mask_is_zero():
    gaps = t([[NAN, 3.0], [1.0, 3.0]])
    mask = torch.tensor([[False, False], [True, True]])
    # Row 1: nothing kept -> 0 (neutral). Row 2: (1 + 3)/2 = 2.
    close(masked_mean_gap(gaps, mask), [0.0, 2.0])
    # A NaN inside the mask is still skipped.
    close(masked_mean_gap(t([NAN, 4.0]), torch.tensor([True, True])), 4.0)


def test_model_responsiveness_weight():
    # α^M = σ(ḡ_P)/σ(ḡ_ref): σ(1)/σ(0) = 1.4621172, σ(−1)/σ(0) = 0.5378828, σ(0.5)/σ(0.25) = 1.1072338.
    close(model_responsiveness_weight(t([1.0, -1.0]), 0.0), [SIG_1 / SIG_0, SIG_M1 / SIG_0])
    close(model_responsiveness_weight(t([0.5]), t([0.25])), [1.1072338])
    # Non-finite reference or ḡ_P -> neutral 1.
    close(model_responsiveness_weight(t([1.0, NAN]), t([NAN, 0.0])), [1.0, 1.0])


# --- combination and clipping ---------------------------------------------------------------------------------------


def test_combine_weights_product_vs_sum():
    alpha_data = t([[1.2, 0.8], [1.0, 0.5]])
    alpha_model = t([1.5, 2.0])
    # product: [[1.2·1.5, 0.8·1.5], [1·2, 0.5·2]] = [[1.8, 1.2], [2.0, 1.0]]
    close(combine_weights(alpha_data, alpha_model, "product"), [[1.8, 1.2], [2.0, 1.0]])
    # sum, w = 0.5: [[(1.2+1.5)/2, (0.8+1.5)/2], [(1+2)/2, (0.5+2)/2]] = [[1.35, 1.15], [1.5, 1.25]]
    close(combine_weights(alpha_data, alpha_model, "sum"), [[1.35, 1.15], [1.5, 1.25]])
    # sum, w = 0.25: 0.25·1.2 + 0.75·1.5 = 1.425; 0.25·0.8 + 0.75·1.5 = 1.325; 0.25 + 1.5 = 1.75; 0.125 + 1.5 = 1.625
    close(combine_weights(alpha_data, alpha_model, "sum", 0.25), [[1.425, 1.325], [1.75, 1.625]])
    # A scalar α^M.
    close(combine_weights(t([1.0, 2.0]), torch.tensor(3.0)), [3.0, 6.0])


def test_combine_weights_unknown_mode():
    with pytest.raises(ValueError, match=r"\['product', 'sum'\].*'mean'"):
        combine_weights(t([1.0]), t(1.0), "mean")
    with pytest.raises(ValueError, match="data_weight"):
        combine_weights(t([1.0]), t(1.0), "sum", 1.5)


def test_clip_weights_and_fraction():
    # [0.1, 1.0, 3.0, NaN, 0.5, 2.0] -> NaN becomes 1.0; clip to [0.5, 2]: [0.5, 1, 2, 1, 0.5, 2].
    # The clip changes 0.1 and 3.0 only (values exactly on a bound are not clipped): 2 of 6 = 0.3333.
    clipped, fraction = clip_weights(t([0.1, 1.0, 3.0, NAN, 0.5, 2.0]), 0.5, 2.0)
    close(clipped, [0.5, 1.0, 2.0, 1.0, 0.5, 2.0])
    assert fraction == pytest.approx(2 / 6)
    # ±inf are also neutralised to 1 before clipping; with [1.5, 2] that 1 is then lifted to 1.5 (binds).
    clipped, fraction = clip_weights(t([INF, -INF, 1.75]), 1.5, 2.0)
    close(clipped, [1.5, 1.5, 1.75])
    assert fraction == pytest.approx(2 / 3)
    _, fraction = clip_weights(torch.empty(0), 0.5, 2.0)
    assert fraction == 0.0


@pytest.mark.parametrize(
    ("lo", "hi", "match"),
    [(2.0, 1.0, "alpha_min must be <= alpha_max"), (0.0, 1.0, "> 0"), (-1.0, 1.0, "> 0"), (NAN, 1.0, "numbers")],
)
def test_clip_weights_rejects_bad_bounds(lo, hi, match):
    with pytest.raises(ValueError, match=match):
        clip_weights(t([1.0]), lo, hi)


# --- config and running means ---------------------------------------------------------------------------------------


def test_scaling_config_defaults_and_help():
    import dataclasses

    config = ScalingConfig()
    assert (config.scaling_mode, config.scaling_combine, config.scaling_data_reference,
            config.scaling_model_reference) == ("both", "product", "group", "category_running_mean")
    # The spec's absolute τ is the default; k = 1 and raw gaps are the paper's α.
    assert (config.alpha_min, config.alpha_max, config.scaling_outlier_tau, config.scaling_outlier_tau_relative,
            config.scaling_running_mean_momentum, config.scaling_sharpness, config.scaling_standardize_gaps,
            config.scaling_delta_on, config.scaling_centered) == (0.5, 2.0, 4.0, False, 0.9, 1.0, False, "full", False)
    for f in dataclasses.fields(ScalingConfig):
        assert f.metadata.get("help"), f.name


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scaling_mode": "all"}, "must be one of ['none', 'data', 'model', 'both'], got 'all'"),
        ({"scaling_combine": "mean"}, "must be one of ['product', 'sum'], got 'mean'"),
        ({"scaling_data_reference": "batch"}, "must be one of ['group', 'category_running_mean'], got 'batch'"),
        ({"scaling_model_reference": "ema"}, "must be one of ['category_running_mean', 'group_mean'], got 'ema'"),
        ({"scaling_delta_on": "draft"}, "must be one of ['full', 'answer'], got 'draft'"),
        ({"scaling_sum_data_weight": 1.5}, "must be in [0, 1], got 1.5"),
        ({"scaling_running_mean_momentum": -0.1}, "must be in [0, 1], got -0.1"),
        ({"scaling_outlier_tau": -1.0}, "must be >= 0 (.inf allowed), got -1.0"),
        ({"scaling_sharpness": 0.0}, "must be a finite number > 0, got 0.0"),
        ({"scaling_standardize_gaps": "yes"}, "must be true or false, got 'yes'"),
        ({"alpha_min": 0.0}, "must be a finite number > 0, got 0.0"),
        ({"alpha_min": 3.0}, "must be >= alpha_min (3.0), got 2.0"),
    ],
)
def test_scaling_config_validation(kwargs, message):
    with pytest.raises(ValueError) as info:
        ScalingConfig(**kwargs)
    expected_key = "alpha_max" if kwargs == {"alpha_min": 3.0} else next(iter(kwargs))
    assert str(info.value) == f"key '{expected_key}': {message}"
    assert isinstance(info.value, ConfigError)
    assert info.value.key == expected_key


def test_category_running_mean_ema_sequence():
    # m = 0.9: 1.0 (first value initialises); 0.9·1.0 + 0.1·2.0 = 1.1; 0.9·1.1 + 0.1·0.0 = 0.99.
    running = CategoryRunningMean(0.9)
    assert running.get("crime") is None
    assert running.get("crime", 7.0) == 7.0
    assert running.update("crime", 1.0) == pytest.approx(1.0)
    assert running.update("crime", torch.tensor(2.0)) == pytest.approx(1.1)
    assert running.update("crime", 0.0) == pytest.approx(0.99)
    assert running.get("crime") == pytest.approx(0.99)
    # Categories are independent.
    assert running.update("privacy", -3.0) == -3.0
    assert running.get("crime") == pytest.approx(0.99)
    with pytest.raises(ValueError, match="finite"):
        running.update("crime", NAN)
    with pytest.raises(ValueError, match="momentum"):
        CategoryRunningMean(1.5)


def test_category_running_mean_state_roundtrip():
    running = CategoryRunningMean(0.5)
    running.update("a", 4.0)
    running.update("a", 2.0)  # 0.5·4 + 0.5·2 = 3
    state = json.loads(json.dumps(running.state_dict()))
    assert state == {"momentum": 0.5, "means": {"a": 3.0}, "counts": {"a": 2}}
    resumed = CategoryRunningMean(0.5)
    resumed.load_state_dict(state)
    assert resumed.get("a") == 3.0
    assert resumed.update("a", 1.0) == running.update("a", 1.0) == 2.0
    with pytest.raises(ValueError):
        resumed.load_state_dict({"means": {"a": NAN}})


# --- compute_group_scaling ------------------------------------------------------------------------------------------


def test_compute_group_scaling_both_product_sequence():
    # Two groups of category "a", G = 2, demo reward 0, group reference for δ, running reference for ḡ.
    # Group 1: δ = [0.5, 0] -> α^D = [1.1072338, 0.8894003]. g = [2, 0] (kept: G=2 never has outliers at τ=4),
    #          ḡ_P = 1, ḡ = 1, running "a" empty -> ḡ_ref = 1 -> α^M = 1; running "a" := 1.
    # Group 2: δ = [0.2, 0.2] -> α^D = [1, 1]. g = [0, 0], ḡ_P = 0, ḡ_ref = running "a" = 1
    #          -> α^M = σ(0)/σ(1) = 0.5/0.7310586 = 0.6839397; running "a" := 0.9·1 + 0.1·0 = 0.9.
    gap_running = CategoryRunningMean(0.9)
    result = compute_group_scaling(
        delta=t([[0.5, 0.0], [0.2, 0.2]]),
        rewards=t([[2.0, 0.0], [0.0, 0.0]]),
        demo_rewards=t([0.0, 0.0]),
        categories=["a", "a"],
        config=ScalingConfig(),
        gap_running=gap_running,
    )
    assert isinstance(result, GroupScaling)
    close(result.alpha_data, [[1.1072338, 0.8894003], [1.0, 1.0]])
    close(result.alpha_model, [1.0, 0.6839397])
    close(result.alpha, [[1.1072338, 0.8894003], [0.6839397, 0.6839397]])
    close(result.gaps, [[2.0, 0.0], [0.0, 0.0]])
    assert result.outlier_mask.all()
    assert result.fraction_clipped == 0.0
    assert result.num_nonfinite_rewards == 0
    assert gap_running.get("a") == pytest.approx(0.9)


def test_compute_group_scaling_sum_and_clip():
    # One group: δ = [1, −1] (mean 0) -> α^D = [σ(1)/σ(0), σ(−1)/σ(0)] = [1.4621172, 0.5378828].
    # g = [3, 1] -> ḡ_P = ḡ = 2 with model_reference=group_mean -> α^M = 1.
    # sum w = 0.5: [(1.4621172 + 1)/2, (0.5378828 + 1)/2] = [1.2310586, 0.7689414];
    # clip to [0.8, 1.2] -> [1.2, 0.8], both bind -> fraction 1.
    config = ScalingConfig(scaling_combine="sum", scaling_model_reference="group_mean", alpha_min=0.8, alpha_max=1.2)
    result = compute_group_scaling(t([[1.0, -1.0]]), t([[3.0, 1.0]]), t([0.0]), ["x"], config)
    close(result.alpha_model, [1.0])
    close(result.alpha, [[1.2, 0.8]])
    assert result.fraction_clipped == 1.0
    # Product instead: [1.4621172, 0.5378828] -> clipped [1.2, 0.8] as well, with [0.5, 2] unclipped.
    result = compute_group_scaling(
        t([[1.0, -1.0]]), t([[3.0, 1.0]]), t([0.0]), ["x"], ScalingConfig(scaling_model_reference="group_mean")
    )
    close(result.alpha, [[1.4621172, 0.5378828]])
    assert result.fraction_clipped == 0.0


def test_compute_group_scaling_group_mean_reference_sees_outlier():
    # g = [0,0,0,0,0,10] (demo reward 0): the 10 is masked (see test_outlier_mask_relative_masks_one_gap),
    # ḡ_P = 0, ḡ = 10/6 = 1.6666667; α^M = σ(0)/σ(1.6666667) = 0.5/0.8411309 = 0.5944376.
    config = ScalingConfig(scaling_mode="model", scaling_model_reference="group_mean", alpha_min=0.1, alpha_max=10.0)
    result = compute_group_scaling(torch.zeros(1, 6), t([[0.0] * 5 + [10.0]]), t([0.0]), ["x"], config)
    close(result.alpha_model, [0.5944376])
    close(result.alpha, [[0.5944376] * 6])
    close(result.alpha_data, torch.ones(1, 6))
    assert result.outlier_mask.tolist() == [[True] * 5 + [False]]


def test_compute_group_scaling_data_running_reference():
    # Running δ̄ of "a" is 0 before the batch; group δ = [1, 1] -> α^D = σ(1)/σ(0) = 1.4621172 (read before update);
    # then running "a" := 0.9·0 + 0.1·1 = 0.1. Category "b" is new: δ̄ = its group mean 0.4 -> α^D = 1; "b" := 0.4.
    delta_running = CategoryRunningMean(0.9)
    delta_running.update("a", 0.0)
    config = ScalingConfig(scaling_mode="data", scaling_data_reference="category_running_mean")
    result = compute_group_scaling(
        t([[1.0, 1.0], [0.4, 0.4]]), torch.zeros(2, 2), t([0.0, 0.0]), ["a", "b"], config, delta_running=delta_running
    )
    close(result.alpha_data, [[1.4621172, 1.4621172], [1.0, 1.0]])
    close(result.alpha, result.alpha_data)
    close(result.alpha_model, [1.0, 1.0])
    assert delta_running.get("a") == pytest.approx(0.1)
    assert delta_running.get("b") == pytest.approx(0.4)


def test_compute_group_scaling_running_mean_updates_in_group_order():
    # Two groups of the same category in one batch: the second is compared against the mean that already
    # includes the first. g-means 2 and 0: ref_1 = 2 (first value), running := 2; ref_2 = 2, running := 1.8.
    # α^M_2 = σ(0)/σ(2) = 0.5/0.8807971 = 0.5676660.
    gap_running = CategoryRunningMean(0.9)
    config = ScalingConfig(scaling_mode="model", alpha_min=0.1)
    result = compute_group_scaling(
        torch.zeros(2, 1), t([[2.0], [0.0]]), t([0.0, 0.0]), ["c", "c"], config, gap_running=gap_running
    )
    close(result.alpha_model, [1.0, 0.5676660])
    assert gap_running.get("c") == pytest.approx(1.8)


def test_compute_group_scaling_none_is_ones_and_pure():
    gap_running = CategoryRunningMean()
    delta_running = CategoryRunningMean()
    result = compute_group_scaling(
        t([[0.0, 2.0]]),
        t([[5.0, -5.0]]),
        t([1.0]),
        ["a"],
        ScalingConfig(scaling_mode="none"),
        delta_running=delta_running,
        gap_running=gap_running,
    )
    assert result.alpha.tolist() == [[1.0, 1.0]]
    assert result.alpha_data.tolist() == [[1.0, 1.0]]
    assert result.alpha_model.tolist() == [1.0]
    assert result.fraction_clipped == 0.0
    assert len(gap_running) == 0 and len(delta_running) == 0
    close(result.gaps, [[4.0, -6.0]])


def test_compute_group_scaling_nan_rewards():
    # Rewards [1, NaN, 3], demo 0: gaps [1, NaN, 3], the NaN is masked; ḡ_P = ḡ = 2 -> α^M = 1 (group_mean).
    # δ = [0.5, 0.5, 0.5] -> α^D = 1. The NaN reward's α is 1 before clipping.
    # Second group: every reward NaN -> no finite gap -> α^M = 1, running mean untouched.
    gap_running = CategoryRunningMean()
    result = compute_group_scaling(
        t([[0.5, 0.5, 0.5], [0.0, 1.0, 2.0]]),
        t([[1.0, NAN, 3.0], [NAN, NAN, INF]]),
        t([0.0, 0.0]),
        ["a", "b"],
        ScalingConfig(),
        gap_running=gap_running,
    )
    assert result.num_nonfinite_rewards == 4
    assert result.outlier_mask.tolist() == [[True, False, True], [False, False, False]]
    close(result.alpha_model, [1.0, 1.0])
    assert torch.isfinite(result.alpha).all()
    close(result.alpha[0], [1.0, 1.0, 1.0])
    close(result.alpha[1], [1.0, 1.0, 1.0])
    assert "b" not in gap_running and gap_running.get("a") == pytest.approx(2.0)


def test_compute_group_scaling_single_completion_and_equal_rewards():
    # G = 1: α^D = σ(δ)/σ(δ) = 1; ḡ_P = ḡ -> α^M = 1 with the group-mean reference.
    config = ScalingConfig(scaling_model_reference="group_mean")
    result = compute_group_scaling(t([[0.3]]), t([[1.0]]), t([2.0]), ["a"], config)
    close(result.alpha, [[1.0]])
    # All-equal rewards (zero std): every gap kept, α^M = 1.
    result = compute_group_scaling(t([[0.3, 0.9]]), t([[1.0, 1.0]]), t([0.0]), ["a"], config)
    assert result.outlier_mask.all()
    close(result.alpha_model, [1.0])


def test_compute_group_scaling_requires_running_means_and_shapes():
    with pytest.raises(ValueError, match="gap_running"):
        compute_group_scaling(t([[0.0]]), t([[0.0]]), t([0.0]), ["a"], ScalingConfig())
    with pytest.raises(ValueError, match="delta_running"):
        running = ScalingConfig(scaling_mode="data", scaling_data_reference="category_running_mean")
        compute_group_scaling(t([[0.0]]), t([[0.0]]), t([0.0]), ["a"], running)
    # Not needed when the factor is off.
    compute_group_scaling(t([[0.0]]), t([[0.0]]), t([0.0]), ["a"], ScalingConfig(scaling_mode="data"))
    with pytest.raises(ValueError, match="one category per group"):
        compute_group_scaling(t([[0.0]]), t([[0.0]]), t([0.0]), ["a", "b"], ScalingConfig(scaling_mode="none"))
    with pytest.raises(ValueError, match=r"\[B, G\]"):
        compute_group_scaling(t([[0.0, 1.0]]), t([[0.0]]), t([0.0]), ["a"], ScalingConfig(scaling_mode="none"))
    with pytest.raises(ValueError, match="demo_rewards"):
        compute_group_scaling(t([[0.0]]), t([[0.0]]), t([0.0, 1.0]), ["a"], ScalingConfig(scaling_mode="none"))


def test_fast_sentence_split_keeps_abbreviations_initials_and_list_numbers():
    from drirl.responses import fast_sentence_split

    assert fast_sentence_split("See Dr. Smith, e.g. on Monday. He is fine!") == [
        "See Dr. Smith, e.g. on Monday.", "He is fine!"]
    assert fast_sentence_split("Directed by physicist J. Robert Oppenheimer. It ended.") == [
        "Directed by physicist J. Robert Oppenheimer.", "It ended."]
    assert fast_sentence_split("1. Mix flour. 2. Add eggs.\n3. Bake for 3.5 hours.") == [
        "1. Mix flour.", "2. Add eggs.", "3. Bake for 3.5 hours."]
    # A path inside a code span is not a sentence end (pysbd cuts "./script.sh" after its dot).
    assert fast_sentence_split("Run it with `./script.sh`. Then check.") == [
        "Run it with `./script.sh`.", "Then check."]
    assert fast_sentence_split("Wait... what?! Yes") == ["Wait...", "what?!", "Yes"]
    assert fast_sentence_split(" \n ") == []


def test_sentence_splitter_is_a_validated_scaling_setting():
    from drirl.align.settings import ScalingConfig
    from drirl.errors import ConfigError
    from drirl.responses import fast_sentence_split, sentence_splitter

    assert sentence_splitter("fast") is fast_sentence_split
    assert sentence_splitter("pysbd")("Dr. Smith gave 3.5 mg. It helped.") == ["Dr. Smith gave 3.5 mg.", "It helped."]
    assert ScalingConfig().scaling_sentence_splitter == "fast"
    with pytest.raises(ConfigError, match="scaling_sentence_splitter"):
        ScalingConfig(scaling_sentence_splitter="nltk")
