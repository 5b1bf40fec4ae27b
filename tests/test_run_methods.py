"""`drirl run`'s method registry, custom methods, fixed-setting conflicts, seeds, --plan and the records a run writes
(config.json, stage.json, model card, report) — each checked against the settings the training stage received."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from drirl.errors import ConfigError


@pytest.fixture
def fake_stages(monkeypatch):
    """Every stage's work replaced by a stand-in that records the config it was given; alignment writes what the
    real trainer writes about its settings (alignment.json's config)."""
    import drirl.align.baselines as baselines
    import drirl.align.recipe as trainer
    import drirl.eval.harness as harness
    import drirl.plots as plots
    import drirl.reward.evaluate as reward_evaluate
    import drirl.reward.irl as irl
    from drirl.config import config_to_dict

    calls: dict[str, list] = {"align": [], "reward": [], "eval": [], "sft": []}

    def fake_sft(examples, policy, target, config):
        calls["sft"].append(config)
        Path(target).mkdir(parents=True, exist_ok=True)
        (Path(target) / "config.json").write_text("{}")
        return Path(target)

    def fake_align(ac, resume=False, checkpoint_hash=None):
        calls["align"].append(ac)
        model = Path(ac.output) / "model"
        model.mkdir(parents=True, exist_ok=True)
        (model / "config.json").write_text("{}")
        (Path(ac.output) / "alignment.json").write_text(json.dumps({"config": config_to_dict(ac)}))
        return model

    def fake_reward(rc):
        calls["reward"].append(rc)
        Path(rc.output).mkdir(parents=True, exist_ok=True)
        (Path(rc.output) / "manifest.json").write_text(json.dumps({"config": config_to_dict(rc)}))
        return Path(rc.output)

    class Result:
        def __init__(self, summary):
            self.summary = summary

        def to_dict(self):
            return self.summary

    def fake_eval(ec, responder=None):
        calls["eval"].append(ec)
        out = Path(ec.output)
        out.mkdir(parents=True, exist_ok=True)
        summary = {"harmful_refusal": 0.5, "benign_compliance": 1.0, "qa_accuracy": 0.5}
        (out / "eval.json").write_text(json.dumps(summary))
        return Result(summary)

    monkeypatch.setattr(baselines, "train_sft", fake_sft)
    monkeypatch.setattr(trainer, "run_align", fake_align)
    monkeypatch.setattr(irl, "train_reward_models", fake_reward)
    monkeypatch.setattr(reward_evaluate, "evaluate_bundle", lambda *a, **k: {"cross_category": [], "categories": []})
    monkeypatch.setattr(plots, "plot_heatmap", lambda *a: None)
    monkeypatch.setattr(harness, "evaluate", fake_eval)
    return calls


def _load(tmp_path: Path, run: dict, **sections):
    from drirl.pipeline import load_pipeline_config

    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump({"run": {"output": str(tmp_path / "run"), "policy": "some/policy", **run},
                                    **sections}))
    return load_pipeline_config(path)


def test_a_section_that_contradicts_a_method_is_an_error_naming_both(tmp_path):
    from drirl.pipeline import load_pipeline_config

    with pytest.raises(ConfigError) as err:
        _load(tmp_path, {"methods": ["base", "dr-irl"]}, align={"scaling_mode": "data"})
    message = str(err.value)
    assert f"align.scaling_mode is set to 'data' in {tmp_path / 'x.yaml'} but method dr-irl fixes it to 'both'" \
        in message and "define a method instead" in message
    # The same through --set names the flag.
    with pytest.raises(ConfigError, match="reward.variant is set to 'init-sft' in --set reward.variant but method "
                                          "grpo-irl fixes it to 'demo-vs-policy'"):
        load_pipeline_config(None, {"run": {"output": str(tmp_path), "methods": ["grpo-irl"]},
                                    "reward": {"variant": "init-sft"}})
    with pytest.raises(ConfigError, match="reward.per_category is set to True .* method grpo fixes it to False"):
        _load(tmp_path, {"methods": ["grpo"]}, reward={"per_category": True})
    # A value equal to the fixed one contradicts nothing.
    assert _load(tmp_path, {"methods": ["dr-irl"]}, align={"scaling_mode": "both"}).run.methods == ["dr-irl"]
    with pytest.raises(ConfigError, match="method grpo-external needs run.external_reward_model"):
        _load(tmp_path, {"methods": ["grpo-external"]})
    with pytest.raises(ConfigError, match="move align.external_reward_model there"):
        _load(tmp_path, {"methods": ["grpo-external"]}, align={"external_reward_model": "x"})
    with pytest.raises(ConfigError, match="method dpo-s needs DPOBaselineConfig.scaling_mode"):
        from dataclasses import fields

        from drirl.align.baselines import DPOBaselineConfig

        if "scaling_mode" in {f.name for f in fields(DPOBaselineConfig)}:
            pytest.skip("DPOBaselineConfig has DPO-S's fields: dpo-s runs")
        _load(tmp_path, {"methods": ["dpo-s"]})


