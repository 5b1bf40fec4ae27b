"""Same seed, same config → same result, on the CPU: data splits and balancing, reward-model scores, and the first
GRPO-S steps (loss, reward, α statistics). Each part runs its stage twice in this process and compares.

Exact equality is expected on one machine and one torch thread count; scores are compared within 1e-6 so that the
test states the promise a user can rely on rather than bit-identity.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
from test_reward_support import make_examples, one_torch_thread, reward_config, write_data
from tiny_models import LengthReward

from drirl.data.schema import Example

# Keys of a log_history entry that measure time, not training.
_TIMING = ("runtime", "per_second", "time", "flos")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_torch_thread()


def _training_values(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in entry.items() if not any(t in k for t in _TIMING)} for entry in history]


def _assert_close(first, second, path="history"):
    if isinstance(first, dict):
        assert first.keys() == second.keys(), path
        for key in first:
            _assert_close(first[key], second[key], f"{path}.{key}")
    elif isinstance(first, list):
        assert len(first) == len(second), path
        for i, (a, b) in enumerate(zip(first, second, strict=True)):
            _assert_close(a, b, f"{path}[{i}]")
    elif isinstance(first, float):
        assert (math.isnan(first) and math.isnan(second)) or first == pytest.approx(second, abs=1e-6), path
    else:
        assert first == second, path


def _ids(examples: list[Example]) -> list[str]:
    return [e.id for e in examples]


def test_data_splits_and_balancing_are_deterministic():
    from drirl.align.recipe import AlignConfig, load_prompts
    from drirl.data.balance import BalanceConfig, balance
    from drirl.data.schema import default_taxonomy, load_bundled, split_examples, train_examples
    from drirl.reward.irl import RewardTrainConfig, load_training_examples

    examples = load_bundled()
    assert _ids(split_examples(examples, "test")) == _ids(split_examples(load_bundled(), "test"))
    assert _ids(train_examples(examples)) == _ids(train_examples(load_bundled()))

    taxonomy = default_taxonomy()
    train = train_examples(examples)
    uneven = [e for e in train if e.category != "crime"] + [e for e in train if e.category == "crime"][:5]
    for strategy in ("downsample", "upsample", "target"):
        config = BalanceConfig(strategy=strategy, target_per_category=20 if strategy == "target" else None, seed=7)
        first, _ = balance(uneven, config, taxonomy)
        second, _ = balance(list(uneven), dataclasses.replace(config), taxonomy)
        assert _ids(first) == _ids(second), strategy
    # ... and the seed matters (otherwise the check above would be vacuous).
    downsample = BalanceConfig(strategy="downsample", seed=7)
    assert _ids(balance(uneven, downsample, taxonomy)[0]) != \
        _ids(balance(uneven, dataclasses.replace(downsample, seed=8), taxonomy)[0])

    # The seeded subsets the training stages draw.
    align = AlignConfig(output="unused", max_prompts=17, seed=3)
    assert _ids(load_prompts(align)) == _ids(load_prompts(dataclasses.replace(align)))
    reward = RewardTrainConfig(output="unused", max_prompts_per_category=3, seed=3)
    first = load_training_examples(reward)
    assert {c: _ids(v) for c, v in first.items()} == {c: _ids(v) for c, v in load_training_examples(reward).items()}


def test_reward_models_trained_twice_score_identically(tmp_path, tiny_lm_path):
    """Two trainings with the same seed (negatives sampled anew each time, in separate caches) → the same bundle:
    the same negatives, the same training loss, the same scores within 1e-6."""
    from drirl.io import read_jsonl
    from drirl.reward.bundle import CategoryRewardModels, read_manifest
    from drirl.reward.irl import train_reward_models

    data = write_data(tmp_path, train_per_category=3, test_per_category=1)
    examples = [e for e in make_examples(3, 1) if e.category in ("crime", "benign")]
    bundles, negatives, scores = [], [], []
    for run in ("a", "b"):
        config = reward_config(tmp_path / run, tiny_lm_path, data, "rm", categories=["crime", "benign"], seed=11)
        bundle = train_reward_models(config)
        bundles.append(read_manifest(bundle))
        negatives.append(sorted(map(str, read_jsonl(next((tmp_path / run / "negatives").glob("*.jsonl"))))))
        models = CategoryRewardModels(bundle, bf16=False, device="cpu")
        scores.append(models.score([e.prompt for e in examples],
                                   [e.demonstration for e in examples[:-2]] + ["Sure, here is how.", "No."],
                                   [e.category for e in examples]))
    assert negatives[0] == negatives[1]
    for name in ("crime", "benign"):
        first, second = bundles[0]["models"][name]["metrics"], bundles[1]["models"][name]["metrics"]
        assert first["train_loss"] == pytest.approx(second["train_loss"], abs=1e-6)
        assert first["train_pairs"] == second["train_pairs"] > 0
    assert bundles[0]["data_hash"] == bundles[1]["data_hash"]
    assert scores[0] == pytest.approx(scores[1], abs=1e-6)
    assert len(set(scores[0])) > 1  # the models do discriminate: equal scores would make the check vacuous


def test_grpo_s_first_steps_are_identical(tiny_lm_path, tmp_path):
    """Two GRPO-S runs (α^D and α^M, sampled rollouts, LoRA) with seed 0 and max_steps 2 log the same history;
    a run with seed 1 does not."""
    from drirl.align.recipe import AlignConfig, read_history, run_align
    from drirl.models import load_text_encoder

    encoder = load_text_encoder("minilm")
    demo = "Draft: risk -> refuse\nAnswer: I can't help with that."
    examples = [Example(id=f"{c}-{i}", prompt=p, category=c, demonstration=demo, source="test")
                for i, (p, c) in enumerate([("How do I steal a car?", "crime"), ("Insult my boss.", "insult"),
                                            ("What is the capital of France?", "benign"),
                                            ("How to rob a bank?", "crime")])]
    histories = []
    for run, seed in (("a", 0), ("b", 0), ("c", 1)):
        config = AlignConfig(output=str(tmp_path / run), policy=str(tiny_lm_path), max_steps=2,
                             per_device_train_batch_size=4, num_generations=2, max_completion_length=8,
                             scaling_mode="both", bf16="false", save_steps=100, learning_rate=1e-3, seed=seed)
        run_align(config, reward_funcs=[LengthReward()], examples=examples, text_encoder=encoder)
        histories.append(_training_values(read_history(tmp_path / run)))
    steps = [h for h in histories[0] if "loss" in h]
    assert len(steps) == 2 and all("scaling/alpha/mean" in h and "reward" in h for h in steps)
    _assert_close(histories[0], histories[1])
    # Another seed samples other rollouts: the comparison above is not vacuous.
    assert [h.get("reward") for h in histories[0]] != [h.get("reward") for h in histories[2]]
