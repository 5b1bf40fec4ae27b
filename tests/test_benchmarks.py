"""Fast tests of the pure helpers in benchmarks/bench_rollout.py and benchmarks/bench_memory.py."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


rollout = _load("bench_rollout")
memory = _load("bench_memory")


# ------------------------------------------------------------------------------------------------ bench_rollout
def test_count_new_tokens_stops_at_the_first_eos_and_counts_it():
    rows = [[5, 6, 2, 0, 0], [5, 6, 7, 8, 9], [2, 0, 0, 0, 0], [5, 3, 6, 2, 0]]
    assert rollout.count_new_tokens(rows, {2}) == (3 + 5 + 1 + 4, 20)
    assert rollout.count_new_tokens(rows, [2, 3]) == (3 + 5 + 1 + 2, 20)
    assert rollout.count_new_tokens([], {2}) == (0, 0)


def _example(id_, category, prompt=None):
    return SimpleNamespace(id=id_, category=category, prompt=prompt or f"prompt {id_}")


def test_pick_prompts_alternates_harmful_and_benign_whatever_the_input_order():
    examples = [_example(f"b{i}", "benign") for i in range(3)]
    examples += [_example(f"c{i}", "crime") for i in range(2)] + [_example(f"p{i}", "privacy") for i in range(2)]
    picked = rollout.pick_prompts(examples, 6)
    assert picked == ["prompt c0", "prompt b0", "prompt p0", "prompt b1", "prompt c1", "prompt b2"]
    assert rollout.pick_prompts(list(reversed(examples)), 6) == picked
    # Benign prompts run out: harmful ones fill the rest.
    assert rollout.pick_prompts(examples, 7)[-1] == "prompt p1"
    with pytest.raises(ValueError, match="asked for 8"):
        rollout.pick_prompts(examples, 8)


def test_pick_prompts_on_the_bundled_train_split():
    from drirl.data.schema import load_bundled

    examples = load_bundled(split="train")
    picked = rollout.pick_prompts(examples, 8)
    categories = {e.prompt: e.category for e in examples}
    assert len(set(picked)) == 8
    assert [categories[p] == "benign" for p in picked] == [False, True] * 4
    assert len({categories[p] for p in picked[::2]}) == 4  # harmful ones from four categories


def test_table_speedups_and_skipped_rows():
    rows = [rollout.Row("dynamic", "2×4", 100, 128, 2.0), rollout.Row("static", "2×4", 100, 128, 1.0),
            rollout.Row("vllm", "2×4", note="not installed")]
    assert rollout.speedups(rows) == {"dynamic": 1.0, "static": 2.0, "vllm": None}
    table = rollout.markdown_table(rows)
    assert "| static | 2×4 | 100 | 128 | 1.000 | 100.0 | 128.0 | 2.00 |" in table
    assert "not installed" in table


def test_rollout_arguments():
    args = rollout.parse_args(["--shape", "gpu", "--compile"])
    assert (args.prompts, args.generations, args.max_new_tokens) == (8, 8, 128)
    assert args.backend_list == ["dynamic", "static", "static+compile", "drirl", "vllm"]
    args = rollout.parse_args(["--prompts", "3", "--backends", "drirl"])
    assert (args.prompts, args.generations, args.max_new_tokens, args.backend_list) == (3, 4, 64, ["drirl"])
    with pytest.raises(SystemExit):
        rollout.parse_args(["--backends", "dynamic,turbo"])


# ------------------------------------------------------------------------------------------------ bench_memory
def test_parse_stage():
    assert memory.parse_stage("12:00:01 INFO drirl.pipeline: stage align-dr-irl: running") == "align-dr-irl"
    assert memory.parse_stage("INFO drirl.pipeline: stage reward: complete, skipping") == "reward (skipped)"
    # What drirl.pipeline logs today: "run (new)", "run (unfinished)", "run (settings changed: a -> b)".
    assert memory.parse_stage("15:11:07 INFO drirl.pipeline: stage eval-base: run (new)") == "eval-base"
    assert memory.parse_stage("INFO drirl.pipeline: stage reward: run (settings changed: a -> b)") == "reward"
    assert memory.parse_stage("generating:  50%|█████     | 1/2") is None


def test_process_tree_follows_descendants_only():
    parents = {1: 0, 10: 1, 11: 10, 12: 10, 13: 11, 20: 1}
    assert sorted(memory.process_tree(10, parents)) == [10, 11, 12, 13]
    assert memory.process_tree(99, parents) == [99]


def test_quick_overrides_are_fields_of_the_stage_configs(tmp_path):
    from drirl.align.recipe import AlignConfig
    from drirl.data.schema import read_examples
    from drirl.eval.harness import EvalConfig
    from drirl.pipeline import RunConfig
    from drirl.reward.irl import RewardTrainConfig

    sections = {"run": RunConfig, "reward": RewardTrainConfig, "align": AlignConfig, "eval": EvalConfig}
    args = memory.quick_overrides(tmp_path)
    assert args[::2] == ["--set"] * (len(args) // 2)
    for item in args[1::2]:
        key = item.partition("=")[0]
        section, _, name = key.partition(".")
        assert name in {f.name for f in dataclasses.fields(sections[section])}, key
    data = tmp_path / "quick-data.jsonl"
    assert f"run.data={data}" in args
    examples = read_examples(data)
    for split in ("train", "test"):
        part = [e for e in examples if e.split == split]
        assert len(part) == 8 * memory.QUICK_PER_CATEGORY and len({e.category for e in part}) == 8


ALLOCATE = "import time; b = bytearray({mib} * 2**20); print('ready', flush=True); time.sleep({sleep})"


def test_tree_rss_sums_a_child_and_its_grandchild():
    grandchild = ALLOCATE.format(mib=96, sleep=30)
    code = (f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', {grandchild!r}]); "
            + ALLOCATE.format(mib=64, sleep=30))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        deadline, rss = time.monotonic() + 20, 0
        while time.monotonic() < deadline:
            rss = memory.tree_rss_bytes(child.pid)
            if rss >= 160 * 2**20:
                break
            time.sleep(0.1)
        assert rss >= 160 * 2**20
        assert memory.vmrss_bytes(child.pid) < 160 * 2**20  # the child alone holds less
        assert len(memory.process_tree(child.pid, memory.parent_map())) == 2
    finally:
        for pid in memory.process_tree(child.pid, memory.parent_map())[1:]:
            os.kill(pid, signal.SIGTERM)
        child.kill()
        child.wait()


def test_monitor_reports_stage_peaks():
    code = ("import logging, time; logging.basicConfig(level=logging.INFO); log = logging.getLogger('drirl');"
            "log.info('stage small: running'); time.sleep(0.6);"
            "log.info('stage big: running'); b = bytearray(128 * 2**20); time.sleep(0.8)")
    result = memory.Monitor([sys.executable, "-c", code], interval=0.1, echo=False).run()
    assert result.exit_code == 0
    stages = {s.stage: s for s in result.stages}
    assert {"small", "big"} <= set(stages)
    assert stages["big"].peak_rss_bytes >= 128 * 2**20 > stages["small"].peak_rss_bytes
    assert result.peak_stage == "big" and result.peak_rss_bytes == stages["big"].peak_rss_bytes
    assert result.ru_maxrss_bytes >= 128 * 2**20
    table = memory.render(result, 8.0)
    assert "| big |" in table and "within the 8 GiB target" in table


# ------------------------------------------------------------------------------------------------ gpu_check
gpu_check = _load("gpu_check")


def test_pick_backend_orders_trainable_backends_by_measured_speed():
    rows = [rollout.Row("dynamic", "8×8", new_tokens=100, seconds=1.0),
            rollout.Row("static", "8×8", new_tokens=900, seconds=1.0),
            rollout.Row("static+compile", "8×8", note="failed (RuntimeError: x)"),
            rollout.Row("drirl", "8×8", new_tokens=5000, seconds=1.0)]  # not a GRPO rollout backend
    assert gpu_check.pick_backend(rows) == ["static", "dynamic", "static+compile"]
    assert gpu_check.pick_backend([]) == list(gpu_check.TRAINABLE_BACKENDS)


def test_verdict_treats_values_as_costs():
    assert gpu_check.verdict(1.05, 1.05) == "met"
    assert gpu_check.verdict(1.051, 1.05) == "missed"


def test_rollout_backends_map_to_trl_fields():
    from drirl.align.recipe import AlignConfig, build_grpo_config, rollout_arguments
    from drirl.errors import ConfigError

    assert rollout_arguments("dynamic") == {}
    assert rollout_arguments("vllm") == {"use_vllm": True}
    compiled = build_grpo_config(AlignConfig(output="x", rollout_backend="static+compile"), "/tmp/x")
    assert (compiled.cache_implementation, compiled.compile_generation, compiled.pad_to_multiple_of) == (
        "static", True, 128)
    plain = build_grpo_config(AlignConfig(output="x"), "/tmp/x")
    assert (plain.cache_implementation, plain.compile_generation, plain.use_vllm) == (None, False, False)
    with pytest.raises(ConfigError, match="rollout_backend"):
        rollout_arguments("paged")


def test_policy_dtype_is_float32_on_a_cpu_and_follows_an_explicit_setting(monkeypatch):
    import torch

    from drirl import trainer_setup as training
    from drirl.align.recipe import policy_torch_dtype

    monkeypatch.setattr(training, "has_cuda", lambda: False)
    assert policy_torch_dtype("auto", "true") is torch.float32  # bf16 runs under autocast on a CPU
    assert policy_torch_dtype("bfloat16", "false") is torch.bfloat16
    # A static KV cache takes the weights' dtype: under bf16 the weights must be bf16 too, on a CPU as well.
    assert policy_torch_dtype("auto", "true", "static") is torch.bfloat16
    assert policy_torch_dtype("auto", "false", "static") is torch.float32
    monkeypatch.setattr(training, "has_cuda", lambda: True)
    assert policy_torch_dtype("auto", "true") is torch.bfloat16
    assert policy_torch_dtype("auto", "false") is torch.float32


@pytest.mark.slow
def test_gpu_check_tiny_mode_prints_one_table_with_every_section(tmp_path):
    """The GPU check's tiny mode on the CPU, so the script cannot rot between GPU sessions."""
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_check.py"), "--tiny", "--out", str(out)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    table = result.stdout[result.stdout.index("| section | item |"):]
    for row in ("| rollout | dynamic new tokens/s |", "| rollout | static new tokens/s |",
                "| step | GRPO-S / TRL step time |", "| step | TRL GRPOTrainer as a user gets it (s/step) |",
                "| align | drirl align, 2 steps, bf16 false, "):
        assert row in table, table
    assert "failed" not in table and "skipped" not in table.replace("skipped: not installed", ""), table
    record = json.loads((out / "gpu_check.json").read_text())
    assert record["align"]["alignment"]["steps"] == 2
    assert len(record["step"]["times"]["grpo-s"]) == 1  # --steps 1 in tiny mode: the warm-up step is left out
    assert (out / "gpu_check.md").read_text().strip() == table.split("\n\nrerun:")[0].strip()


