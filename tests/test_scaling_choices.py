"""The documented choices of GRPO-S's α (METHOD.md §2.4), checked against numbers worked out by hand: the outlier
mask at the group sizes actually trained (G = 4 and G = 8), the load-time check of a relative τ, the sharpness k,
standardised gaps, δ on the answer part, the mask rate, and the per-pair α of DPO-S.

Sigmoid values used below (σ(x) = 1 / (1 + e^−x)):
    σ(0) = 0.5, σ(1) = 0.7310586, σ(2) = 0.8807971, σ(0.5) = 0.6224593, σ(1/√3) = 0.6404575
    σ(0.2) = 0.5498340, σ(0.4) = 0.5986877, σ(0.6) = 0.6456563
    σ(−1) = 0.2689414, σ(−2) = 0.1192029, σ(−3) = 0.0474259
"""

from __future__ import annotations

import pytest
import torch

from drirl.align.scaling import (
    data_hardness_weight,
    gap_scale,
    hardness_text,
    masked_mean_gap,
    model_responsiveness_weight,
    outlier_mask,
)
from drirl.align.scaling_batch import compute_group_scaling, dpo_pair_weights, mask_fraction
from drirl.align.settings import ScalingConfig, check_outlier_tau
from drirl.errors import ConfigError

NAN = float("nan")


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def close(actual: torch.Tensor, expected, atol: float = 1e-5) -> None:
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=actual.dtype), atol=atol, rtol=1e-5)


# --- the outlier mask fires at G = 4 and G = 8 ----------------------------------------------------------------------


def test_absolute_mask_fires_at_g4():
    # g = [0, 0, 0, 4]: ḡ = 1, (g − ḡ)² = [1, 1, 1, 9]; τ = 4 (the default, absolute) drops the 4.
    gaps = t([0.0, 0.0, 0.0, 4.0])
    mask = outlier_mask(gaps, tau=4.0)
    assert mask.tolist() == [True, True, True, False]
    close(masked_mean_gap(gaps, mask), 0.0)  # ḡ_P = 0, where the unmasked mean is 1
    assert mask_fraction(mask, gaps) == pytest.approx(0.25)


def test_relative_mask_at_g4_fires_below_g_minus_1_only():
    # Var = (1 + 1 + 1 + 9) / 4 = 3. τ = 2: 9 > 2·3 = 6, masked. τ = 4 (the old default): 9 <= 12, kept; no
    # deviation² can exceed (G − 1)·Var = 9 in a group of 4, so that τ never fires.
    gaps = t([0.0, 0.0, 0.0, 4.0])
    assert outlier_mask(gaps, tau=2.0, relative=True).tolist() == [True, True, True, False]
    assert outlier_mask(gaps, tau=4.0, relative=True).all()
    assert outlier_mask(gaps, tau=3.0, relative=True).all()  # the boundary: 9 <= 3·3 keeps it


def test_mask_fires_at_g8_absolute_and_relative():
    # g = [1]*7 + [9]: ḡ = 16/8 = 2, (g − ḡ)² = [1]*7 + [49], Var = (7 + 49) / 8 = 7.
    gaps = t([1.0] * 7 + [9.0])
    expected = [True] * 7 + [False]
    assert outlier_mask(gaps, tau=4.0).tolist() == expected  # absolute: 49 > 4
    assert outlier_mask(gaps, tau=6.0, relative=True).tolist() == expected  # 49 > 6·7 = 42
    assert outlier_mask(gaps, tau=7.0, relative=True).all()  # 49 <= 7·7: τ = G − 1 never fires
    close(masked_mean_gap(gaps, outlier_mask(gaps, tau=4.0)), 1.0)


def test_group_scaling_uses_the_mask_and_logs_its_rate():
    # G = 8, demo reward 0, gaps = rewards = [1]*7 + [9]: ḡ_P = 1 (the 9 masked), ḡ = 2 (group-mean reference):
    # α^M = σ(1)/σ(2) = 0.7310586 / 0.8807971 = 0.8299966; one of 8 gaps masked.
    config = ScalingConfig(scaling_mode="model", scaling_model_reference="group_mean")
    result = compute_group_scaling(t([[0.0] * 8]), t([[1.0] * 7 + [9.0]]), t([0.0]), ["crime"], config)
    close(result.alpha_model, [0.8299966])
    close(result.alpha, [[0.8299966] * 8])
    assert result.fraction_masked == pytest.approx(1 / 8)
    # G = 4: g = [0, 0, 0, 4], ḡ_P = 0, ḡ = 1: α^M = σ(0)/σ(1) = 0.5 / 0.7310586 = 0.6839397.
    result = compute_group_scaling(t([[0.0] * 4]), t([[0.0, 0.0, 0.0, 4.0]]), t([0.0]), ["crime"], config)
    close(result.alpha_model, [0.6839397])
    assert result.fraction_masked == pytest.approx(1 / 4)


