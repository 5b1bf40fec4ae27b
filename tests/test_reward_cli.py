"""`drirl reward train` and `drirl reward eval` through the command line."""

from __future__ import annotations

import argparse
import json

import pytest
from test_reward_support import TRAIN_DEFAULTS, one_torch_thread, write_data


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_torch_thread()


def _main(argv: list[str]) -> int:
    """drirl.cli.main; should another stage's commands module be missing, a parser with only `reward`."""
    try:
        from drirl.cli import main

        return main(argv)
    except ImportError:  # pragma: no cover - only while the other stages are being written
        from drirl.commands import reward as commands

        parser = argparse.ArgumentParser(prog="drirl")
        commands.register(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(argv)
        return args.handler(args)


def _flags(values: dict) -> list[str]:
    return [item for key, value in values.items() for item in (f"--{key}", str(value).lower()
                                                              if isinstance(value, bool) else str(value))]


def test_train_then_eval_json(tmp_path, tiny_lm_path, capsys):
    data = write_data(tmp_path)
    yaml_file = tmp_path / "pipeline.yaml"
    # A pipeline file: `reward train` reads its `reward:` section, flags override it.
    yaml_file.write_text(f"reward:\n  policy: {tiny_lm_path}\n  data: {data}\n  learning_rate: 1.0e-2\n"
                         "  categories: [crime, insult]\nother_stage:\n  ignored: true\n")
    bundle = tmp_path / "rm"
    cache = tmp_path / "negatives"
    code = _main(["reward", "train", "--config", str(yaml_file), "--output", str(bundle),
                  "--negatives_cache", str(cache),
                  "--lora_top_layers", "1",  # adapters on the last of the tiny model's 2 layers only
                  *_flags({k: v for k, v in TRAIN_DEFAULTS.items() if k != "learning_rate"})])
    out = capsys.readouterr().out
    assert code == 0
    assert f"reward-model bundle: {bundle}" in out
    assert "crime" in out and "insult" in out and "loss" in out
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert sorted(manifest["models"]) == ["crime", "insult"]
    assert manifest["config"]["learning_rate"] == 1e-2 and manifest["config"]["lr_scheduler_type"] == "constant"
    assert json.loads((bundle / "crime" / "adapter_config.json").read_text())["layers_to_transform"] == [1]

    code = _main(["reward", "eval", str(bundle), "--json", "--negatives_cache", str(cache), "--bf16", "false",
                  "--negatives_per_prompt", "2"])
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads(out)  # exactly one JSON object on stdout
    assert {"pairwise_accuracy", "mean_pairwise_accuracy", "cross_category", "heatmap"} <= set(result)
    assert set(result["pairwise_accuracy"]) == {"crime", "insult"}
    for value in [*result["pairwise_accuracy"].values(), result["mean_pairwise_accuracy"],
                  *(v for row in result["cross_category"].values() for v in row.values())]:
        assert 0.0 <= value <= 1.0
    assert result["heatmap"] == str(bundle / "cross_category.png")
    assert (bundle / "cross_category.png").is_file()
    assert result["pairs"] == {"crime": 4, "insult": 4}
    assert set(result["decision_accuracy"]) == {"harmful", "benign", "borderline", "per_category"}
    assert set(result["decision_accuracy"]["per_category"]) == {"crime", "insult"}
    assert set(result["decision_cross_category"]) == {"crime", "insult"}
    assert set(result["decision_pairs"]) == {"crime", "insult"}

    heatmap = tmp_path / "plots" / "rm.png"
    code = _main(["reward", "eval", str(bundle), "--negatives_cache", str(cache), "--bf16", "false",
                  "--heatmap", str(heatmap), "--data", str(data)])
    out = capsys.readouterr().out
    assert code == 0 and heatmap.is_file()
    assert "cross-category" in out and "mean" in out and str(heatmap) in out
    assert "decision accuracy" in out and "cross-category decision accuracy" in out


def test_train_errors_exit_with_their_code(tmp_path, capsys):
    code = _main(["reward", "train", "--policy", str(tmp_path / "nope")])
    assert code == 2  # ConfigError: the required --output is missing
    assert "output" in capsys.readouterr().err
    code = _main(["reward", "train", "--output", str(tmp_path / "rm"), "--rounds", "zero"])
    assert code == 2 and "rounds" in capsys.readouterr().err


def test_eval_of_a_folder_that_is_no_bundle(tmp_path, capsys):
    code = _main(["reward", "eval", str(tmp_path), "--json"])
    assert code == 4  # ModelError
    captured = capsys.readouterr()
    assert captured.out == "" and "manifest.json" in captured.err


@pytest.mark.parametrize("argv", [["reward"], ["reward", "train"], ["reward", "eval"]])
def test_help_has_a_description_and_examples(argv, capsys):
    with pytest.raises(SystemExit) as info:
        _main([*argv, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "example" in text and "drirl reward" in text
    assert len(text.split("\n\n")[1]) > 40  # a description paragraph after the usage
