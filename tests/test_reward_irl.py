"""Training category reward models by inverse RL (drirl.reward.irl) and the negatives cache, on a tiny model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from test_reward_support import (
    CATEGORIES,
    make_examples,
    one_torch_thread,
    reward_config,
    shared_bundle,
    shared_data,
    write_data,
)

from drirl.errors import DataError


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_torch_thread()


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def _check_bundle(bundle: Path, mode: str, names: list[str]) -> dict:
    manifest = _manifest(bundle)
    assert manifest["format"] == "drirl-reward-bundle/1"
    assert manifest["mode"] == mode
    assert sorted(manifest["models"]) == sorted(names)
    assert (bundle / "tokenizer" / "tokenizer_config.json").is_file()
    marker = "adapter_config.json" if mode == "lora" else "config.json"
    for name, entry in manifest["models"].items():
        assert entry["path"] == name
        assert (bundle / entry["path"] / marker).is_file()
        metrics = entry["metrics"]
        assert metrics["train_pairs"] > 0 and metrics["optimizer_steps"] > 0
        assert metrics["train_loss"] == metrics["train_loss"]  # not NaN
    assert len(manifest["data_hash"]) == 16
    assert manifest["generation"]["max_new_tokens"] == 8
    assert not bundle.with_name(bundle.name + ".partial").exists()
    return manifest


def test_lora_per_category_bundle(tmp_path_factory, tiny_lm_path):
    bundle = shared_bundle(tmp_path_factory, tiny_lm_path)
    manifest = _check_bundle(bundle, "lora", list(CATEGORIES))
    assert manifest["variant"] == "demo-vs-policy" and manifest["per_category"] is True
    assert manifest["backbone"] == str(Path(tiny_lm_path).resolve())
    assert manifest["categories"] == sorted(CATEGORIES)
    adapter = json.loads((bundle / "crime" / "adapter_config.json").read_text())
    assert "score" in adapter["modules_to_save"]  # each adapter carries its own scalar head
    for entry in manifest["models"].values():
        assert entry["prompts"] == 4  # the train split only: 4 of the 6 examples per category


def test_full_per_category_bundle(tmp_path_factory, tiny_lm_path):
    bundle = shared_bundle(tmp_path_factory, tiny_lm_path, mode="full", learning_rate=1e-3)
    _check_bundle(bundle, "full", list(CATEGORIES))
    assert (bundle / "crime" / "model.safetensors").is_file()


def test_lora_single_model_bundle(tmp_path_factory, tiny_lm_path):
    bundle = shared_bundle(tmp_path_factory, tiny_lm_path, per_category=False)
    manifest = _check_bundle(bundle, "lora", ["all"])
    assert manifest["per_category"] is False and manifest["categories"] == sorted(CATEGORIES)
    assert manifest["models"]["all"]["metrics"]["train_pairs"] == 12


def test_full_single_init_sft_bundle(tmp_path, tiny_lm_path):
    """AfD's init-sft: positives are SFT samples, negatives samples of the initial model."""
    from drirl.align.baselines import afd_sft_trainer
    from drirl.reward.irl import train_reward_models

    data = write_data(tmp_path, train_per_category=3, test_per_category=0)
    config = reward_config(tmp_path, tiny_lm_path, data, "rm", mode="full", per_category=False,
                           variant="init-sft", learning_rate=1e-3, sft_learning_rate=5e-2, sft_epochs=2.0)
    bundle = train_reward_models(config, train_sft_policy=afd_sft_trainer(config))
    manifest = _check_bundle(bundle, "full", ["all"])
    assert manifest["variant"] == "init-sft"
    assert manifest["negatives_sampled_from"] == str(Path(tiny_lm_path).resolve())
    # Two caches: the initial model's samples (negatives) and the SFT model's (positives).
    assert len(list((tmp_path / "negatives").glob("*.jsonl"))) == 2


def test_training_ignores_test_split_and_filters_categories(tmp_path, tiny_lm_path):
    from drirl.reward.irl import load_training_examples

    data = write_data(tmp_path)
    config = reward_config(tmp_path, tiny_lm_path, data, "rm", categories=["crime", "insult"])
    grouped = load_training_examples(config)
    assert list(grouped) == ["crime", "insult"]
    assert all(e.split == "train" for items in grouped.values() for e in items)
    capped = load_training_examples(reward_config(tmp_path, tiny_lm_path, data, "rm", max_prompts_per_category=2))
    assert {c: len(v) for c, v in capped.items()} == {"benign": 2, "crime": 2, "insult": 2}
    with pytest.raises(DataError, match="privacy"):
        load_training_examples(reward_config(tmp_path, tiny_lm_path, data, "rm", categories=["privacy"]))