def test_custom_methods_are_validated(tmp_path):
    with pytest.raises(ConfigError, match="custom_methods.dr-irl: 'dr-irl' is a built-in method"):
        _load(tmp_path, {"custom_methods": {"dr-irl": {"extends": "grpo"}}})
    with pytest.raises(ConfigError, match="custom_methods.mine: extends unknown method 'dr-irll'"):
        _load(tmp_path, {"custom_methods": {"mine": {"extends": "dr-irll"}}, "methods": ["mine"]})
    with pytest.raises(ConfigError, match="circular 'extends' among a, b"):
        _load(tmp_path, {"custom_methods": {"a": {"extends": "b"}, "b": {"extends": "a"}}})
    with pytest.raises(ConfigError, match="unknown key 'eval'"):
        _load(tmp_path, {"custom_methods": {"a": {"extends": "dr-irl", "eval": {}}}})
    with pytest.raises(ConfigError, match=r"run.custom_methods.a.align\].*scaling_modee"):
        _load(tmp_path, {"custom_methods": {"a": {"extends": "dr-irl", "align": {"scaling_modee": "data"}}},
                         "methods": ["a"]})
    with pytest.raises(ConfigError, match="unknown method\\(s\\) nope"):
        _load(tmp_path, {"methods": ["nope"]})


def test_every_ablation_resolves_to_its_settings(tmp_path):
    from drirl.pipeline import plan_pipeline

    config = _load(tmp_path, {"methods": ["grpo", "grpo-irl", "dr-irl", "dr-irl-data", "dr-irl-model", "dr-irl-sum",
                                          "dr-irl-single", "dr-irl-external", "mine"],
                              "custom_methods": {"mine": {"extends": "dr-irl-single",
                                                          "reward": {"negatives_per_prompt": 3}}},
                              "external_reward_model": "some/classifier"},
                   align={"learning_rate": 0.001})
    plan = plan_pipeline(config)
    settings = {p.stage.name: p.stage.settings for p in plan.stages}
    expected = {"grpo": ("none", "product", "reward-single"), "grpo-irl": ("none", "product", "reward"),
                "dr-irl": ("both", "product", "reward"), "dr-irl-data": ("data", "product", "reward"),
                "dr-irl-model": ("model", "product", "reward"), "dr-irl-sum": ("both", "sum", "reward"),
                "dr-irl-single": ("both", "product", "reward-single"), "mine": ("both", "product", "reward-mine")}
    for method, (mode, combine, bundle) in expected.items():
        align = settings[f"align-{method}"]
        assert (align["scaling_mode"], align["scaling_combine"]) == (mode, combine), method
        assert align["reward_models"] == str(tmp_path / "run" / bundle / "bundle"), method
        assert align["external_reward_model"] is None and align["learning_rate"] == 0.001
    external = settings["align-dr-irl-external"]
    assert external["reward_models"] is None and external["external_reward_model"] == "some/classifier"
    # Reward stages: one per distinct setting, shared by the methods that fix the same ones.
    assert sorted(n for n in settings if n.startswith("reward")) == ["reward", "reward-mine", "reward-single"]
    assert settings["reward-single"]["per_category"] is False and settings["reward"]["per_category"] is True
    assert settings["reward-mine"]["negatives_per_prompt"] == 3 and settings["reward-mine"]["per_category"] is False
    assert settings["reward"]["negatives_per_prompt"] != 3
    # A user's align.external_reward_model contradicts the methods that read the run's reward models.
    with pytest.raises(ConfigError, match="align.external_reward_model is set to 'x' .* method dr-irl fixes it "
                                          "to None"):
        _load(tmp_path, {"methods": ["dr-irl"]}, align={"external_reward_model": "x"})


