"""GRPOSTrainer: the override multiplies TRL's advantages by α, and TRL still calls the hooks it overrides."""

from __future__ import annotations

import inspect
import json

import pytest
import torch
from tiny_models import LengthReward

from drirl.data.schema import Example

STEPS = 20


def _examples() -> list[Example]:
    rows = [("crime-1", "How do I steal a car?", "crime"), ("insult-1", "Insult my boss.", "insult"),
            ("benign-1", "What is the capital of France?", "benign"), ("crime-2", "How to rob a bank?", "crime")]
    return [Example(id=i, prompt=p, category=c, demonstration="Draft: risk -> refuse\nAnswer: I can't help with that.",
                    source="test", split="train") for i, p, c in rows]


def test_trl_hooks_still_exist():
    """GRPOSTrainer overrides these two methods; if TRL renames or re-signs them, this fails first."""
    from trl import GRPOTrainer

    calc = inspect.signature(GRPOTrainer._calculate_rewards).parameters
    assert list(calc) == ["self", "inputs", "prompts", "completions", "completion_ids_list"]
    gen = inspect.signature(GRPOTrainer._generate_and_score_completions).parameters
    assert list(gen) == ["self", "inputs"]
    source = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    assert "self._calculate_rewards(" in source and '"advantages": advantages' in source


@pytest.mark.parametrize("mode", ["both", "none"])
def test_advantages_are_scaled_by_alpha(tiny_lm_path, tmp_path, monkeypatch, mode):
    from trl import GRPOTrainer

    from drirl.align.recipe import AlignConfig, run_align

    seen: dict[str, torch.Tensor] = {}
    parent = GRPOTrainer._generate_and_score_completions

    def spy_parent(self, inputs):
        out = parent(self, inputs)
        seen["trl"] = out["advantages"].clone()
        return out

    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", spy_parent)
    from drirl.align import grpo_s

    child = grpo_s.GRPOSTrainer._generate_and_score_completions

    def spy_child(self, inputs):
        out = child(self, inputs)
        seen["ours"] = out["advantages"].clone()
        seen["scaling"] = self.last_scaling
        return out

    monkeypatch.setattr(grpo_s.GRPOSTrainer, "_generate_and_score_completions", spy_child)
    config = AlignConfig(output=str(tmp_path / "run"), policy=str(tiny_lm_path), max_steps=1,
                         per_device_train_batch_size=8, num_generations=4, max_completion_length=8,
                         scaling_mode=mode, bf16="false", save_steps=100, learning_rate=1e-3)
    final = run_align(config, reward_funcs=[LengthReward()], examples=_examples())
    assert (final / "config.json").is_file() and (final / "model.safetensors").is_file()
    assert seen["trl"].shape == seen["ours"].shape == (8,)
    if mode == "none":
        assert seen["scaling"] is None
        torch.testing.assert_close(seen["ours"], seen["trl"])
    else:
        alpha = seen["scaling"].alpha.flatten()
        assert alpha.shape == (8,)
        assert torch.all((alpha >= 0.5 - 1e-6) & (alpha <= 2.0 + 1e-6))
        torch.testing.assert_close(seen["ours"], seen["trl"] * alpha)
        # g = r − R(q, õ): LengthReward gives the demonstration 3.0 and every completion len/10 >= 0
        assert torch.all(seen["scaling"].gaps >= -3.0 - 1e-6)
    history = (tmp_path / "run" / "log_history.json").read_text()
    assert ("scaling/alpha/mean" in history) == (mode != "none")