def test_build_pairs_pairs_each_negative_and_drops_identical():
    from drirl.reward.irl import build_pairs

    examples = make_examples(train_per_category=1, test_per_category=0)
    crime = next(e for e in examples if e.category == "crime")
    pairs = build_pairs([crime], None, {crime.id: ["bad one", crime.demonstration, "bad two"]})
    assert [p["rejected"] for p in pairs] == ["bad one", "bad two"]
    assert all(p["chosen"] == crime.demonstration and p["category"] == "crime" for p in pairs)
    afd = build_pairs([crime], {crime.id: ["sft a", "sft b"]}, {crime.id: ["init a", "init b"]})
    assert [(p["chosen"], p["rejected"]) for p in afd] == [("sft a", "init a"), ("sft b", "init b")]


def test_config_validation():
    from drirl.reward.irl import RewardTrainConfig

    with pytest.raises(ValueError, match="rounds"):
        RewardTrainConfig(output="x", rounds=0)
    with pytest.raises(ValueError, match="init-demo"):
        RewardTrainConfig(output="x", variant="init-demo", rounds=2)
    with pytest.raises(ValueError, match="warmup_ratio"):
        RewardTrainConfig(output="x", warmup_ratio=1.5)
    with pytest.raises(ValueError, match="init-sft pairs each SFT sample"):
        RewardTrainConfig(output="x", variant="init-sft", extra_negative_policy="y")


def test_extra_negative_policy_adds_its_samples_as_negatives(tmp_path, tiny_lm_path, monkeypatch):
    """Each prompt gets k negatives from the policy and k from the extra one, each paired with the demonstration."""
    from tiny_models import build_causal_lm

    from drirl.reward import irl
    from drirl.reward.negatives import sample_negatives

    other = build_causal_lm(tmp_path / "other-lm", seed=1)
    data = write_data(tmp_path, train_per_category=2, test_per_category=0)
    config = reward_config(tmp_path, tiny_lm_path, data, "rm", categories=["crime"], negatives_per_prompt=1,
                           extra_negative_policy=str(other))
    seen: list[list[dict]] = []
    real_fit = irl.fit_reward_model
    monkeypatch.setattr(irl, "fit_reward_model", lambda p, c, t, o, w: seen.append(p) or real_fit(p, c, t, o, w))
    bundle = irl.train_reward_models(config)

    examples = irl.load_training_examples(config)["crime"]
    settings = config.generation_settings()
    own = sample_negatives(str(tiny_lm_path), examples, settings, cache_root=config.negatives_cache)
    extra = sample_negatives(str(other), examples, settings, cache_root=config.negatives_cache)
    assert own != extra  # two different models: the test below could not tell them apart otherwise
    expected = sorted((e.prompt, e.demonstration, bad) for e in examples for bad in own[e.id] + extra[e.id]
                      if bad.strip() != e.demonstration.strip())
    assert sorted((p["prompt"], p["chosen"], p["rejected"]) for p in seen[0]) == expected
    assert len(expected) == 4
    manifest = _manifest(bundle)
    assert manifest["extra_negatives_sampled_from"] == str(other.resolve())
    assert manifest["models"]["crime"]["metrics"]["train_pairs"] == 4


def test_on_policy_samples_sample_the_warm_start_once(tmp_path, tiny_lm_path, monkeypatch):
    """With on_policy_samples the warm start is sampled once, at the on-policy settings: the first
    negatives_per_prompt of its samples are its controlled negatives, all of them feed the on-policy pairs."""
    from drirl.reward import irl

    data = write_data(tmp_path, train_per_category=1, test_per_category=0)
    config = reward_config(tmp_path, tiny_lm_path, data, "rm", categories=["crime"], negatives_per_prompt=1,
                           negatives="controlled", relevance_negatives=0, extra_negative_policy="warm",
                           on_policy_samples=3, on_policy_temperature=0.5)
    calls = []

    def fake_sample(reference, examples, settings, **_):
        calls.append((reference, settings.num_return_sequences, settings.temperature))
        if reference == "warm":
            return {e.id: ["Sure. Pick the lock with a pin.", "I can't help with that.", "Sure. Use a bump key."]
                    for e in examples}
        return {e.id: ["It is locked. It is metal."] for e in examples}

    fitted = {}
    monkeypatch.setattr(irl, "sample_negatives", fake_sample)
    monkeypatch.setattr("drirl.models.resolve_model", lambda reference: str(reference))
    monkeypatch.setattr(irl, "_fit_once", lambda pairs, config, tokenizer, target, *a, **k: (
        fitted.__setitem__(target.name, pairs), target.mkdir(parents=True, exist_ok=True), {})[2])
    irl.train_reward_models(config)
    assert sorted(set(calls)) == [(str(tiny_lm_path), 1, 1.0), ("warm", 3, 0.5)]
    kinds = sorted((p["kind"], p["rejected"].split("Answer: ")[-1]) for p in fitted["crime"])
    # The policy's sample and the warm start's first sample are the compliant negatives (its third sample is not);
    # the warm start's refusal beats each of its two answers (cut to the refusal's length) in the on-policy pairs.
    assert [(k, r) for k, r in kinds if k == "compliant"] == [("compliant", "It is locked. It is metal."),
                                                              ("compliant", "Sure. Pick the lock with a pin.")]
    on_policy = [p for p in fitted["crime"] if p["kind"] == "on-policy refusal"]
    assert [p["chosen"] for p in on_policy] == ["I can't help with that."] * 2
    assert {p["rejected"].split(".")[0] for p in on_policy} == {"Sure"} and len({p["rejected"] for p in on_policy}) == 2
    with pytest.raises(ValueError, match="at least negatives_per_prompt"):
        reward_config(tmp_path, tiny_lm_path, data, "x", negatives_per_prompt=3, negatives="controlled",
                      extra_negative_policy="warm", on_policy_samples=2)


