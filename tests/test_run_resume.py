"""Resume only what matches: a finished run rerun with a changed align.learning_rate trains again with the new rate
instead of resuming the old run's last checkpoint (and reporting it trained "in 0 s")."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml


def length_reward(prompts, completions, **kwargs):
    """A stand-in reward (longer is better): the test is about what resumes, not about the reward models."""
    return [float(len(str(c))) for c in completions]


def _learning_rates(history: list[dict]) -> list[float]:
    return [h["learning_rate"] for h in history if "learning_rate" in h]


def test_a_changed_learning_rate_starts_alignment_fresh(tiny_lm_path, tmp_path, monkeypatch, caplog):
    from test_pipeline import write_tiny_data

    import drirl.align.recipe as trainer
    import drirl.eval.harness as harness
    import drirl.plots as plots
    import drirl.reward.evaluate as reward_evaluate
    import drirl.reward.irl as irl
    from drirl.config import config_to_dict
    from drirl.pipeline import load_pipeline_config, run_pipeline

    def fake_reward(rc):
        Path(rc.output).mkdir(parents=True, exist_ok=True)
        (Path(rc.output) / "manifest.json").write_text(json.dumps({"config": config_to_dict(rc)}))
        return Path(rc.output)

    class Result:
        def to_dict(self):
            return {}

    def fake_eval(ec, responder=None):
        Path(ec.output).mkdir(parents=True, exist_ok=True)
        (Path(ec.output) / "eval.json").write_text("{}")
        return Result()

    monkeypatch.setattr(trainer, "build_reward_funcs", lambda config: [length_reward])
    monkeypatch.setattr(irl, "train_reward_models", fake_reward)
    monkeypatch.setattr(reward_evaluate, "evaluate_bundle", lambda *a, **k: {"cross_category": [], "categories": []})
    monkeypatch.setattr(plots, "plot_heatmap", lambda *a: None)
    monkeypatch.setattr(harness, "evaluate", fake_eval)
    monkeypatch.setenv("DRIRL_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "run.yaml"
    output = tmp_path / "run"

    def run(learning_rate: float) -> list[dict]:
        path.write_text(yaml.safe_dump({
            "run": {"output": str(output), "policy": str(tiny_lm_path), "methods": ["grpo-irl"],
                    "final_method": "grpo-irl", "data": str(write_tiny_data(tmp_path / "data.jsonl"))},
            "align": {"max_steps": 3, "per_device_train_batch_size": 4, "num_generations": 2,
                      "max_completion_length": 6, "save_steps": 1, "bf16": "false", "learning_rate": learning_rate}}))
        run_pipeline(load_pipeline_config(path))
        return json.loads((output / "align-grpo-irl" / "run" / "log_history.json").read_text())

    first = run(1e-3)
    assert len(_learning_rates(first)) == 3
    with caplog.at_level(logging.WARNING, logger="drirl.pipeline"):
        second = run(2e-3)
    # Every step trained again, each at twice the first run's rate (same schedule, new peak).
    assert _learning_rates(second) == pytest.approx([2 * lr for lr in _learning_rates(first)])
    state = json.loads((output / "align-grpo-irl" / "run" / "checkpoints" / "checkpoint-3" /
                        "trainer_state.json").read_text())
    assert _learning_rates(state["log_history"]) == pytest.approx(_learning_rates(second))
    assert "were written with other settings" in caplog.text and "training starts fresh" in caplog.text
    stage = json.loads((output / "align-grpo-irl" / "stage.json").read_text())
    assert stage["settings"]["learning_rate"] == 2e-3
    marker = json.loads((output / "align-grpo-irl" / "run" / "checkpoints_hash.json").read_text())
    assert marker["config_hash"] == stage["config_hash"]
    # Every record of the run states the rate the trainer actually used.
    trained = json.loads((output / "align-grpo-irl" / "run" / "alignment.json").read_text())["config"]
    recorded = json.loads((output / "config.json").read_text())["methods"]["grpo-irl"]["seeds"]["0"]["align-grpo-irl"]
    card = (output / "model" / "README.md").read_text()
    in_card = json.loads(card.split("```json", 1)[1].split("```", 1)[0])["stages"]["align-grpo-irl"]
    assert trained["learning_rate"] == recorded["learning_rate"] == in_card["learning_rate"] == 2e-3
    assert trained["scaling_mode"] == recorded["scaling_mode"] == in_card["scaling_mode"] == "none"
    assert max(_learning_rates(second)) == pytest.approx(2e-3)  # the peak of the schedule is the new rate