def test_training_summary_averages_logged_steps_and_compares_first_and_last_rewards():
    summary = _load("training_summary")
    history = [{"reward": r, "scaling/alpha/std": 0.1 * i, "frac_reward_zero_std": 0.5, "reward_std": 1.0}
               for i, r in enumerate([0.0, 1.0, 2.0, 3.0])] + [{"train_runtime": 9.0}]  # the final summary row
    row = summary.summarise(history, window=2)
    assert row["steps"] == 4
    assert row["reward first"] == pytest.approx(0.5) and row["reward last"] == pytest.approx(2.5)
    assert row["α sd"] == pytest.approx(0.15)
    assert row["zero-sd groups"] == pytest.approx(0.5)
    assert row["clipped"] != row["clipped"]  # not logged (no scaling): NaN, not 0


def test_eval_run_on_finds_every_seed_of_each_method(tmp_path):
    finder = _load("eval_run_on")
    (tmp_path / "config.json").write_text(json.dumps({"run": {"seeds": [3, 5]}}))
    for folder, model in (("eval-sft", "m/sft3"), ("eval-sft/seed-5", "m/sft5"), ("eval-dr-irl", "m/dr3")):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "stage.json").write_text(json.dumps({"settings": {"model": model, "judge": "rules"}}))
    (tmp_path / "eval-dr-irl" / "seed-5").mkdir()  # unfinished: no stage.json
    found = finder.run_evaluations(tmp_path, ["sft", "dr-irl", "grpo"])
    assert [(m, s, str(p), c["model"]) for m, s, p, c in found] == [
        ("sft", 3, "eval-sft", "m/sft3"), ("sft", 5, "eval-sft/seed-5", "m/sft5"),
        ("dr-irl", 3, "eval-dr-irl", "m/dr3")]