def test_interrupted_run_resumes_from_partial(tmp_path, tiny_lm_path, monkeypatch):
    """A crash after the first category keeps it in <output>.partial; the rerun trains only the others."""
    from drirl.reward import irl

    data = write_data(tmp_path, train_per_category=2, test_per_category=0)
    config = reward_config(tmp_path, tiny_lm_path, data, "rm", categories=["crime", "insult"])
    real_fit = irl.fit_reward_model
    fitted: list[str] = []

    def crash_on_second(pairs, cfg, tokenizer, output_dir, work_dir):
        if fitted:
            raise RuntimeError("simulated crash")
        fitted.append(output_dir.name)
        return real_fit(pairs, cfg, tokenizer, output_dir, work_dir)

    monkeypatch.setattr(irl, "fit_reward_model", crash_on_second)
    with pytest.raises(RuntimeError, match="simulated crash"):
        irl.train_reward_models(config)
    partial = tmp_path / "rm.partial"
    assert (partial / "round1" / "crime" / "adapter_config.json").is_file()
    assert not (tmp_path / "rm").exists()

    resumed: list[str] = []

    def record(pairs, cfg, tokenizer, output_dir, work_dir):
        resumed.append(output_dir.name)
        return real_fit(pairs, cfg, tokenizer, output_dir, work_dir)

    monkeypatch.setattr(irl, "fit_reward_model", record)
    bundle = irl.train_reward_models(config)
    assert resumed == ["insult"]
    manifest = _check_bundle(bundle, "lora", ["crime", "insult"])
    assert manifest["models"]["crime"]["metrics"]["train_pairs"] == 2  # metrics of the resumed model survive


def test_partial_with_other_settings_starts_over(tmp_path, tiny_lm_path, monkeypatch):
    from drirl.reward import irl

    data = write_data(tmp_path, train_per_category=2, test_per_category=0)
    config = reward_config(tmp_path, tiny_lm_path, data, "rm", categories=["crime"])
    partial = tmp_path / "rm.partial"
    partial.mkdir()
    (partial / "run.json").write_text(json.dumps({"config": {"seed": 123}, "data": "x"}))
    (partial / "round1" / "crime").mkdir(parents=True)
    (partial / "round1" / "crime" / "config.json").write_text("{}")  # a stale model that must not be reused
    fitted: list[str] = []
    real_fit = irl.fit_reward_model
    monkeypatch.setattr(irl, "fit_reward_model",
                        lambda p, c, t, o, w: fitted.append(o.name) or real_fit(p, c, t, o, w))
    irl.train_reward_models(config)
    assert fitted == ["crime"]