@pytest.mark.parametrize(("tau", "group", "fails"), [
    (4.0, 4, True), (3.0, 4, True), (2.9, 4, False), (7.0, 8, True), (6.0, 8, False), (float("inf"), 4, False)])
def test_check_outlier_tau_refuses_an_inert_relative_tau(tau, group, fails):
    if fails:
        with pytest.raises(ConfigError) as info:
            check_outlier_tau(tau, True, group)
        assert info.value.key == "scaling_outlier_tau"
        assert f"group of {group} completions" in str(info.value)
    else:
        check_outlier_tau(tau, True, group)
    check_outlier_tau(tau, False, group)  # an absolute τ is never refused


def test_align_config_checks_a_relative_tau_against_num_generations():
    from drirl.align.recipe import AlignConfig
    from drirl.config import config_from_dict

    with pytest.raises(ConfigError) as info:
        config_from_dict(AlignConfig, {"output": "x", "scaling_outlier_tau_relative": True, "num_generations": 4},
                         source="c.yaml")
    assert str(info.value).startswith("file c.yaml, key 'scaling_outlier_tau': a relative τ of 4 can never mask")
    config = config_from_dict(AlignConfig, {"output": "x", "scaling_outlier_tau_relative": True, "num_generations": 8})
    assert config.scaling_outlier_tau == 4.0


# --- sharpness k, standardised gaps ---------------------------------------------------------------------------------


def test_sharpness_widens_alpha_data():
    # δ = [0, 1], group reference δ̄ = 0.5. k = 1: σ(0)/σ(0.5) = 0.8032653, σ(1)/σ(0.5) = 1.1744680.
    close(data_hardness_weight(t([0.0, 1.0])), [0.8032653, 1.1744680])
    # k = 2: σ(0)/σ(1) = 0.6839397, σ(2)/σ(1) = 0.8807971 / 0.7310586 = 1.2048242.
    close(data_hardness_weight(t([0.0, 1.0]), sharpness=2.0), [0.6839397, 1.2048242])
    with pytest.raises(ValueError, match="sharpness"):
        data_hardness_weight(t([0.0, 1.0]), sharpness=0.0)


def test_paper_form_flattens_at_large_k_and_the_centred_form_does_not():
    # δ = [0.5, 0.9], δ̄ = 0.7, k = 8. Paper: σ(4)/σ(5.6) = 0.9820138 / 0.9963158 = 0.9856451 and
    # σ(7.2)/σ(5.6) = 0.9992540 / 0.9963158 = 1.0029491: both within 1.5 % of 1.
    close(data_hardness_weight(t([0.5, 0.9]), sharpness=8.0), [0.9856451, 1.0029491])
    # Centred: 2·σ(8·(∓0.2)) = 2·σ(∓1.6) = 0.3359632 and 1.6640368.
    close(data_hardness_weight(t([0.5, 0.9]), sharpness=8.0, centered=True), [0.3359632, 1.6640368])
    # k = 2 on δ = [0, 1]: 2·σ(∓1) = 0.5378828 and 1.4621172; at the reference α^D = 1.
    close(data_hardness_weight(t([0.0, 1.0]), sharpness=2.0, centered=True), [0.5378828, 1.4621172])
    close(data_hardness_weight(t([0.3, 0.3]), sharpness=5.0, centered=True), [1.0, 1.0])


def test_centred_alpha_model_and_its_switch_in_group_scaling():
    # 2·σ(1·(1 − (−1))) = 2·σ(2) = 1.7615942
    close(model_responsiveness_weight(t(1.0), t(-1.0), centered=True), 1.7615942)
    # G = 4, g = [0, 0, 0, 4]: ḡ_P = 0, ḡ = 1 (group mean): centred k = 1 gives 2·σ(−1) = 0.5378828.
    config = ScalingConfig(scaling_mode="model", scaling_model_reference="group_mean", scaling_centered=True)
    result = compute_group_scaling(t([[0.0] * 4]), t([[0.0, 0.0, 0.0, 4.0]]), t([0.0]), ["crime"], config)
    close(result.alpha_model, [0.5378828])