def test_identical_share_counts_the_same_response_to_the_same_prompt(tmp_path):
    rejudge = _load("rejudge_run")
    rows_a = [{"set": "harmful", "id": 1, "response": "No."}, {"set": "benign", "id": 1, "response": "Sure: x"},
              {"set": "harmful", "id": 2, "response": "Here is how"}, {"set": "qa", "id": 9, "response": "Paris"}]
    rows_b = [{"set": "harmful", "id": 1, "response": "No."}, {"set": "benign", "id": 1, "response": "I can't"},
              {"set": "harmful", "id": 2, "response": "Here is how"}, {"set": "qa", "id": 9, "response": "Lyon"},
              {"set": "harmful", "id": 3, "response": "only in b"}]
    for name, rows in (("a", rows_a), ("b", rows_b)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # harmful 1 and 2 match, benign 1 differs (same id, other set), QA is not a safety set, harmful 3 is b's alone
    assert rejudge.identical_share(tmp_path / "a", tmp_path / "b") == pytest.approx(2 / 3)


def test_a_one_seed_run_is_labelled_with_its_own_seed(tmp_path):
    # config.json of a run without run.seeds: its one seed is run.seed (here 7), whose stages have no seed-N folder.
    finder = _load("eval_run_on")
    (tmp_path / "config.json").write_text(json.dumps({"run": {"seeds": [], "seed": 7}}))
    (tmp_path / "eval-sft").mkdir()
    (tmp_path / "eval-sft" / "stage.json").write_text(json.dumps({"settings": {"model": "m/sft7"}}))
    assert [(m, s, str(p)) for m, s, p, _ in finder.run_evaluations(tmp_path, ["sft"])] == [("sft", 7, "eval-sft")]