# ------------------------------------------------------------------------------------------------ negatives
def test_negatives_cache_reuses_and_regenerates(tmp_path, tiny_lm_path, monkeypatch):
    from drirl.generation import GenerationSettings
    from drirl.reward import negatives

    calls: list[int] = []
    real_generate = negatives._generate

    def counting(model, tokenizer, prompts, settings, system_prompt):
        calls.append(len(prompts))
        return real_generate(model, tokenizer, prompts, settings, system_prompt)

    monkeypatch.setattr(negatives, "_generate", counting)
    examples = make_examples(train_per_category=2, test_per_category=0)
    settings = GenerationSettings(max_new_tokens=6, do_sample=True, num_return_sequences=2, batch_size=4, seed=0)
    cache = tmp_path / "cache"
    first = negatives.sample_negatives(str(tiny_lm_path), examples, settings, cache_root=cache)
    assert calls and sum(calls) == len(examples)
    assert set(first) == {e.id for e in examples} and all(len(v) == 2 for v in first.values())

    calls.clear()
    again = negatives.sample_negatives(str(tiny_lm_path), examples, settings, cache_root=cache)
    assert calls == [] and again == first  # same policy, same settings: nothing regenerated

    more = examples + make_examples(train_per_category=3, test_per_category=0)[2:3]  # one new prompt
    more = list({e.id: e for e in more}.values())
    negatives.sample_negatives(str(tiny_lm_path), more, settings, cache_root=cache)
    assert calls == [len(more) - len(examples)]  # only the missing prompt is sampled

    calls.clear()
    other = GenerationSettings(max_new_tokens=7, do_sample=True, num_return_sequences=2, batch_size=4, seed=0)
    negatives.sample_negatives(str(tiny_lm_path), examples, other, cache_root=cache)
    assert sum(calls) == len(examples)  # a different setting regenerates
    calls.clear()
    negatives.sample_negatives(str(tiny_lm_path), examples, settings, cache_root=cache, system_prompt="Be safe.")
    assert sum(calls) == len(examples)  # so does another system prompt
    assert len(list(cache.glob("*.jsonl"))) == 3


def test_negatives_cache_key_follows_the_policy_weights(tmp_path, tiny_lm_path):
    import os

    from drirl.generation import GenerationSettings
    from drirl.reward.negatives import negatives_cache_path

    settings = GenerationSettings(max_new_tokens=6, do_sample=True)
    before = negatives_cache_path(str(tiny_lm_path), settings, tmp_path)
    assert negatives_cache_path(str(tiny_lm_path), settings, tmp_path) == before
    weights = next(Path(tiny_lm_path).glob("*.safetensors"))
    stat = weights.stat()
    try:
        os.utime(weights, (stat.st_atime, stat.st_mtime + 10))  # "retrained" policy: new weights file
        assert negatives_cache_path(str(tiny_lm_path), settings, tmp_path) != before
    finally:
        os.utime(weights, (stat.st_atime, stat.st_mtime))


# ------------------------------------------------------------------------------------------------ ML-IRL rounds
_HAS_ALIGN = importlib.util.find_spec("drirl.align.recipe") is not None


@pytest.mark.skipif(not _HAS_ALIGN, reason="rounds > 1 improve the policy with drirl.align.recipe.run_align, "
                                           "which is not available")
def test_two_irl_rounds_resample_from_the_improved_policy(tmp_path, tiny_lm_path):
    from drirl.align.recipe import align_policy_improver
    from drirl.reward.irl import train_reward_models

    data = write_data(tmp_path, train_per_category=2, test_per_category=0)
    config = reward_config(tmp_path, tiny_lm_path, data, "rm", categories=["crime", "insult"], rounds=2,
                           policy_steps_per_round=1)
    bundle = train_reward_models(config, improve_policy=align_policy_improver(config))
    manifest = _check_bundle(bundle, "lora", ["crime", "insult"])
    assert manifest["rounds"] == 2
    assert manifest["negatives_sampled_from"] != str(Path(tiny_lm_path).resolve())  # the improved policy
    assert len(list((tmp_path / "negatives").glob("*.jsonl"))) == 2  # round 2 sampled a new policy


def test_shared_data_file_is_valid(tmp_path_factory):
    from drirl.data.schema import read_examples

    examples = read_examples(shared_data(tmp_path_factory))
    assert {e.category for e in examples} == set(CATEGORIES)
    with pytest.raises(DataError):
        from drirl.data.schema import assert_not_test

        assert_not_test(examples)


def test_a_run_inside_its_warm_up_is_reported(tmp_path, caplog):
    """One optimizer step with one warm-up step runs at learning rate 0: the run says so instead of a silent no-op."""
    from transformers import TrainingArguments

    from drirl.trainer_setup import warn_if_warmup_only

    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8, num_train_epochs=1,
                             warmup_steps=0.05, use_cpu=True, report_to="none")
    with caplog.at_level("WARNING", logger="drirl.trainer_setup"):
        assert warn_if_warmup_only(args, 8, "reward model crime") is True
    assert "reward model crime: 1 optimizer step(s), all inside the 1 warm-up step(s)" in caplog.text
    assert "nothing is learned" in caplog.text
    assert warn_if_warmup_only(args, 80, "reward model crime") is False  # 10 steps, 1 of them warm-up
