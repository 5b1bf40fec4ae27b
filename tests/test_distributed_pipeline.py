"""`drirl run` under two CPU processes (torchrun, gloo) gives the report of one process and writes each file once.

Run as a script (``python tests/test_distributed_pipeline.py run.yaml writes.log``), this file is the launcher of
`drirl run`: it first records every atomic write of drirl (file or folder, with the writing rank) to the log, so the
test can tell which process wrote what and how often.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve()


def _record_writes(log: Path) -> None:
    """Wrap drirl.io's atomic writers (every file drirl writes goes through one) to log ``rank<TAB>path``."""
    import contextlib

    import drirl.io as io

    rank = os.environ.get("RANK", "0")

    def logged(original):
        @contextlib.contextmanager
        def wrapper(path, *args, **kwargs):
            with original(path, *args, **kwargs) as handle:
                yield handle
            with open(log, "a") as out:  # after the rename: only finished writes count
                out.write(f"{rank}\t{Path(path).resolve()}\n")
        return wrapper

    io.atomic_write = logged(io.atomic_write)
    io.atomic_directory = logged(io.atomic_directory)


def _writes(log: Path, root: Path) -> list[tuple[str, str]]:
    """(rank, path relative to the run folder) per logged write inside ``root``."""
    rows = [line.split("\t") for line in log.read_text().splitlines()]
    # A file written inside a folder being built (.model.k2j4x.tmp/README.md) is named by the folder's final name.
    return [(rank, re.sub(r"\.([^/]+)\.[^/.]+\.tmp(?=/|$)", r"\1", str(Path(path).relative_to(root.resolve()))))
            for rank, path in rows if Path(path).is_relative_to(root.resolve())]


def _config(tmp_path: Path, model: Path, name: str, processes: int) -> Path:
    """The tiny pipeline of tests/test_pipeline.py with the per-process batch sizes divided by ``processes``, so
    every optimiser step sees the same global batch."""
    from test_pipeline import tiny_config

    folder = tmp_path / name
    folder.mkdir()
    path = tiny_config(folder, model, folder / "run")
    config = yaml.safe_load(path.read_text())
    config["reward"]["per_device_train_batch_size"] = 4 // processes
    # 3 training prompts x 4 negatives = 12 pairs per model, whole global batches of 4: with a ragged last batch
    # accelerate would repeat examples to fill every process's share, and the two runs would differ in that step.
    config["reward"]["negatives_per_prompt"] = 4
    # Two generation batches of 4 test prompts or fewer per set, so both ranks generate answers.
    config["eval"]["batch_size"] = 2
    config["reward"]["generation_batch_size"] = 4
    config["align"]["per_device_train_batch_size"] = 4 // processes
    config["align"]["learning_rate"] = 0.0  # see test_two_processes_match_one: GRPO sampling is per process
    path.write_text(yaml.safe_dump(config))
    return path


def _launch(command: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "DRIRL_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE.parent), *sys.path])}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]


def _assert_close(actual, expected, where: str = "report") -> None:
    """Equal structure and values; floats (rewards summed in another order on each process) to 1e-5."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), where
        for key, value in expected.items():
            _assert_close(actual[key], value, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), where
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _assert_close(a, e, f"{where}[{index}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, abs=1e-5), where
    else:
        assert actual == expected, where


def _report(root: Path) -> dict:
    report = json.loads((root / "report.json").read_text())
    return {"methods": report["methods"], "per_category": report["per_category"]}


@pytest.mark.slow
def test_two_processes_match_one(tiny_lm_path, tmp_path):
    one, two = _config(tmp_path, tiny_lm_path, "one", 1), _config(tmp_path, tiny_lm_path, "two", 2)
    _launch([sys.executable, str(HERE), str(one), str(tmp_path / "one.log")], tmp_path)
    _launch([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541",
             str(HERE), str(two), str(tmp_path / "two.log")], tmp_path)
    root_one, root_two = tmp_path / "one" / "run", tmp_path / "two" / "run"

    # The same report. Greedy evaluation and the reward models' negatives are sharded by whole generation batches
    # with one-process seeds, so their answers are identical; the reward models see the same global batches.
    # GRPO runs with learning rate 0: TRL samples each process's completions from its own random stream, so a
    # trained GRPO policy cannot match one process's, but its stages still run, save and evaluate under two.
    single, double = _report(root_one), _report(root_two)
    assert set(single["methods"]) == {"base", "dr-irl"}
    _assert_close(double, single)
    # The reward models' sampled negatives: the same samples, though each rank sampled only its share of the batches.
    caches = [sorted((tmp_path / name / "negcache").glob("*.jsonl")) for name in ("one", "two")]
    assert caches[0] and [p.name for p in caches[0]] == [p.name for p in caches[1]]
    for mine, theirs in zip(*caches, strict=True):
        assert theirs.read_text() == mine.read_text()
    responses = [(root / "eval-base" / "responses.jsonl").read_text() for root in (root_one, root_two)]
    assert responses[0] == responses[1]
    from safetensors.torch import load_file

    reward_one = json.loads((root_one / "reward" / "reward_eval.json").read_text())
    reward_two = json.loads((root_two / "reward" / "reward_eval.json").read_text())
    assert reward_two["pairwise_accuracy"] == pytest.approx(reward_one["pairwise_accuracy"], abs=1e-6)
    # The reward models trained data-parallel: as many optimiser steps as one process (not twice as many, as two
    # lone processes with half the batch would take), and the same trained weights. (The manifest's train_loss is
    # the transformers Trainer's mean over rank 0's own examples, so it is not compared.)
    models_one = json.loads((root_one / "reward" / "bundle" / "manifest.json").read_text())["models"]
    models_two = json.loads((root_two / "reward" / "bundle" / "manifest.json").read_text())["models"]
    assert models_two.keys() == models_one.keys() == {"benign", "crime", "insult"}
    for name, entry in models_one.items():
        mine, theirs = entry["metrics"], models_two[name]["metrics"]
        assert (theirs["train_pairs"], theirs["optimizer_steps"]) == (mine["train_pairs"], mine["optimizer_steps"]) \
            == (12, 3)
        weights_one = load_file(root_one / "reward" / "bundle" / name / "adapter_model.safetensors")
        weights_two = load_file(root_two / "reward" / "bundle" / name / "adapter_model.safetensors")
        assert weights_two.keys() == weights_one.keys()
        # Training moved the adapters by ~1e-4 in 3 steps; the two runs agree far closer than that.
        assert max(weights_one[k].abs().max().item() for k in weights_one if "lora_B" in k) > 1e-5
        assert max((weights_one[k] - weights_two[k]).abs().max().item() for k in weights_one) < 1e-6

    # Each file written once, by rank 0: the same writes, as often, as in the one-process run.
    writes_one, writes_two = _writes(tmp_path / "one.log", root_one), _writes(tmp_path / "two.log", root_two)
    assert {rank for rank, _ in writes_two} == {"0"}
    assert Counter(path for _, path in writes_two) == Counter(path for _, path in writes_one)
    assert Counter(path for _, path in writes_two)["eval-base/eval.json"] == 1
    assert Counter(path for _, path in writes_two)["report.json"] == 1
    assert not list(root_two.rglob("*.tmp"))


if __name__ == "__main__":
    _record_writes(Path(sys.argv[2]))
    from drirl.cli import main

    sys.exit(main(["--log-level", "WARNING", "run", sys.argv[1]]))