def test_sharpness_on_alpha_model():
    # σ(2·1)/σ(2·0) = 0.8807971 / 0.5 = 1.7615942
    close(model_responsiveness_weight(t(1.0), t(0.0), sharpness=2.0), 1.7615942)
    close(model_responsiveness_weight(t(1.0), t(0.0)), 0.7310586 / 0.5)


def test_gap_scale_is_the_population_std_of_finite_gaps():
    # [0, 2, 4, 6]: mean 3, deviations² 9, 1, 1, 9 -> Var 5, std √5 = 2.2360680; NaN ignored.
    close(gap_scale(t([[0.0, 2.0], [4.0, 6.0]])), 2.2360680)
    close(gap_scale(t([[0.0, NAN], [4.0, 2.0], [6.0, NAN]])), 2.2360680)
    close(gap_scale(t([3.0, 3.0])), 1.0)  # no spread: no rescaling
    close(gap_scale(t([NAN])), 1.0)


def test_standardised_gaps_in_group_scaling():
    # g = [0, 0, 0, 4]: std √3; ḡ_P = 0 -> z 0; ḡ = 1 -> z 1/√3: α^M = σ(0)/σ(1/√3) = 0.5 / 0.6404575 = 0.7806920.
    config = ScalingConfig(scaling_mode="model", scaling_model_reference="group_mean", scaling_standardize_gaps=True)
    result = compute_group_scaling(t([[0.0] * 4]), t([[0.0, 0.0, 0.0, 4.0]]), t([0.0]), ["crime"], config)
    close(result.alpha_model, [0.7806920])
    # Scale-free: the same rewards ×10 give the same α^M (τ absolute must then grow ×100 to mask alike).
    config10 = ScalingConfig(scaling_mode="model", scaling_model_reference="group_mean",
                             scaling_standardize_gaps=True, scaling_outlier_tau=400.0)
    result10 = compute_group_scaling(t([[0.0] * 4]), t([[0.0, 0.0, 0.0, 40.0]]), t([0.0]), ["crime"], config10)
    close(result10.alpha_model, [0.7806920])


def test_sharpness_in_group_scaling_data_factor():
    # Two completions with δ = 0 and 1 (W = 1 and 0) against the group mean 0.5, k = 2: [0.6839397, 1.2048242].
    config = ScalingConfig(scaling_mode="data", scaling_sharpness=2.0)
    result = compute_group_scaling(t([[0.0, 1.0]]), t([[1.0, 2.0]]), t([0.0]), ["crime"], config)
    close(result.alpha, [[0.6839397, 1.2048242]])
    assert result.fraction_masked == 0.0  # α^M unused: the mask rate is not reported


# --- δ on the answer part -------------------------------------------------------------------------------------------


def test_hardness_text_takes_the_answer_of_a_chain_of_draft():
    cod = "Draft: car theft -> crime -> refuse\nAnswer: I can't help with that. A locksmith can."
    assert hardness_text(cod, "answer") == "I can't help with that. A locksmith can."
    assert hardness_text(cod, "full") == cod
    assert hardness_text("Paris is the capital.", "answer") == "Paris is the capital."
    # A draft cut off before its answer is used whole.
    assert hardness_text("Draft: car -> crime", "answer") == "Draft: car -> crime"
    with pytest.raises(ValueError, match="delta_on"):
        hardness_text(cod, "draft")


def test_hardness_encoder_compares_answers_only(monkeypatch):
    """With delta_on=answer two responses that differ only in their drafts get the same δ."""
    from drirl.align.grpo_s import HardnessEncoder

    class BagOfLetters:
        def encode(self, sentences, **_):
            return torch.stack([torch.tensor([s.count(c) for c in "abcdefghijklmnopqrstuvwxyz"], dtype=torch.float32)
                                for s in sentences])

    demo = "Draft: risk -> refuse\nAnswer: I can't help with that."
    first = "Draft: zzz qqq\nAnswer: I can't help with that."
    second = "Draft: completely different notes here\nAnswer: I can't help with that."
    answer = HardnessEncoder(BagOfLetters(), delta_on="answer").deltas([first, second], [demo, demo])
    close(answer, [0.0, 0.0])
    full = HardnessEncoder(BagOfLetters(), delta_on="full").deltas([first, second], [demo, demo])
    assert full[0] > 0.0 and full[0] != full[1]


