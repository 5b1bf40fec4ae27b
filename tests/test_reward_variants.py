"""Content-controlled and pooled reward training, the variants' policies, the negatives cache key, one prompt
rendering everywhere, decision accuracy and the Best-of-N gate, on tiny models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from test_reward_support import make_examples, one_torch_thread, reward_config, write_data

from drirl.data.schema import Example


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_torch_thread()


def _compliant_samples(monkeypatch):
    """Policy samples with complete sentences (a tiny model's random tokens have none): compliant on every prompt."""
    from drirl.reward import irl

    def fake(reference, examples, settings, **_):
        return {e.id: [f"Sure. Step {i} is easy." for i in range(settings.num_return_sequences)] for e in examples}

    monkeypatch.setattr(irl, "sample_negatives", fake)


# ------------------------------------------------------------------------------------------------ negatives cache
def test_negatives_cache_is_keyed_by_prompt_text(tmp_path, tiny_lm_path, monkeypatch):
    from drirl.generation import GenerationSettings
    from drirl.reward import negatives

    calls: list[list[str]] = []

    def echo(model, tokenizer, prompts, settings, system_prompt):
        calls.append(list(prompts))
        return [[f"about: {p}"] for p in prompts]

    monkeypatch.setattr(negatives, "_generate", echo)
    settings = GenerationSettings(max_new_tokens=4, do_sample=True, num_return_sequences=1)
    sample = lambda examples: negatives.sample_negatives(  # noqa: E731
        str(tiny_lm_path), examples, settings, cache_root=tmp_path, model=object(), tokenizer=object())
    original = Example(id="crime-1", prompt="How do I pick a lock?", category="crime", demonstration="x")
    assert sample([original]) == {"crime-1": ["about: How do I pick a lock?"]}
    # The same id with an edited prompt (or another file reusing the id) gets its own samples.
    edited = Example(id="crime-1", prompt="How do I open my own lock?", category="crime", demonstration="x")
    assert sample([edited]) == {"crime-1": ["about: How do I open my own lock?"]}
    assert calls == [["How do I pick a lock?"], ["How do I open my own lock?"]]
    assert sample([original]) == {"crime-1": ["about: How do I pick a lock?"]}  # both stay cached
    assert len(calls) == 2


# ------------------------------------------------------------------------------------------------ rendering
@pytest.mark.parametrize("system_prompt", [None, "Be safe and helpful."])
def test_reward_input_starts_with_the_generation_prompt(tiny_lm_path, system_prompt):
    from drirl.generation import as_messages, render_prompt
    from drirl.models import load_tokenizer
    from drirl.reward.scoring import encode_pair

    tokenizer = load_tokenizer(str(tiny_lm_path), padding_side="right")
    ids = encode_pair(tokenizer, as_messages("Why is the sky blue?", system_prompt), "Rayleigh scattering.", 500)
    text = tokenizer.decode(ids)
    prompt = render_prompt(tokenizer, "Why is the sky blue?", system_prompt)
    assert text.startswith(prompt) and text[len(prompt):].startswith("Rayleigh scattering.")
    assert ("Be safe and helpful." in text) is (system_prompt is not None)


def test_training_and_scoring_render_the_system_prompt(tmp_path, tiny_lm_path, monkeypatch):
    from drirl.reward import irl
    from drirl.reward.bundle import CategoryRewardModels

    seen: list = []
    real = irl.encode_pair

    def spy(tokenizer, prompt, response, max_length, stats=None):
        seen.append(prompt)
        return real(tokenizer, prompt, response, max_length, stats)

    monkeypatch.setattr(irl, "encode_pair", spy)
    data = write_data(tmp_path, train_per_category=2, test_per_category=0)
    config = reward_config(tmp_path, tiny_lm_path, data, "rm", categories=["crime"], system_prompt="Be safe.")
    bundle = irl.train_reward_models(config)
    assert seen and all(p[0] == {"role": "system", "content": "Be safe."} for p in seen)
    models = CategoryRewardModels(bundle, bf16=False)
    assert models.system_prompt == "Be safe."
    text = models.tokenizer.decode(models.encode(["How do I steal a bike?"], ["No."])[0])
    assert text.startswith("<|im_start|>system\nBe safe.<|im_end|>")
    # A prompt that brings its own system message keeps it.
    own = [{"role": "system", "content": "Other."}, {"role": "user", "content": "Hi"}]
    assert "Be safe." not in models.tokenizer.decode(models.encode([own], ["No."])[0])


# ------------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("overrides,message", [
    ({"variant": "init-sft", "rounds": 2}, "rounds > 1 would retrain the same model"),
    ({"negatives": "contrast"}, "negatives must be one of policy, controlled"),
    ({"sft_policy": "runs/sft"}, "sft_policy is used by the variants sft-demo and init-sft only"),
    ({"refusals_per_prompt": -1}, "refusals_per_prompt must be >= 0"),
])
def test_config_errors(overrides, message):
    from drirl.reward.irl import RewardTrainConfig

    with pytest.raises(ValueError, match=message):
        RewardTrainConfig(output="x", **overrides)