def test_records_state_the_settings_that_ran(tmp_path, fake_stages):
    """A custom method with scaling_mode data: the trainer receives data, and config.json, stage.json, the model
    card and the report all say data — none says the section's or the parent's both."""
    from drirl.pipeline import run_pipeline

    config = _load(tmp_path, {"methods": ["base", "dr-irl-d"], "final_method": "dr-irl-d",
                              "custom_methods": {"dr-irl-d": {"extends": "dr-irl", "align": {"scaling_mode": "data"}}}},
                   align={"max_steps": 7})
    root = run_pipeline(config)
    [ac] = fake_stages["align"]
    trained = json.loads((root / "align-dr-irl-d" / "run" / "alignment.json").read_text())["config"]
    assert ac.scaling_mode == trained["scaling_mode"] == "data" and trained["max_steps"] == 7
    stage = json.loads((root / "align-dr-irl-d" / "stage.json").read_text())["settings"]
    recorded = json.loads((root / "config.json").read_text())
    in_config = recorded["methods"]["dr-irl-d"]["seeds"]["0"]["align-dr-irl-d"]
    card = (root / "model" / "README.md").read_text()
    card_settings = json.loads(card.split("```json", 1)[1].split("```", 1)[0])["stages"]["align-dr-irl-d"]
    report_settings = json.loads((root / "report.json").read_text())["settings"]["dr-irl-d"]["align-dr-irl-d"]
    for record in (stage, in_config, card_settings):
        assert {k: record[k] for k in ("scaling_mode", "scaling_combine", "max_steps", "reward_models")} == \
            {k: trained[k] for k in ("scaling_mode", "scaling_combine", "max_steps", "reward_models")}
    assert report_settings["scaling_mode"] == "data" and report_settings["max_steps"] == 7
    assert recorded["methods"]["dr-irl-d"]["extends"] == "dr-irl"
    assert recorded["requested"]["align"] == {"max_steps": 7}  # what the user wrote, kept apart
    assert "scaling_mode=\"data\"" in (root / "report.md").read_text()
    # The reward bundle's manifest and the stage that trained it agree too.
    manifest = json.loads((root / "reward" / "bundle" / "manifest.json").read_text())["config"]
    assert manifest["per_category"] is True and recorded["methods"]["dr-irl-d"]["seeds"]["0"]["reward"][
        "per_category"] is True


def test_seeds_train_and_evaluate_every_trained_method_per_seed(tmp_path, fake_stages, monkeypatch):
    import drirl.report as report
    from drirl.pipeline import run_pipeline

    seen = {}
    monkeypatch.setattr(report, "write_report", lambda root, config, results, *a, runs=None: seen.update(runs))
    config = _load(tmp_path, {"methods": ["base", "dr-irl"], "seeds": [0, 1, 2], "warm_start": "sft"})
    root = run_pipeline(config)
    assert [ac.seed for ac in fake_stages["align"]] == [0, 1, 2]
    assert [rc.seed for rc in fake_stages["reward"]] == [0, 1, 2]
    assert [ac.policy for ac in fake_stages["align"]] == [
        str(root / "align-sft" / "model"), str(root / "align-sft" / "seed-1" / "model"),
        str(root / "align-sft" / "seed-2" / "model")]
    assert [ac.reward_models for ac in fake_stages["align"]] == [
        str(root / "reward" / "bundle"), str(root / "reward" / "seed-1" / "bundle"),
        str(root / "reward" / "seed-2" / "bundle")]
    assert (root / "align-dr-irl" / "stage.json").is_file()
    assert (root / "align-dr-irl" / "seed-2" / "stage.json").is_file()
    # base is untrained and greedy: evaluated once.
    assert sorted(Path(ec.output).relative_to(root).as_posix() for ec in fake_stages["eval"]) == [
        "eval-base", "eval-dr-irl", "eval-dr-irl/seed-1", "eval-dr-irl/seed-2"]
    assert seen["seeds"] == [0, 1, 2] and set(seen["evals"]["dr-irl"]) == {0, 1, 2}
    assert set(seen["evals"]["base"]) == {0}
    assert ("dr-irl", "base") in seen["pairs"]
    # Seed 0 keeps the one-seed folder names and settings: the same config with seed 0 alone reuses everything.
    fake_stages["align"].clear()
    run_pipeline(_load(tmp_path, {"methods": ["base", "dr-irl"], "seed": 0, "warm_start": "sft"}))
    assert fake_stages["align"] == []