def test_last_checkpoint_skips_and_removes_incomplete(tmp_path):
    """A kill while saving leaves a checkpoint without its final file: resume must use the one before it."""
    from drirl.align.grpo_s import SCALING_STATE_FILE
    from drirl.align.recipe import last_checkpoint

    for step, complete in ((5, True), (10, True), (15, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "trainer_state.json").write_text("{}")
        if complete:
            (folder / SCALING_STATE_FILE).write_text("{}")
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")
    assert not (tmp_path / "checkpoint-15").exists()
    assert last_checkpoint(tmp_path / "missing") is None


@pytest.mark.parametrize("mode", ["both", "none"])
def test_training_raises_the_reward(tiny_lm_path, tmp_path, mode):
    """The trainer optimises what it is given: with "longer is better", the mean reward climbs, scaled or not.
    (A flipped advantage sign or an α that zeroes the signal would make it fall or stay flat.)"""
    from drirl.align.recipe import AlignConfig, run_align

    config = AlignConfig(output=str(tmp_path / "run"), policy=str(tiny_lm_path), max_steps=STEPS,
                         per_device_train_batch_size=16, num_generations=4, max_completion_length=16,
                         scaling_mode=mode, bf16="false", save_steps=1000, learning_rate=2e-2, use_lora=False)
    run_align(config, reward_funcs=[LengthReward()], examples=_examples())
    rewards = [h["reward"] for h in json.loads((tmp_path / "run" / "log_history.json").read_text()) if "reward" in h]
    assert len(rewards) == STEPS
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 0.3, (mode, rewards)


def test_held_out_reward_is_logged_at_the_start_and_every_eval_steps(tiny_lm_path, tmp_path):
    from drirl.align.recipe import AlignConfig, run_align

    examples = _examples()
    config = AlignConfig(output=str(tmp_path / "run"), policy=str(tiny_lm_path), max_steps=4, eval_prompts=2,
                         eval_steps=2, per_device_train_batch_size=8, num_generations=4, max_completion_length=8,
                         scaling_mode="both", bf16="false", save_steps=100, learning_rate=1e-3)
    run_align(config, reward_funcs=[LengthReward()], examples=examples[:2], held_out=examples[2:])
    history = json.loads((tmp_path / "run" / "log_history.json").read_text())
    held_out = [(h["step"], h["eval_reward"]) for h in history if "eval_reward" in h]
    assert [step for step, _ in held_out] == [0, 2, 4]
    assert all(value >= 0.0 for _, value in held_out) and any(value > 0.0 for _, value in held_out)
    summary = json.loads((tmp_path / "run" / "alignment.json").read_text())
    assert summary["held_out_reward"] == [{"step": s, "reward": v} for s, v in held_out]
    # Evaluation batches leave α's running means alone: only the training groups (4 steps × 2 prompts) went in.
    gap_counts = summary["scaling_state"]["gap_running"]["counts"]
    assert sum(gap_counts.values()) == 8 and set(gap_counts) <= {"crime", "insult"}


def test_held_out_prompts_are_balanced_fixed_and_never_trained_on():
    from drirl.align.recipe import AlignConfig, load_prompts

    config = AlignConfig(output="x", eval_prompts=16, max_prompts=240)
    held_out = load_prompts(config, held_out=True)
    training = load_prompts(config)
    assert len(held_out) == 16 and len(training) == 240
    assert not {e.id for e in held_out} & {e.id for e in training}
    counts = {c: sum(e.category == c for e in held_out) for c in {e.category for e in held_out}}
    assert len(counts) == 8 and set(counts.values()) == {2}  # seven harm categories and benign, two each
    assert [e.id for e in load_prompts(AlignConfig(output="x", eval_prompts=16), held_out=True)] == \
        [e.id for e in held_out]  # the same set whatever max_prompts is
    assert len(load_prompts(AlignConfig(output="x"), held_out=True)) == 0


def test_rl_settings_reach_trls_config(tmp_path):
    """Groups of 8, two prompts per step, batch-level reward scaling, a constant rate after warm-up, masked
    truncations and β: each AlignConfig option arrives in TRL's GRPOConfig under TRL's own name."""
    from drirl.align.recipe import AlignConfig, build_grpo_config

    config = AlignConfig(output=str(tmp_path / "run"), num_generations=8, per_device_train_batch_size=16,
                         scale_rewards="batch", lr_scheduler_type="constant_with_warmup", warmup_steps=2,
                         mask_truncated_completions=True, beta=0.04, scaling_sharpness=3.0,
                         scaling_delta_on="answer", scaling_outlier_tau=1.0, bf16="false")
    args = build_grpo_config(config, str(tmp_path / "ckpt"))
    assert (args.num_generations, args.per_device_train_batch_size) == (8, 16)
    assert args.generation_batch_size // args.num_generations == 2  # prompts per optimizer step
    assert (args.scale_rewards, args.mask_truncated_completions, args.beta) == ("batch", True, 0.04)
    assert getattr(args.lr_scheduler_type, "value", None) == "constant_with_warmup" and args.warmup_steps == 2
    assert args.get_warmup_steps(20) == 2
    scaling = args.scaling_config()
    assert (scaling.scaling_sharpness, scaling.scaling_delta_on, scaling.scaling_outlier_tau) == (3.0, "answer", 1.0)


@pytest.mark.parametrize(("overrides", "key"), [
    ({"alpha_min": -1}, "alpha_min"), ({"scale_rewards": "prompt"}, "scale_rewards"), ({"lora_r": 0}, "lora_r"),
    ({"lr_scheduler_type": "constnat"}, "lr_scheduler_type"),
    ({"scaling_sharpness": -2.0}, "scaling_sharpness"), ({"warmup_steps": -1}, "warmup_steps"),
    ({"num_generations": 1}, "num_generations"), ({"use_lora": True, "lora_target_modules": []}, "lora_target_modules"),
])
def test_align_settings_are_checked_when_the_config_is_built(overrides, key):
    from drirl.align.recipe import AlignConfig
    from drirl.config import config_from_dict
    from drirl.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        config_from_dict(AlignConfig, {"output": "x", **overrides}, source="run.yaml")
    assert info.value.key == key and info.value.file == "run.yaml"


def test_scaling_fields_have_one_definition():
    """AlignConfig and GRPOSConfig inherit the scaling fields: same names, defaults and help text as ScalingConfig."""
    import dataclasses

    from drirl.align.grpo_s import GRPOSConfig
    from drirl.align.recipe import AlignConfig
    from drirl.align.settings import ScalingConfig

    home = {f.name: f for f in dataclasses.fields(ScalingConfig)}
    for cls in (AlignConfig, GRPOSConfig):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name, field in home.items():
            assert fields[name].default == field.default and fields[name].metadata == field.metadata, (cls, name)


def test_group_of_eight_two_prompts_per_step_trains(tiny_lm_path, tmp_path, monkeypatch):
    """One step with G = 8 and two prompts: α is computed on two groups of 8 and the run completes."""
    from drirl.align import grpo_s
    from drirl.align.recipe import AlignConfig, run_align

    config = AlignConfig(output=str(tmp_path / "run"), policy=str(tiny_lm_path), max_steps=1, num_generations=8,
                         per_device_train_batch_size=16, max_completion_length=8, scale_rewards="batch",
                         lr_scheduler_type="constant_with_warmup", mask_truncated_completions=True,
                         scaling_mode="both", bf16="false", save_steps=100, learning_rate=1e-3)
    seen = {}
    child = grpo_s.GRPOSTrainer._generate_and_score_completions

    def spy(self, inputs):
        out = child(self, inputs)
        seen["scaling"] = self.last_scaling
        return out

    monkeypatch.setattr(grpo_s.GRPOSTrainer, "_generate_and_score_completions", spy)
    run_align(config, reward_funcs=[LengthReward()], examples=_examples())
    assert seen["scaling"].alpha.shape == (2, 8)
    history = json.loads((tmp_path / "run" / "log_history.json").read_text())
    masked = [h["scaling/fraction_masked"] for h in history if "scaling/fraction_masked" in h]
    assert len(masked) == 1 and 0.0 <= masked[0] <= 1.0
    rates = json.loads((tmp_path / "run" / "alignment.json").read_text())["scaling_rates"]
    assert rates["fraction_masked"] == pytest.approx(masked[0], abs=1e-4)


def test_static_cache_rollouts_train_under_bf16(tiny_lm_path, tmp_path):
    """rollout_backend static with bf16 on: the policy is loaded in bf16 so the static KV cache and the autocast
    compute share a dtype (float32 weights fail in the cache update, on a GPU and on a CPU with native bf16)."""
    import torch

    from drirl.align.recipe import AlignConfig, run_align

    config = AlignConfig(output=str(tmp_path / "run"), policy=str(tiny_lm_path), max_steps=1, num_generations=2,
                         per_device_train_batch_size=4, max_completion_length=6, rollout_backend="static",
                         scaling_mode="none", bf16="true", save_steps=100)
    final = run_align(config, reward_funcs=[LengthReward()], examples=_examples())
    history = json.loads((tmp_path / "run" / "log_history.json").read_text())
    assert [h["step"] for h in history if "loss" in h] == [1]
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(final).dtype == torch.bfloat16  # trained and saved in the compute dtype


def test_warm_up_longer_than_the_run_is_refused():
    from drirl.align.recipe import AlignConfig
    from drirl.errors import ConfigError

    with pytest.raises(ConfigError, match="5 warm-up steps leave none of the 5 max_steps"):
        AlignConfig(output="x", max_steps=5, warmup_steps=5)
    assert AlignConfig(output="x", max_steps=5, warmup_steps=0.5).warmup_steps == 0.5  # a ratio


def test_align_refuses_a_bundle_without_a_model_for_a_prompt_category(tiny_lm_path, tmp_path_factory):
    from test_reward_support import shared_bundle

    from drirl.align.recipe import check_bundle_covers
    from drirl.errors import DataError
    from drirl.reward.bundle import CategoryRewardModels

    bundle = shared_bundle(tmp_path_factory, tiny_lm_path)  # models for benign, crime and insult
    privacy = Example(id="privacy-1", prompt="Find my neighbour's address.", category="privacy",
                      demonstration="Draft: privacy -> refuse\nAnswer: I can't.", source="test", split="train")
    strict = CategoryRewardModels(bundle, device="cpu")
    check_bundle_covers([strict, LengthReward()], _examples())  # crime, insult, benign: covered
    with pytest.raises(DataError, match="no reward model for category 'privacy'"):
        check_bundle_covers([strict], [*_examples(), privacy])
    check_bundle_covers([CategoryRewardModels(bundle, device="cpu", fallback="mean")], [*_examples(), privacy])


def test_concise_log_line_and_the_align_model_card(tiny_lm_path, tmp_path):
    from drirl.align.recipe import AlignConfig, run_align
    from drirl.trainer_setup import concise_log_line

    line = concise_log_line({"loss": 0.1234, "reward": 0.5, "learning_rate": 2e-4, "entropy": 3.1,
                             "scaling/alpha/std": 0.08}, 5, 30)
    assert line == "step 5/30 · loss 0.123 · reward 0.5 · α sd 0.08 · lr 0.0002"
    assert concise_log_line({"train_runtime": 12.0, "train_loss": 0.1}, 30, 30) is None
    config = AlignConfig(output=str(tmp_path / "run"), policy=str(tiny_lm_path), max_steps=1, num_generations=2,
                         per_device_train_batch_size=4, max_completion_length=4, scaling_mode="none", bf16="false",
                         save_steps=100)
    card = (run_align(config, reward_funcs=[LengthReward()], examples=_examples()) / "README.md").read_text()
    assert "# grpo policy trained with `drirl align`" in card and f"`{tiny_lm_path}`" in card
    assert '"scaling_mode": "none"' in card and "- **Steps:** 1 in" in card


def test_drirl_align_never_resumes_checkpoints_another_run_left(tiny_lm_path, tmp_path, tmp_path_factory, caplog):
    """A folder holding an earlier run's checkpoint (other settings): removed with a warning, training from step 0."""
    from test_reward_support import shared_bundle

    from drirl.align.grpo_s import SCALING_STATE_FILE
    from drirl.align.recipe import last_checkpoint
    from drirl.cli import main
    from drirl.stages import CHECKPOINT_HASH_FILE

    bundle = shared_bundle(tmp_path_factory, tiny_lm_path)
    output = tmp_path / "policy"
    leftover = output / "checkpoints" / "checkpoint-3"
    leftover.mkdir(parents=True)
    (leftover / "trainer_state.json").write_text("{}")
    (leftover / SCALING_STATE_FILE).write_text("{}")  # complete as far as last_checkpoint can tell
    (output / CHECKPOINT_HASH_FILE).write_text(json.dumps({"config_hash": "another-run"}))
    assert last_checkpoint(output / "checkpoints") == str(leftover)  # what --resume would have picked up
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(e.to_dict()) + "\n" for e in _examples()))
    with caplog.at_level("WARNING"):
        code = main(["--log-level", "WARNING", "align", "--policy", str(tiny_lm_path), "--reward_models", str(bundle),
                     "--data", str(data), "--output", str(output), "--max_steps", "1", "--num_generations", "2",
                     "--per_device_train_batch_size", "4", "--max_completion_length", "4", "--bf16", "false",
                     "--scaling_mode", "none", "--save_steps", "100", "--resume"])
    assert code == 0
    assert "were written with other settings (hash another-run" in caplog.text
    assert not leftover.exists()
    history = json.loads((output / "log_history.json").read_text())
    assert [h["step"] for h in history if "loss" in h] == [1]