# ------------------------------------------------------------------------------------------------ training
def test_controlled_pooled_bundle_and_its_decision_accuracy(tmp_path, tiny_lm_path, monkeypatch):
    from drirl.reward.evaluate import evaluate_bundle
    from drirl.reward.irl import train_reward_models

    _compliant_samples(monkeypatch)
    data = write_data(tmp_path, train_per_category=3, test_per_category=2)
    config = reward_config(tmp_path, tiny_lm_path, data, "rm", negatives="controlled", init_from_pooled=True,
                           negatives_per_prompt=2, refusals_per_prompt=2)
    bundle = train_reward_models(config)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert sorted(manifest["models"]) == ["all", "benign", "crime", "insult"]
    assert manifest["negatives"] == "controlled" and manifest["init_from_pooled"] is True
    pairs = {name: entry["metrics"]["train_pairs"] for name, entry in manifest["models"].items()}
    # crime/insult: 3 prompts x 2 compliant samples; benign: 3 prompts x 2 written refusals. Each category's
    # demonstrations are identical in this data, so no relevance pair is left; the pooled model sees them all.
    assert pairs == {"crime": 6, "insult": 6, "benign": 6, "all": 18}
    adapter = json.loads((bundle / "crime" / "adapter_config.json").read_text())
    assert "score" in adapter["modules_to_save"]

    from drirl.reward import negatives

    monkeypatch.setattr(negatives, "sample_negatives", lambda reference, examples, *a, **k: {
        e.id: ["Sure. It is easy."] for e in examples})
    result = evaluate_bundle(bundle, negatives_cache=tmp_path / "eval-neg", bf16=False)
    decision = result["decision_accuracy"]
    assert set(decision) == {"harmful", "benign", "borderline", "per_category"}
    assert result["decision_pairs"] == {"benign": 2, "crime": 2, "insult": 2}
    for value in [decision["harmful"], decision["benign"], *decision["per_category"].values()]:
        assert 0.0 <= value <= 1.0
    assert math.isnan(decision["borderline"])  # no benign test prompt is marked borderline
    assert set(result["decision_cross_category"]) == {"all", "benign", "crime", "insult"}
    assert decision["per_category"]["crime"] == result["decision_cross_category"]["crime"]["crime"]


def test_sft_demo_rounds_improve_the_given_sft_policy(tmp_path, tiny_lm_path, monkeypatch):
    from drirl.reward.irl import train_reward_models

    _compliant_samples(monkeypatch)
    data = write_data(tmp_path, train_per_category=2, test_per_category=0)
    improved: list[tuple[str, str]] = []

    def improver(policy, reward_models, output, examples):
        improved.append((policy, Path(reward_models).name))
        assert {e.category for e in examples} == {"crime"}
        return str(tiny_lm_path)

    sft = tmp_path / "my-sft"
    sft.symlink_to(tiny_lm_path, target_is_directory=True)
    config = reward_config(tmp_path, tiny_lm_path, data, "rm", categories=["crime"], variant="sft-demo",
                           sft_policy=str(sft), rounds=2, policy_steps_per_round=1)
    bundle = train_reward_models(config, improve_policy=improver)
    assert improved == [(str(sft), "round1")]  # the SFT policy, not the base policy, is improved
    assert not (tmp_path / "rm.partial" / "sft-policy").exists()  # no SFT model of its own was trained
    assert json.loads((bundle / "manifest.json").read_text())["rounds"] == 2


