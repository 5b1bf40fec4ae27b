"""One definition of what a stage's output depends on (drirl.stages), used by `drirl run` and each stage's command."""

from __future__ import annotations

import dataclasses

import pytest

from drirl.align.baselines import DPOBaselineConfig, SFTBaselineConfig
from drirl.align.recipe import AlignConfig
from drirl.eval.harness import EvalConfig
from drirl.reward.irl import RewardTrainConfig
from drirl.stages import output_settings, prepare_work_dir, run_only_fields, settings_hash

CONFIGS = {
    RewardTrainConfig: RewardTrainConfig(output="runs/rm"),
    AlignConfig: AlignConfig(output="runs/policy", reward_models="runs/rm"),
    SFTBaselineConfig: SFTBaselineConfig(),
    DPOBaselineConfig: DPOBaselineConfig(),
    EvalConfig: EvalConfig(model="runs/policy/model", output="runs/eval"),
}
# A field of each class that does change the output.
CHANGES_OUTPUT = {RewardTrainConfig: ("learning_rate", 1e-3), AlignConfig: ("learning_rate", 1e-3),
                  SFTBaselineConfig: ("learning_rate", 1e-3), DPOBaselineConfig: ("beta", 0.5),
                  EvalConfig: ("max_new_tokens", 17)}


@pytest.mark.parametrize("cls", list(CONFIGS), ids=lambda c: c.__name__)
def test_run_only_fields_are_fields(cls):
    names = {f.name for f in dataclasses.fields(cls)}
    assert run_only_fields(cls) and set(run_only_fields(cls)) <= names


def _other(value, name=""):
    if value == "none":  # report_to: another valid logger
        return "tensorboard"
    if value is None and name.startswith(("eval_max", "max_")):  # an unset count
        return 9
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 3
    return f"{value or 'x'}-other"


@pytest.mark.parametrize("cls", list(CONFIGS), ids=lambda c: c.__name__)
def test_a_run_only_field_does_not_change_the_hash_and_an_output_field_does(cls):
    config = CONFIGS[cls]
    base = settings_hash(config)
    for name in run_only_fields(cls):
        changed = dataclasses.replace(config, **{name: _other(getattr(config, name), name)})
        assert settings_hash(changed) == base, name
    name, value = CHANGES_OUTPUT[cls]
    assert settings_hash(dataclasses.replace(config, **{name: value})) != base


def test_a_manifests_record_compares_equal_to_the_config_that_wrote_it():
    config = RewardTrainConfig(output="runs/rm", logging_steps=5)
    recorded = dataclasses.asdict(dataclasses.replace(config, logging_steps=1, output="elsewhere"))
    assert output_settings(recorded, RewardTrainConfig) == output_settings(config)
    assert output_settings(recorded) != output_settings(config)  # without the class nothing is left out


def test_unset_fields_are_left_out():
    config = RewardTrainConfig(output="runs/rm")
    assert config.extra_negative_policy is None and "extra_negative_policy" not in output_settings(config)


def test_drirl_run_and_reward_train_agree_on_logging_steps(tmp_path):
    """The issue this module fixes: `logging_steps` retrained the bundle under `drirl run` (its stage hash held every
    field) but not under `drirl reward train` (its partial folder ignored it). Now neither retrains; a learning rate
    retrains under both."""
    from drirl.pipeline import load_pipeline_config, plan_pipeline

    def reward_stage(**reward):
        config = load_pipeline_config(None, {"run": {"output": str(tmp_path / "run"), "methods": ["dr-irl"]},
                                             "reward": reward})
        plan = plan_pipeline(config)
        stage = next(p.stage for p in plan.stages if p.stage.name == "reward")
        align = next(p.stage for p in plan.stages if p.stage.name == "align-dr-irl")
        return stage.hash, align.hash

    assert reward_stage(logging_steps=5) == reward_stage(logging_steps=7)
    assert reward_stage(learning_rate=1e-3)[0] != reward_stage()[0]
    assert reward_stage(learning_rate=1e-3)[1] != reward_stage()[1]  # the alignment reads a new bundle
    # The held-out check after training reruns the stage, not what reads the bundle.
    checked = reward_stage(eval_max_prompts_per_category=9)
    assert checked[0] != reward_stage()[0] and checked[1] == reward_stage()[1]

    work = tmp_path / "rm.partial"
    fingerprint = "abc"
    first = RewardTrainConfig(output=str(tmp_path / "rm"), logging_steps=5)
    assert prepare_work_dir(work, {"config": output_settings(first), "data": fingerprint}) is False
    (work / "round1").mkdir()
    again = dataclasses.replace(first, logging_steps=7)
    assert prepare_work_dir(work, {"config": output_settings(again), "data": fingerprint}) is True
    assert (work / "round1").is_dir()
    changed = dataclasses.replace(first, learning_rate=1e-3)
    assert prepare_work_dir(work, {"config": output_settings(changed), "data": fingerprint}) is False
    assert not (work / "round1").exists()