# --- DPO-S pair weights ---------------------------------------------------------------------------------------------


def test_dpo_pair_weights_data_factor_against_the_category_mean():
    # Categories: a = pairs 0, 1 (δ 0.2, 0.6: mean 0.4), b = pair 2 (δ 1.0: its own mean).
    # α^D = σ(0.2)/σ(0.4) = 0.9183987, σ(0.6)/σ(0.4) = 1.0784527, σ(1)/σ(1) = 1.
    config = ScalingConfig(scaling_mode="data")
    result = dpo_pair_weights(t([0.2, 0.6, 1.0]), t([0.0, 0.0, 0.0]), ["p", "q", "r"], ["a", "a", "b"], config)
    close(result.alpha, [0.9183987, 1.0784527, 1.0])


def test_dpo_pair_weights_model_factor_and_clip():
    # One pair per prompt: ḡ_P = g. Category a's reference is the mean of its prompts' ḡ: (−1 − 3)/2 = −2.
    # α^M = σ(−1)/σ(−2) = 2.2561647, σ(−3)/σ(−2) = 0.3978583; b alone: 1.
    wide = ScalingConfig(scaling_mode="model", alpha_min=0.1, alpha_max=10.0)
    result = dpo_pair_weights(t([0.0] * 3), t([-1.0, -3.0, 0.5]), ["p", "q", "r"], ["a", "a", "b"], wide)
    close(result.alpha, [2.2561647, 0.3978583, 1.0])
    # The default clip [0.5, 2] binds on two of the three.
    result = dpo_pair_weights(t([0.0] * 3), t([-1.0, -3.0, 0.5]), ["p", "q", "r"], ["a", "a", "b"],
                              ScalingConfig(scaling_mode="model"))
    close(result.alpha, [2.0, 0.5, 1.0])
    assert result.fraction_clipped == pytest.approx(2 / 3)


def test_dpo_pair_weights_product_of_both():
    # α = α^D · α^M: 0.9183987 · 2.2561647 = 2.0720588 and 1.0784527 · 0.3978583 = 0.4290714.
    config = ScalingConfig(scaling_mode="both", alpha_min=0.1, alpha_max=10.0)
    result = dpo_pair_weights(t([0.2, 0.6, 1.0]), t([-1.0, -3.0, 0.5]), ["p", "q", "r"], ["a", "a", "b"], config)
    close(result.alpha, [2.0720588, 0.4290714, 1.0])


def test_dpo_pair_weights_mask_within_a_prompts_samples():
    # Prompt p has four rejected samples with gaps [0, 0, 0, 4] (ḡ 1, the 4 masked: ḡ_P 0), prompt q two with
    # [1, 1] (ḡ = ḡ_P = 1). Category reference = mean of the prompts' ḡ = (1 + 1)/2 = 1, one entry per prompt.
    # α^M(p) = σ(0)/σ(1) = 0.6839397; α^M(q) = 1; one of six finite gaps masked.
    config = ScalingConfig(scaling_mode="model")
    gaps = t([0.0, 0.0, 0.0, 4.0, 1.0, 1.0])
    result = dpo_pair_weights(torch.zeros(6), gaps, ["p"] * 4 + ["q"] * 2, ["a"] * 6, config)
    close(result.alpha, [0.6839397] * 4 + [1.0] * 2)
    assert result.fraction_masked == pytest.approx(1 / 6)


def test_dpo_pair_weights_none_and_unscorable():
    result = dpo_pair_weights(t([0.2, 0.6]), t([-1.0, NAN]), ["p", "q"], ["a", "a"],
                              ScalingConfig(scaling_mode="none"))
    close(result.alpha, [1.0, 1.0])
    # q's gap is NaN: α^M(q) = 1; the category reference is p's gap alone, so α^M(p) = σ(−1)/σ(−1) = 1.
    result = dpo_pair_weights(t([0.2, 0.6]), t([-1.0, NAN]), ["p", "q"], ["a", "a"],
                              ScalingConfig(scaling_mode="model"))
    close(result.alpha, [1.0, 1.0])
    with pytest.raises(ValueError, match="one prompt and one category per pair"):
        dpo_pair_weights(t([0.2]), t([0.0]), ["p", "q"], ["a"], ScalingConfig())