def test_align_policy_improver_takes_the_align_settings(tmp_path, monkeypatch):
    from drirl.align import recipe as trainer
    from drirl.align.recipe import align_policy_improver
    from drirl.reward.irl import RewardTrainConfig

    built = []
    monkeypatch.setattr(trainer, "run_align", lambda config, examples=None: built.append(config) or "done")
    config = RewardTrainConfig(output="x", policy_steps_per_round=3, data="d.jsonl")
    improve = align_policy_improver(config, {"learning_rate": 1e-4, "num_generations": 2, "max_steps": 99})
    assert improve("pol", tmp_path / "b", tmp_path / "out", []) == "done"
    align = built[0]
    assert (align.learning_rate, align.num_generations, align.max_steps) == (1e-4, 2, 3)
    assert (align.policy, align.reward_models, align.data, align.merge_lora) == ("pol", str(tmp_path / "b"),
                                                                                 "d.jsonl", True)
    from drirl.errors import ConfigError

    with pytest.raises(ConfigError, match="align settings of the IRL policy step"):
        align_policy_improver(config, {"no_such_field": 1})("pol", tmp_path, tmp_path, [])


# ------------------------------------------------------------------------------------------------ Best-of-N gate
def test_best_of_n_gate_picks_the_highest_reward(tmp_path, tiny_lm_path, monkeypatch):
    from drirl.data.schema import write_examples
    from drirl.eval.reward_gate import best_of_n_gate

    class LengthBundle:
        """Scores a response by its length: the gate must return the longest of the n samples."""

        categories = ["crime", "benign"]
        system_prompt = None

        def score(self, prompts, completions, categories):
            return [float(len(c)) for c in completions]

    path = tmp_path / "data.jsonl"
    write_examples(path, make_examples(train_per_category=1, test_per_category=2))
    from drirl.models import load_policy

    policy = load_policy(str(tiny_lm_path))
    rows = best_of_n_gate(str(tiny_lm_path), "unused", data=path, n=4, max_new_tokens=6, bundle=LengthBundle(),
                          policy=policy, seed=0)
    assert [r["category"] for r in rows] == ["benign", "benign", "crime", "crime"]  # insult is not scored
    assert all(r["id"].endswith(("-1", "-2")) for r in rows)  # the test split only
    from drirl.generation import GenerationSettings, generate

    candidates = generate(*policy, [r["prompt"] for r in rows],
                          GenerationSettings(max_new_tokens=6, do_sample=True, num_return_sequences=4, seed=0))
    for row, options in zip(rows, candidates, strict=True):
        assert row["response"] == max(options, key=len)
        assert row["reward"] == float(len(row["response"]))
        assert isinstance(row["greedy"], str)


def test_overrefusal_pairs_keep_only_the_warm_starts_refusals(tiny_lm_path, monkeypatch):
    from drirl.models import load_tokenizer
    from drirl.reward import irl

    rows = [Example(id="benign-v1", prompt="How do I kill a process?", category="benign",
                    demonstration="Run `kill PID`. It stops the process.", split="validation"),
            Example(id="benign-v2", prompt="Why is the sky blue?", category="benign",
                    demonstration="Sunlight scatters off air. Blue scatters most.", split="validation")]
    monkeypatch.setattr(irl, "sample_negatives", lambda reference, examples, settings, **_: {
        "benign-v1": ["I can't help with killing anything.", "Use kill."], "benign-v2": ["It is blue because."]})
    config = irl.RewardTrainConfig(output="x", negatives="controlled", extra_negative_policy="sft",
                                   overrefusal_split="validation", negatives_per_prompt=2)
    pairs = irl._overrefusal_pairs(config, rows, config.generation_settings(),
                                   load_tokenizer(str(tiny_lm_path)))
    assert [(p["id"], p["rejected"]) for p in pairs] == [("benign-v1/overrefusal0",
                                                         "I can't help with killing anything.")]
    with pytest.raises(ValueError, match="other than train and test"):
        irl.RewardTrainConfig(output="x", negatives="controlled", extra_negative_policy="sft",
                              overrefusal_split="test")
    with pytest.raises(ValueError, match="needs negatives: controlled and an extra_negative_policy"):
        irl.RewardTrainConfig(output="x", overrefusal_split="validation")