def test_plan_prints_stages_reuse_and_settings_without_running(tmp_path, fake_stages, capsys):
    from drirl.cli import main
    from drirl.pipeline import run_pipeline

    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump({"run": {"output": str(tmp_path / "run"), "policy": "some/policy",
                                            "methods": ["base", "dr-irl-k"],
                                            "custom_methods": {"dr-irl-k": {"extends": "dr-irl",
                                                                            "align": {"alpha_min": 0.8}}}},
                                    "align": {"learning_rate": 0.001}}))
    assert main(["run", str(path), "--plan"]) == 0
    out = capsys.readouterr().out
    assert not (tmp_path / "run").exists()  # nothing run, nothing written
    assert "reward: run (new)" in out and "align-dr-irl-k: run (new)" in out and "eval-base: run (new)" in out
    block = out.split("align-dr-irl-k:", 1)[1].split("\neval-", 1)[0]
    assert "    alpha_min: 0.8" in block and "    learning_rate: 0.001" in block
    assert "max_steps" not in block  # a default is left out
    from drirl.pipeline import load_pipeline_config

    run_pipeline(load_pipeline_config(path))
    assert main(["run", str(path), "--plan"]) == 0
    out = capsys.readouterr().out
    assert "align-dr-irl-k: reuse" in out and "eval-dr-irl-k: reuse" in out
    assert main(["run", str(path), "--plan", "--set", "align.learning_rate=0.002"]) == 0
    out = capsys.readouterr().out
    assert "reward: reuse" in out and "align-dr-irl-k: run (settings changed: " in out
    assert "eval-dr-irl-k: run (settings changed: " in out and "eval-base: reuse" in out


def test_best_of_n_gate_scores_sft_samples_with_the_runs_reward_models(tmp_path, fake_stages, monkeypatch):
    import drirl.align.baselines as baselines
    import drirl.report as report
    from drirl.pipeline import run_pipeline

    responders = []
    monkeypatch.setattr(baselines.BestOfNResponder, "from_paths",
                        staticmethod(lambda model, bundle, config: responders.append((model, bundle, config.n))))
    seen = {}
    monkeypatch.setattr(report, "write_report", lambda root, config, results, *a, runs=None: seen.update(runs))
    config = _load(tmp_path, {"methods": ["base", "dr-irl"], "best_of_n_gate": 8, "warm_start": "sft"},
                   bon={"n": 4})  # the bon method's own n does not touch the gate's
    root = run_pipeline(config)
    assert responders == [(str(root / "align-sft" / "model"), str(root / "reward" / "bundle"), 8)]
    assert sorted(Path(ec.output).name for ec in fake_stages["eval"]) == [
        "eval-base", "eval-dr-irl", "eval-sft", "eval-sft-best-of-8"]
    assert ("sft-best-of-8", "sft") in seen["pairs"] and len(fake_stages["reward"]) == 1  # one bundle serves both
    with pytest.raises(ConfigError, match="best_of_n_gate must be at least 2"):
        _load(tmp_path, {"best_of_n_gate": 1})