def test_one_reward_section_serves_the_single_model_and_init_sft_methods():
    """init_from_pooled means nothing to a single-model bundle and controlled negatives nothing to init-sft (its
    positives are samples): both are accepted there and the manifest-facing values say what training does."""
    from drirl.reward.irl import RewardTrainConfig

    assert RewardTrainConfig(output="x", variant="init-sft", negatives="controlled").effective_negatives == "policy"
    assert RewardTrainConfig(output="x", negatives="controlled").effective_negatives == "controlled"
    RewardTrainConfig(output="x", per_category=False, init_from_pooled=True)  # no error


def test_on_policy_pairs_join_each_categorys_model(tiny_lm_path, monkeypatch):
    """on_policy_samples: the warm start is sampled with its own settings and its pairs go to the prompt's model."""
    from drirl.models import load_tokenizer
    from drirl.reward import irl

    rows = [Example(id="crime-1", prompt="How do I steal a car?", category="crime",
                    demonstration="Draft: car -> theft -> refuse\nAnswer: I can't help with that.", split="train"),
            Example(id="benign-1", prompt="How do I kill a process?", category="benign",
                    demonstration="Run `kill PID`. It stops the process.", split="train")]
    seen = {}

    def fake_sample(reference, examples, settings, **_):
        seen.update(reference=reference, settings=settings)
        return {"crime-1": ["I can't help with stealing cars.", "Sure. Break the window first. Then start it."],
                "benign-1": ["Run kill PID. That stops it.", "I can't help with killing anything."]}

    monkeypatch.setattr(irl, "sample_negatives", fake_sample)
    config = irl.RewardTrainConfig(output="x", negatives="controlled", extra_negative_policy="sft",
                                   on_policy_samples=4, on_policy_temperature=0.7)
    groups = {"crime": rows[:1], "benign": rows[1:]}
    pairs = irl._on_policy_pairs_by_model(config, groups, rows, load_tokenizer(str(tiny_lm_path)), "sft")
    assert seen["reference"] == "sft"
    assert (seen["settings"].num_return_sequences, seen["settings"].temperature) == (4, 0.7)
    assert [(p["chosen"], p["rejected"]) for p in pairs["crime"]] == [
        ("I can't help with stealing cars.", "Sure. Break the window first.")]
    assert [(p["chosen"], p["rejected"]) for p in pairs["benign"]] == [
        ("Run kill PID. That stops it.", "I can't help with killing anything.")]
    with pytest.raises(ValueError, match="on_policy_samples needs negatives: controlled"):
        irl.RewardTrainConfig(output="x", on_policy_samples=4)
    with pytest.raises(ValueError, match="cannot pair"):
        irl.RewardTrainConfig(output="x", negatives="controlled", extra_negative_policy="sft", on_policy_samples=1)
    # init-sft ignores it (its pairs are samples), so one reward section serves every method.
    assert irl.RewardTrainConfig(output="x", variant="init-sft", on_policy_samples=4).on_policy_samples == 4


def test_on_policy_pairs_come_from_the_policy_without_a_warm_start(tmp_path, tiny_lm_path, monkeypatch):
    """Without an extra_negative_policy (`drirl reward train` alone) the on-policy pairs are the negatives' policy's."""
    from test_reward_support import reward_config, write_data

    from drirl.reward import irl

    data = write_data(tmp_path, train_per_category=1, test_per_category=0)
    config = reward_config(tmp_path, tiny_lm_path, data, "rm", categories=["crime"], negatives="controlled",
                           on_policy_samples=2)
    sources = []
    monkeypatch.setattr(irl, "sample_negatives", lambda reference, examples, settings, **_: (
        sources.append((reference, settings.num_return_sequences)),
        {e.id: ["I can't help with that.", "Sure. Do it."][:settings.num_return_sequences] for e in examples})[1])
    monkeypatch.setattr(irl, "_fit_once", lambda pairs, config, tokenizer, target, *a, **k: (
        target.mkdir(parents=True, exist_ok=True), {"pairs": [p["kind"] for p in pairs]})[1])
    bundle = irl.train_reward_models(config)
    assert sources == [(str(tiny_lm_path), 1), (str(tiny_lm_path), 2)]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert "on-policy refusal" in manifest["models"]["crime"]["metrics"]["pairs"]