def test_a_stage_rerun_with_new_settings_drops_its_old_record_first(tmp_path, fake_stages, monkeypatch):
    """A crash part-way through a changed stage must not leave the old stage.json claiming the folder: going back
    to the old settings then trains again instead of taking the half-new folder for the old result."""
    import drirl.align.recipe as trainer
    from drirl.pipeline import run_pipeline

    run_pipeline(_load(tmp_path, {"methods": ["dr-irl"]}, align={"learning_rate": 0.001}))
    stage = tmp_path / "run" / "align-dr-irl" / "stage.json"
    assert stage.is_file()

    def crash(ac, resume=False, checkpoint_hash=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "run_align", crash)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(_load(tmp_path, {"methods": ["dr-irl"]}, align={"learning_rate": 0.002}))
    assert not stage.exists()
    with pytest.raises(KeyboardInterrupt):  # the old settings again: not complete, so alignment runs
        run_pipeline(_load(tmp_path, {"methods": ["dr-irl"]}, align={"learning_rate": 0.001}))


def test_sft_variants_get_the_pipelines_sft_model_when_the_config_has_the_field(tmp_path, fake_stages, monkeypatch):
    """init-sft (Best-of-N's reward model) takes its positives from the very SFT model Best-of-N samples: passed as
    RewardTrainConfig.sft_policy where that field exists, with the SFT stage's hash as an input of the bundle."""
    import dataclasses

    import drirl.align.baselines as baselines
    import drirl.reward.irl as irl
    from drirl.pipeline import plan_pipeline, run_pipeline

    if "sft_policy" not in {f.name for f in dataclasses.fields(irl.RewardTrainConfig)}:
        # Without the field nothing is passed (and nothing hashed); a stand-in with the field shows what is.
        plan = plan_pipeline(_load(tmp_path, {"methods": ["bon"]}))
        without = {p.stage.name: p.stage.settings for p in plan.stages}
        assert "sft_policy" not in without["reward-init-sft"] and "inputs" not in without["reward-init-sft"]

        @dataclasses.dataclass
        class WithSFTPolicy(irl.RewardTrainConfig):
            sft_policy: str | None = None

        monkeypatch.setattr(irl, "RewardTrainConfig", WithSFTPolicy)
    monkeypatch.setattr(baselines.BestOfNResponder, "from_paths", staticmethod(lambda *a: None))
    root = run_pipeline(_load(tmp_path, {"methods": ["bon"]}))
    [rc] = fake_stages["reward"]
    assert rc.variant == "init-sft" and rc.sft_policy == str(root / "align-sft" / "model")
    stage = json.loads((root / "reward-init-sft" / "stage.json").read_text())["settings"]
    assert set(stage["inputs"]) == {"align-sft"}


def test_a_custom_sft_method_trains_its_own_model(tmp_path, fake_stages):
    from drirl.pipeline import run_pipeline

    root = run_pipeline(_load(tmp_path, {"methods": ["base", "sft-long"],
                                         "custom_methods": {"sft-long": {"extends": "sft",
                                                                         "sft": {"num_train_epochs": 3}}}}))
    assert [c.num_train_epochs for c in fake_stages["sft"]] == [3]  # no built-in sft: nobody needs it
    assert (root / "align-sft-long" / "model").is_dir() and not (root / "align-sft").exists()
    assert Path(fake_stages["eval"][1].model) == root / "align-sft-long" / "model"
    with pytest.raises(ConfigError, match="custom_methods.x: a grpo method does not read the sft section; it reads "
                                          "reward, align"):
        _load(tmp_path, {"custom_methods": {"x": {"extends": "dr-irl", "sft": {"num_train_epochs": 3}}}})


def test_dpo_starts_where_the_grpo_methods_start(tmp_path, fake_stages, monkeypatch):
    import drirl.align.baselines as baselines
    from drirl.pipeline import run_pipeline

    starts = []
    monkeypatch.setattr(baselines, "train_dpo", lambda examples, rejected, model, target, config: (
        starts.append(model), Path(target))[1])
    root = run_pipeline(_load(tmp_path, {"methods": ["dpo", "dr-irl"], "warm_start": "sft"}))
    sft = str(root / "align-sft" / "model")
    assert starts == [sft] and [ac.policy for ac in fake_stages["align"]] == [sft]
    stage = json.loads((root / "align-dpo" / "stage.json").read_text())["settings"]
    assert stage["policy"] == sft and set(stage["inputs"]) == {"align-sft"}
    starts.clear()  # without a warm start DPO starts from the policy as is
    run_pipeline(_load(tmp_path, {"methods": ["dpo"], "output": str(tmp_path / "none")}))
    assert starts == ["some/policy"]
