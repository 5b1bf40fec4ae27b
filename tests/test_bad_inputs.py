"""Bad input at every `drirl` entry point: one clear line, the right exit code, no output left behind.

Each case of ``CASES`` writes a broken input (malformed JSON, truncated YAML, latin-1 or UTF-16 bytes, an empty
file, a wrong type, an unknown key or category, a missing file, NaN/inf where a number is read), runs
``drirl.cli.main`` in-process and checks:

* the exit code (2 config error, 3 data error, 4 model error, per :mod:`drirl.errors`; 2 for argparse usage);
* exactly one ``error:`` line on stderr, holding the expected excerpt (file, line and field where they apply), and
  no traceback;
* that the command's output path does not exist afterwards (nor a ``.partial`` work folder).

Almost every case fails before any model loads. The second half covers what needs the tiny model: prompts longer
than its context (256 positions), NaN/inf rewards through GRPOSTrainer, NaN scores of a classifier judge.

``python tests/test_bad_inputs.py`` prints the table of docs/reliability.md from actual runs of ``CASES``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

GOOD = {"id": "crime-1", "prompt": "How do I steal a car?", "category": "crime",
        "demonstration": "Draft: theft -> refuse\nAnswer: I can't help with that.", "split": "train"}
BUNDLE_MANIFEST = {"format": "drirl-reward-bundle/1", "backbone": "none", "mode": "lora",
                   "models": {"crime": {"path": "crime"}}}


def _line(**changes) -> str:
    return json.dumps({**GOOD, **changes}, ensure_ascii=False)


class Ctx:
    """A scratch folder for one case, with a writer for its input files."""

    def __init__(self, root: Path, tiny_lm: Callable[[], Path]):
        self.root = root
        self._tiny_lm = tiny_lm

    def path(self, name: str) -> str:
        return str(self.root / name)

    def write(self, name: str, content: str | bytes) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        return str(path)

    def pipeline_yaml(self, rest: str = "") -> str:
        """p.yaml for `drirl run` with run.output set to ./out, then ``rest``."""
        return self.write("p.yaml", f"run:\n  output: {self.path('out')}\n{rest}")

    def good_data(self) -> str:
        return self.write("good.jsonl", _line() + "\n" + _line(id="benign-1", prompt="What is 2+2?",
                                                                category="benign", demonstration="4.") + "\n")

    @property
    def tiny_lm(self) -> str:
        return str(self._tiny_lm())


@dataclass
class Case:
    id: str
    entry: str  # the subcommand, for the table
    what: str  # the bad input, in words
    build: Callable[[Ctx], list[str]]  # writes the inputs, returns argv
    code: int
    message: str | None  # excerpt of the one error line; None: the input is accepted (code 0)
    outputs: tuple[str, ...] = ()  # paths under the case folder that must not exist afterwards


LATIN1_LINE = _line(id="crime-2", prompt="Où est le café ?").encode("latin-1")
LONG_PROMPT = "please " * 400_000  # one 2.8 MB line


def _utf16(text: str) -> bytes:
    return text.encode("utf-16")


CASES: list[Case] = [
    # ------------------------------------------------------------------------------------------ models prepare
    Case("models-unknown-flag", "models prepare", "unknown flag", lambda c: ["models", "prepare", "--bogus"],
         2, "unrecognized arguments: --bogus"),
    # ------------------------------------------------------------------------------------------ data stats
    Case("stats-bad-json", "data stats", "malformed JSON on line 2",
         lambda c: ["data", "stats", c.write("bad.jsonl", _line() + "\n{not json\n")],
         3, "bad.jsonl:2: malformed JSON: Expecting property name"),
    Case("stats-latin1", "data stats", "latin-1 bytes on line 2",
         lambda c: ["data", "stats", c.write("latin1.jsonl", _line().encode() + b"\n" + LATIN1_LINE + b"\n")],
         3, "latin1.jsonl:2: not valid UTF-8 (byte"),
    Case("stats-utf16", "data stats", "a UTF-16 file",
         lambda c: ["data", "stats", c.write("utf16.jsonl", _utf16(_line() + "\n"))],
         3, "utf16.jsonl:1: not valid UTF-8 (byte 0) (UTF-16? save the file as UTF-8)"),
    Case("stats-empty", "data stats", "an empty file",
         lambda c: ["data", "stats", c.write("empty.jsonl", "")], 3, "empty.jsonl: no records: the file is empty"),
    Case("stats-blank-lines", "data stats", "only blank lines",
         lambda c: ["data", "stats", c.write("blank.jsonl", "\n \n\n")], 3, "blank.jsonl: no records"),
    Case("stats-missing", "data stats", "a missing file",
         lambda c: ["data", "stats", c.path("nope.jsonl")], 3, "nope.jsonl: file not found"),
    Case("stats-folder", "data stats", "a folder that is no dataset",
         lambda c: ["data", "stats", str(Path(c.write("dir/x.txt", "x")).parent)],
         3, "not a JSONL file or a datasets folder"),
    Case("stats-unknown-category", "data stats", "unknown category",
         lambda c: ["data", "stats", c.write("cat.jsonl", _line(category="weapons") + "\n")],
         3, "cat.jsonl:1 field 'category': unknown category 'weapons' (taxonomy bundled:"),
    Case("stats-unknown-field", "data stats", "unknown field",
         lambda c: ["data", "stats", c.write("field.jsonl", _line(bogus=1) + "\n")],
         3, "field.jsonl:1 field 'bogus': unknown field"),
    Case("stats-wrong-type", "data stats", "prompt is a number",
         lambda c: ["data", "stats", c.write("type.jsonl", _line(prompt=42) + "\n")],
         3, "type.jsonl:1 field 'prompt': prompt must be a string or a list of chat messages, got int"),
    Case("stats-nan-id", "data stats", "NaN as the id",
         lambda c: ["data", "stats", c.write("nan.jsonl", _line().replace('"crime-1"', "NaN") + "\n")],
         3, "nan.jsonl:1 field 'id': id must be a non-empty string, got nan"),
    Case("stats-long-line", "data stats", "a 2.8 MB line (accepted: no line limit; prompt length is handled "
                                           "where a model reads it)",
         lambda c: ["data", "stats", c.write("long.jsonl", _line(prompt=LONG_PROMPT) + "\n")], 0, None),
    Case("stats-taxonomy-truncated", "data stats", "truncated taxonomy YAML",
         lambda c: ["data", "stats", c.good_data(), "--taxonomy",
                    c.write("tax.yaml", "categories:\n  - {id: weapons, name: [Weap\n")],
         3, "tax.yaml:3: invalid YAML"),
    Case("stats-taxonomy-latin1", "data stats", "latin-1 taxonomy",
         lambda c: ["data", "stats", c.good_data(), "--taxonomy",
                    c.write("tax.yaml", "categories:\n  - id: weapons\n    name: Armes à feu\n".encode("latin-1"))],
         3, "tax.yaml:3: not valid UTF-8"),
    # ------------------------------------------------------------------------------------------ data validate
    Case("validate-problems", "data validate", "bad JSON + unknown category",
         lambda c: ["data", "validate", c.write("mixed.jsonl", "\n".join(
             [_line(), "{oops", _line(id="x-2", category="weapons")]) + "\n")],
         3, "mixed.jsonl: 2 invalid record(s) (malformed JSON: 1, unknown category: 1); 1 valid"),
    Case("validate-empty", "data validate", "an empty file",
         lambda c: ["data", "validate", c.write("empty.jsonl", "")], 3, "empty.jsonl: no records"),
    # ------------------------------------------------------------------------------------------ data balance
    Case("balance-bad-json", "data balance", "malformed JSON on line 2",
         lambda c: ["data", "balance", c.write("bad.jsonl", _line() + "\n{\n"), "--output", c.path("out.jsonl")],
         3, "bad.jsonl:2: malformed JSON", ("out.jsonl", "out.jsonl.card.json")),
    Case("balance-empty", "data balance", "an empty input",
         lambda c: ["data", "balance", c.write("empty.jsonl", ""), "--output", c.path("out.jsonl")],
         3, "empty.jsonl: no records", ("out.jsonl",)),
    Case("balance-config-truncated", "data balance", "truncated YAML config",
         lambda c: ["data", "balance", c.good_data(), "--output", c.path("out.jsonl"),
                    "--config", c.write("b.yaml", "strategy: upsample\nmax_repeats: [1,\n")],
         2, "b.yaml: invalid YAML at line 3", ("out.jsonl",)),
    Case("balance-config-wrong-type", "data balance", "max_repeats: ten",
         lambda c: ["data", "balance", c.good_data(), "--output", c.path("out.jsonl"),
                    "--config", c.write("b.yaml", "max_repeats: ten\n")],
         2, "b.yaml, key 'max_repeats': wrong type: expected an integer, got 'ten'", ("out.jsonl",)),
    Case("balance-config-list", "data balance", "a list where a number is expected",
         lambda c: ["data", "balance", c.good_data(), "--output", c.path("out.jsonl"),
                    "--config", c.write("b.yaml", "max_repeats: [1, 2]\n")],
         2, "key 'max_repeats': wrong type: expected an integer, got [1, 2]", ("out.jsonl",)),
    Case("balance-config-unknown-key", "data balance", "unknown key",
         lambda c: ["data", "balance", c.good_data(), "--output", c.path("out.jsonl"),
                    "--config", c.write("b.yaml", "max_repeat: 2\n")],
         2, "key 'max_repeat': unknown key for BalanceConfig (did you mean max_repeats?)", ("out.jsonl",)),
    Case("balance-config-utf16", "data balance", "UTF-16 config",
         lambda c: ["data", "balance", c.good_data(), "--output", c.path("out.jsonl"),
                    "--config", c.write("b.yaml", _utf16("max_repeats: 2\n"))],
         2, "b.yaml: config file is not valid UTF-8 (line 1, byte 0)", ("out.jsonl",)),
    Case("balance-config-nan", "data balance", "target_per_category: .nan",
         lambda c: ["data", "balance", c.good_data(), "--output", c.path("out.jsonl"),
                    "--config", c.write("b.yaml", "strategy: target\ntarget_per_category: .nan\n")],
         2, "key 'target_per_category': wrong type: expected int | null, got nan", ("out.jsonl",)),
    Case("balance-config-missing", "data balance", "missing config file",
         lambda c: ["data", "balance", c.good_data(), "--output", c.path("out.jsonl"), "--config", c.path("no.yaml")],
         2, "no.yaml: config file not found", ("out.jsonl",)),
    Case("balance-flag-wrong-type", "data balance", "--max_repeats three",
         lambda c: ["data", "balance", c.good_data(), "--output", c.path("out.jsonl"), "--max_repeats", "three"],
         2, "command line, key 'max_repeats': wrong type: expected an integer, got 'three'", ("out.jsonl",)),
    # ------------------------------------------------------------------------------------------ data import
    Case("import-csv-latin1", "data import", "latin-1 CSV (bad byte on line 3)",
         lambda c: ["data", "import", "harmbench", c.write("hb.csv", "Behavior,SemanticCategory\nsteal a car,"
                                                           "illegal\nvoler un vélo,illegal\n".encode("latin-1")),
                    "--output", c.path("out.jsonl")],
         3, "hb.csv:3: not valid UTF-8", ("out.jsonl",)),
    Case("import-csv-utf16", "data import", "UTF-16 CSV",
         lambda c: ["data", "import", "harmbench", c.write("hb.csv", _utf16("Behavior,SemanticCategory\nx,illegal\n")),
                    "--output", c.path("out.jsonl")],
         3, "hb.csv:1: not valid UTF-8 (byte 0) (UTF-16?", ("out.jsonl",)),
    Case("import-csv-empty", "data import", "an empty CSV",
         lambda c: ["data", "import", "harmbench", c.write("hb.csv", ""), "--output", c.path("out.jsonl")],
         3, "hb.csv: the file is empty (no header row)", ("out.jsonl",)),
    Case("import-missing-column", "data import", "CSV without the prompt column",
         lambda c: ["data", "import", "harmbench", c.write("hb.csv", "Prompt,SemanticCategory\nx,illegal\n"),
                    "--output", c.path("out.jsonl")],
         3, "hb.csv:1 field 'Behavior': missing column (columns: Prompt, SemanticCategory)", ("out.jsonl",)),
    Case("import-missing-file", "data import", "a missing file",
         lambda c: ["data", "import", "harmbench", c.path("no.csv"), "--output", c.path("out.jsonl")],
         3, "no.csv: file not found", ("out.jsonl",)),
    Case("import-unknown-source", "data import", "unknown source",
         lambda c: ["data", "import", "bogus", c.good_data(), "--output", c.path("out.jsonl")],
         2, "key 'source': unknown source 'bogus'", ("out.jsonl",)),
    Case("import-jsonl-bad-line", "data import", "malformed JSONL line 2",
         lambda c: ["data", "import", "generic", c.write("g.jsonl", '{"prompt": "x", "category": "crime"}\n{x\n'),
                    "--columns", "prompt=prompt,category=category", "--output", c.path("out.jsonl")],
         3, "g.jsonl:2: malformed JSON", ("out.jsonl",)),
    Case("import-unknown-category", "data import", "--category-map to an unknown category",
         lambda c: ["data", "import", "generic", c.write("g.jsonl", '{"prompt": "x", "category": "guns"}\n'),
                    "--columns", "prompt=prompt,category=category", "--category-map", "guns=weapons",
                    "--output", c.path("out.jsonl")],
         2, "key 'guns': maps to unknown category 'weapons' (taxonomy: insult,", ("out.jsonl",)),
    Case("import-mapping-truncated", "data import", "truncated mapping YAML",
         lambda c: ["data", "import", "harmbench", c.write("hb.csv", "Behavior,SemanticCategory\nx,illegal\n"),
                    "--mapping", c.write("map.yaml", "illegal: [crime\n"), "--output", c.path("out.jsonl")],
         2, "map.yaml: invalid YAML at line 2", ("out.jsonl",)),
    # ------------------------------------------------------------------------------------------ data demos
    Case("demos-config-truncated", "data demos", "truncated YAML config",
         lambda c: ["data", "demos", "--config", c.write("d.yaml", "input: x.jsonl\noutput: [\n")],
         2, "d.yaml: invalid YAML at line 3"),
    Case("demos-config-nan", "data demos", "temperature: .nan",
         lambda c: ["data", "demos", "--config", c.write("d.yaml", "temperature: .nan\n"), "--input",
                    c.good_data(), "--output", c.path("out.jsonl")],
         2, "key 'temperature': invalid value: expected a finite number, got nan", ("out.jsonl",)),
    Case("demos-config-inf", "data demos", "--timeout inf",
         lambda c: ["data", "demos", "--input", c.good_data(), "--output", c.path("out.jsonl"), "--timeout", "inf"],
         2, "key 'timeout': invalid value: expected a finite number, got inf", ("out.jsonl",)),
    Case("demos-input-empty", "data demos", "an empty input",
         lambda c: ["data", "demos", "--input", c.write("empty.jsonl", ""), "--output", c.path("out.jsonl")],
         3, "empty.jsonl: no records", ("out.jsonl",)),
    Case("demos-template-latin1", "data demos", "latin-1 template file",
         lambda c: ["data", "demos", "--input", c.good_data(), "--output", c.path("out.jsonl"), "--templates_dir",
                    str(Path(c.write("tpl/crime.txt", "Réponds à {prompt}".encode("latin-1"))).parent)],
         3, "crime.txt:1: not valid UTF-8", ("out.jsonl",)),
    # ------------------------------------------------------------------------------------------ reward train
    Case("reward-config-truncated", "reward train", "truncated YAML config",
         lambda c: ["reward", "train", "--config", c.write("r.yaml", "rounds: 1\nlearning_rate: [1,\n"),
                    "--output", c.path("rm")],
         2, "r.yaml: invalid YAML at line 3", ("rm", "rm.partial")),
    Case("reward-config-wrong-type", "reward train", "rounds: ten",
         lambda c: ["reward", "train", "--config", c.write("r.yaml", "rounds: ten\n"), "--output", c.path("rm")],
         2, "r.yaml, key 'rounds': wrong type: expected an integer, got 'ten'", ("rm", "rm.partial")),
    Case("reward-config-list", "reward train", "negatives_per_prompt: [1, 2]",
         lambda c: ["reward", "train", "--config", c.write("r.yaml", "negatives_per_prompt: [1, 2]\n"),
                    "--output", c.path("rm")],
         2, "key 'negatives_per_prompt': wrong type: expected an integer, got [1, 2]", ("rm", "rm.partial")),
    Case("reward-config-unknown-key", "reward train", "unknown key",
         lambda c: ["reward", "train", "--config", c.write("r.yaml", "epochs: 2\n"), "--output", c.path("rm")],
         2, "key 'epochs': unknown key for RewardTrainConfig", ("rm", "rm.partial")),
    Case("reward-config-latin1", "reward train", "latin-1 config",
         lambda c: ["reward", "train", "--config", c.write("r.yaml", "rounds: 1\nsystem_prompt: 'Réponds'\n"
                                                           .encode("latin-1")), "--output", c.path("rm")],
         2, "r.yaml: config file is not valid UTF-8 (line 2, byte", ("rm", "rm.partial")),
    Case("reward-config-nan-lr", "reward train", "learning_rate: .nan",
         lambda c: ["reward", "train", "--config", c.write("r.yaml", "learning_rate: .nan\n"), "--output",
                    c.path("rm")],
         2, "r.yaml, key 'learning_rate': invalid value: expected a finite number, got nan", ("rm", "rm.partial")),
    Case("reward-flag-inf-lr", "reward train", "--learning_rate inf",
         lambda c: ["reward", "train", "--output", c.path("rm"), "--learning_rate", "inf"],
         2, "command line, key 'learning_rate': invalid value: expected a finite number, got inf",
         ("rm", "rm.partial")),
    Case("reward-unknown-category", "reward train", "--categories crime,weapons",
         lambda c: ["reward", "train", "--output", c.path("rm"), "--categories", "crime,weapons"],
         2, "key 'categories': unknown category 'weapons' (taxonomy: insult,", ("rm", "rm.partial")),
    Case("reward-data-missing", "reward train", "a missing data file",
         lambda c: ["reward", "train", "--output", c.path("rm"), "--data", c.path("no.jsonl")],
         3, "no.jsonl: file not found", ("rm", "rm.partial")),
    Case("reward-data-empty", "reward train", "an empty data file",
         lambda c: ["reward", "train", "--output", c.path("rm"), "--data", c.write("empty.jsonl", "")],
         3, "empty.jsonl: no records", ("rm", "rm.partial")),
    Case("reward-bad-policy", "reward train", "a policy path that does not exist",
         lambda c: ["reward", "train", "--output", c.path("rm"), "--data", c.good_data(), "--policy",
                    c.path("no-model")],
         4, "no-model' is neither an existing folder, a hub id (org/name), nor a bundled alias",
         ("rm", "rm.partial")),
    # ------------------------------------------------------------------------------------------ reward eval
    Case("reward-eval-no-bundle", "reward eval", "a folder without manifest.json",
         lambda c: ["reward", "eval", str(Path(c.write("rm/x.txt", "")).parent)],
         4, "is not a reward-model bundle: manifest.json is missing", ("rm/cross_category.png",)),
    Case("reward-eval-bad-manifest", "reward eval", "malformed manifest.json",
         lambda c: ["reward", "eval", str(Path(c.write("rm/manifest.json", '{"format": ')).parent)],
         3, "manifest.json: malformed JSON", ("rm/cross_category.png",)),
    Case("reward-eval-nan-max-length", "reward eval", "manifest max_length NaN",
         lambda c: ["reward", "eval", str(Path(c.write("rm/manifest.json", json.dumps(
             {**BUNDLE_MANIFEST, "max_length": math.nan}))).parent)],
         3, "manifest.json field 'max_length': must be a positive integer, got nan", ("rm/cross_category.png",)),
    Case("reward-eval-zero", "reward eval", "--negatives_per_prompt 0",
         lambda c: ["reward", "eval", c.path("rm"), "--negatives_per_prompt", "0"], 2, "must be >= 1, got 0"),
    # ------------------------------------------------------------------------------------------ align
    Case("align-config-truncated", "align", "truncated YAML config",
         lambda c: ["align", "--config", c.write("a.yaml", "max_steps: 2\nlearning_rate: [1,\n"),
                    "--output", c.path("policy")],
         2, "a.yaml: invalid YAML at line 3", ("policy",)),
    Case("align-config-wrong-type", "align", 'max_steps: "ten"',
         lambda c: ["align", "--config", c.write("a.yaml", 'max_steps: "ten"\n'), "--output", c.path("policy")],
         2, "a.yaml, key 'max_steps': wrong type: expected an integer, got 'ten'", ("policy",)),
    Case("align-config-list", "align", "max_steps: [1, 2]",
         lambda c: ["align", "--config", c.write("a.yaml", "max_steps: [1, 2]\n"), "--output", c.path("policy")],
         2, "key 'max_steps': wrong type: expected an integer, got [1, 2]", ("policy",)),
    Case("align-zero-steps", "align", "max_steps: 0",
         lambda c: ["align", "--config", c.write("a.yaml", "max_steps: 0\n"), "--output", c.path("policy")],
         2, "max_steps must be >= 1, got 0", ("policy",)),
    Case("align-config-unknown-key", "align", "unknown key",
         lambda c: ["align", "--config", c.write("a.yaml", "max_step: 2\n"), "--output", c.path("policy")],
         2, "key 'max_step': unknown key for AlignConfig (did you mean max_steps?)", ("policy",)),
    Case("align-config-utf16", "align", "UTF-16 config",
         lambda c: ["align", "--config", c.write("a.yaml", _utf16("max_steps: 2\n")), "--output", c.path("policy")],
         2, "a.yaml: config file is not valid UTF-8 (line 1, byte 0)", ("policy",)),
    Case("align-config-top-list", "align", "a YAML list instead of a mapping",
         lambda c: ["align", "--config", c.write("a.yaml", "- max_steps\n- 2\n"), "--output", c.path("policy")],
         2, "a.yaml: the top level must be a mapping of keys to values", ("policy",)),
    Case("align-config-nan-lr", "align", "learning_rate: .nan",
         lambda c: ["align", "--config", c.write("a.yaml", "learning_rate: .nan\n"), "--output", c.path("policy")],
         2, "a.yaml, key 'learning_rate': invalid value: expected a finite number, got nan", ("policy",)),
    Case("align-config-inf-alpha", "align", "alpha_max: .inf",
         lambda c: ["align", "--config", c.write("a.yaml", "alpha_max: .inf\n"), "--output", c.path("policy")],
         2, "key 'alpha_max': invalid value: expected a finite number, got inf", ("policy",)),
    Case("align-flag-nan", "align", "--temperature nan",
         lambda c: ["align", "--output", c.path("policy"), "--temperature", "nan"],
         2, "command line, key 'temperature': invalid value: expected a finite number, got nan", ("policy",)),
    Case("align-negative-eval-prompts", "align", "--eval_prompts -1",
         lambda c: ["align", "--output", c.path("policy"), "--eval_prompts", "-1"],
         2, "eval_prompts must be >= 0 and eval_steps >= 1, got -1 and 10", ("policy",)),
    Case("align-config-missing", "align", "missing config file",
         lambda c: ["align", "--config", c.path("no.yaml"), "--output", c.path("policy")],
         2, "no.yaml: config file not found", ("policy",)),
    Case("align-data-missing", "align", "a missing data file",
         lambda c: ["align", "--output", c.path("policy"), "--data", c.path("no.jsonl"), "--reward_models",
                    c.path("rm")],
         3, "no.jsonl: file not found", ("policy",)),
    Case("align-data-empty", "align", "an empty data file",
         lambda c: ["align", "--output", c.path("policy"), "--data", c.write("empty.jsonl", ""), "--reward_models",
                    c.path("rm")],
         3, "empty.jsonl: no records", ("policy",)),
    Case("align-no-bundle", "align", "a reward-model folder without manifest",
         lambda c: ["align", "--output", c.path("policy"), "--data", c.good_data(), "--reward_models",
                    str(Path(c.write("rm/x.txt", "")).parent)],
         4, "rm is not a reward-model bundle: manifest.json is missing", ("policy",)),
    # ------------------------------------------------------------------------------------------ eval
    Case("eval-config-truncated", "eval", "truncated YAML config",
         lambda c: ["eval", "m", "--config", c.write("e.yaml", "judge: [refusal\n"), "--output", c.path("ev")],
         2, "e.yaml: invalid YAML at line 2", ("ev",)),
    Case("eval-config-wrong-type", "eval", "max_new_tokens: .nan",
         lambda c: ["eval", "m", "--config", c.write("e.yaml", "max_new_tokens: .nan\n"), "--output", c.path("ev")],
         2, "e.yaml, key 'max_new_tokens': wrong type: expected an integer, got nan", ("ev",)),
    Case("eval-config-unknown-key", "eval", "unknown key",
         lambda c: ["eval", "m", "--config", c.write("e.yaml", "judges: refusal\n"), "--output", c.path("ev")],
         2, "key 'judges': unknown key for EvalConfig", ("ev",)),
    Case("eval-unknown-judge", "eval", "--judge vibes",
         lambda c: ["eval", "m", "--judge", "vibes", "--output", c.path("ev")],
         2, "key 'judge': unknown judge; choose one of", ("ev",)),
    Case("eval-data-missing", "eval", "a missing eval_data file",
         lambda c: ["eval", "m", "--eval_data", c.path("no.jsonl"), "--output", c.path("ev")],
         3, "no.jsonl: file not found", ("ev",)),
    Case("eval-data-empty", "eval", "an empty eval_data file",
         lambda c: ["eval", "m", "--eval_data", c.write("empty.jsonl", ""), "--output", c.path("ev")],
         3, "empty.jsonl: no records", ("ev",)),
    Case("eval-data-chat-prompt", "eval", "a chat-message prompt",
         lambda c: ["eval", "m", "--eval_data", c.write("chat.jsonl", _line(prompt=[
             {"role": "user", "content": "How do I steal a car?"}], split="test") + "\n"), "--output", c.path("ev")],
         3, "chat.jsonl field 'prompt': example 'crime-1' has a chat-message prompt", ("ev",)),
    Case("eval-data-no-test-rows", "eval", "an eval_data file whose rows are all train rows",
         lambda c: ["eval", "m", "--eval_data", c.write("train.jsonl", _line() + "\n"), "--output", c.path("ev")],
         3, "train.jsonl field 'split': no test rows to evaluate (its splits: train 1); import an evaluation set",
         ("ev",)),
    Case("eval-qa-nan-answer", "eval", "QA answers: [NaN]",
         lambda c: ["eval", "m", "--qa_data", c.write("qa.jsonl", '\n{"question": "2+2?", "answers": [NaN]}\n'),
                    "--output", c.path("ev")],
         3, "qa.jsonl:2 field 'answers': answers must be a non-empty list of strings", ("ev",)),
    Case("eval-qa-latin1", "eval", "latin-1 QA file",
         lambda c: ["eval", "m", "--qa_data", c.write("qa.jsonl", '{"question": "Où?", "answers": ["là"]}\n'
                                                      .encode("latin-1")), "--output", c.path("ev")],
         3, "qa.jsonl:1: not valid UTF-8", ("ev",)),
    Case("eval-qa-empty", "eval", "an empty QA file",
         lambda c: ["eval", "m", "--qa_data", c.write("qa.jsonl", ""), "--output", c.path("ev")],
         3, "qa.jsonl: no QA items: the file is empty", ("ev",)),
    Case("eval-jailbreaks-utf16", "eval", "UTF-16 jailbreak templates",
         lambda c: ["eval", "m", "--jailbreak_templates", c.write("jb.yaml", _utf16("- id: a\n")),
                    "--output", c.path("ev")],
         3, "jb.yaml:1: not valid UTF-8 (byte 0) (UTF-16?", ("ev",)),
    # ------------------------------------------------------------------------------------------ data split / merge
    Case("split-share-out-of-range", "data split", "--test 1.5",
         lambda c: ["data", "split", c.good_data(), "--output", c.path("s.jsonl"), "--test", "1.5"],
         2, "command line, key 'test': must lie in [0, 1)", ("s.jsonl",)),
    Case("merge-duplicate-id", "data merge", "the same id in two files",
         lambda c: ["data", "merge", c.write("a.jsonl", _line() + "\n"), c.write("b.jsonl", _line() + "\n"),
                    "--output", c.path("m.jsonl")],
         3, "b.jsonl field 'id': id 'crime-1' is in", ("m.jsonl",)),
    # ------------------------------------------------------------------------------------------ judge
    Case("judge-missing", "judge", "a missing responses file", lambda c: ["judge", c.path("no.jsonl"), "--json"],
         3, "no.jsonl: file not found"),
    Case("judge-empty", "judge", "an empty responses file", lambda c: ["judge", c.write("r.jsonl", ""), "--json"],
         3, "r.jsonl: no responses: the file is empty"),
    Case("judge-bad-json", "judge", "malformed JSON on line 2",
         lambda c: ["judge", c.write("r.jsonl", '{"prompt": "p", "response": "r"}\n{not json\n'), "--json"],
         3, "r.jsonl:2: malformed JSON"),
    Case("judge-no-response", "judge", "a row without response",
         lambda c: ["judge", c.write("r.jsonl", '{"prompt": "p", "response": "r"}\n{"prompt": "p"}\n')],
         3, "r.jsonl:2 field 'response': missing response"),
    Case("judge-unknown-judge", "judge", "--judge vibes",
         lambda c: ["judge", c.write("r.jsonl", '{"prompt": "p", "response": "r"}\n'), "--judge", "vibes"],
         2, "invalid choice: 'vibes'"),
    Case("align-report-to-typo", "align", "--report_to tensorbord",
         lambda c: ["align", "--output", c.path("al"), "--reward_models", c.path("rm"), "--report_to", "tensorbord"],
         2, "key 'report_to': unknown logger 'tensorbord'; choose none, tensorboard, wandb, mlflow", ("al",)),
    Case("eval-reward-models-a-file", "eval", "--reward_models: a file",
         lambda c: ["eval", "m", "--reward_models", c.write("rm.txt", "x"), "--output", c.path("ev")],
         4, "rm.txt is a file, not a reward-model bundle", ("ev",)),
    Case("eval-reward-models-not-a-bundle", "eval", "--reward_models: a folder without manifest",
         lambda c: ["eval", "m", "--reward_models", str(Path(c.write("rm/x.txt", "")).parent), "--output",
                    c.path("ev")],
         4, "rm is not a reward-model bundle: manifest.json is missing", ("ev",)),
    Case("eval-bad-model", "eval", "a model path that does not exist",
         lambda c: ["eval", c.path("no-model"), "--jailbreaks", "false", "--qa_limit", "1", "--output", c.path("ev")],
         4, "no-model' is neither an existing folder", ("ev",)),
    Case("eval-no-room-for-prompt", "eval", "max_new_tokens >= the model's context (tiny model: 256)",
         lambda c: ["eval", c.tiny_lm, "--max_new_tokens", "300", "--jailbreaks", "false", "--qa_limit", "1",
                    "--device", "cpu", "--output", c.path("ev")],
         2, "key 'max_new_tokens': 300 new tokens leave no room for the prompt in the model's context of 256 "
            "tokens", ("ev",)),
    # ------------------------------------------------------------------------------------------ run / demo
    Case("run-config-truncated", "run", "truncated YAML",
         lambda c: ["run", c.write("p.yaml", "run:\n  output: out\nalign: {max_steps: 2\n")],
         2, "p.yaml: invalid YAML at line 4"),
    Case("run-unknown-section", "run", "unknown section",
         lambda c: ["run", c.pipeline_yaml("rewards: {}\n")],
         2, "key 'rewards': unknown section(s); expected run, reward, align, eval", ("out",)),
    Case("run-wrong-type", "run", 'align.max_steps: "ten"',
         lambda c: ["run", c.pipeline_yaml("align:\n  max_steps: ten\n")],
         2, "p.yaml [align], key 'max_steps': wrong type: expected an integer, got 'ten'", ("out",)),
    Case("run-nan-lr", "run", "reward.learning_rate: .nan",
         lambda c: ["run", c.pipeline_yaml("reward:\n  learning_rate: .nan\n")],
         2, "p.yaml [reward], key 'learning_rate': invalid value: expected a finite number, got nan", ("out",)),
    Case("run-set-nan", "run", "--set align.learning_rate=.nan",
         lambda c: ["run", c.pipeline_yaml(), "--set",
                    "align.learning_rate=.nan"],
         2, "command line (--set align.learning_rate): invalid value: expected a finite number, got nan", ("out",)),
    Case("run-set-malformed", "run", "--set align.max_steps (no =)",
         lambda c: ["run", c.pipeline_yaml(), "--set", "align.max_steps"],
         2, "--set expects SECTION.KEY=VALUE, got 'align.max_steps'", ("out",)),
    Case("run-sft-unknown-key", "run", "sft.epochs (not a field; checked before any stage runs)",
         lambda c: ["run", c.pipeline_yaml("sft:\n  epochs: 2\n")],
         2, "p.yaml [sft], key 'epochs': unknown key for SFTBaselineConfig", ("out",)),
    Case("run-bon-zero", "run", "bon.n: 0",
         lambda c: ["run", c.pipeline_yaml("bon:\n  n: 0\n")],
         2, "p.yaml [bon]: n must be >= 1, got 0", ("out",)),
    Case("run-unknown-method", "run", "methods: [base, magic]",
         lambda c: ["run", c.pipeline_yaml("  methods: [base, magic]\n")],
         2, "unknown method(s) magic", ("out",)),
    Case("run-missing-output", "run", "no run.output",
         lambda c: ["run", c.write("p.yaml", "run:\n  seed: 1\n")], 2, "key 'output': missing required field"),
    Case("run-config-missing", "run", "missing config file",
         lambda c: ["run", c.path("no.yaml")], 2, "no.yaml: config file not found"),
    Case("demo-set-wrong-type", "demo", "--set align.max_steps=ten",
         lambda c: ["demo", "--output", c.path("demo"), "--set", "align.max_steps=ten"],
         2, "command line (--set align.max_steps): wrong type: expected an integer, got 'ten'", ("demo",)),
    Case("demo-set-nan", "demo", "--set reward.learning_rate=.nan",
         lambda c: ["demo", "--output", c.path("demo"), "--set", "reward.learning_rate=.nan"],
         2, "command line (--set reward.learning_rate): invalid value: expected a finite number, got nan", ("demo",)),
    Case("demo-config-truncated", "demo", "truncated --config YAML",
         lambda c: ["demo", "--output", c.path("demo"), "--config", c.write("d.yaml", "run: [\n")],
         2, "d.yaml: invalid YAML at line 2", ("demo",)),
]


def run_case(case: Case, root: Path, tiny_lm: Callable[[], Path]) -> tuple[int, str, str]:
    """Run one case in-process; returns (exit code, stderr, stdout). Never raises for the command's errors."""
    import contextlib
    import io

    from drirl.cli import main

    ctx = Ctx(root, tiny_lm)
    argv = ["--log-level", "WARNING", *case.build(ctx)]
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse usage errors
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, err.getvalue(), out.getvalue()


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("drirl") and ": error: " in line]


@pytest.fixture(autouse=True)
def _offline_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DRIRL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_clear_error(case: Case, tmp_path, request):
    code, stderr, _ = run_case(case, tmp_path, lambda: request.getfixturevalue("tiny_lm_path"))
    assert "Traceback" not in stderr, stderr
    assert code == case.code, stderr
    if case.message is None:
        assert not error_lines(stderr), stderr
    else:
        lines = error_lines(stderr)
        assert len(lines) == 1, stderr
        assert case.message in lines[0], lines[0]
    for relative in case.outputs:
        assert not (tmp_path / relative).exists(), f"{relative} was left behind"
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob(".*.tmp"))


def test_the_cases_cover_every_entry_point():
    from drirl.cli import build_parser

    subcommands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    entries = {c.entry.split()[0] for c in CASES}
    assert set(subcommands) <= entries | {"models"}, set(subcommands) - entries
    data_actions = subcommands["data"]._subparsers._group_actions[0].choices
    assert {f"data {a}" for a in data_actions} <= {c.entry for c in CASES}
    reward_actions = subcommands["reward"]._subparsers._group_actions[0].choices
    assert {f"reward {a}" for a in reward_actions} <= {c.entry for c in CASES}


# ---------------------------------------------------------------------------------------------------------------
# Prompts longer than the model's context (the tiny model has 256 positions)
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_policy(tiny_lm_path):
    import torch

    from drirl.models import load_policy

    torch.set_num_threads(1)
    return load_policy(str(tiny_lm_path))


def test_generate_keeps_the_end_of_an_overlong_prompt_and_counts_it(tiny_policy, caplog):
    from drirl.generation import GenerationSettings, context_limit, generate

    model, tokenizer = tiny_policy
    assert context_limit(model, tokenizer) == 256
    long_prompt = "steal a car " * 300  # ~1800 tokens
    stats: dict = {}
    with caplog.at_level(logging.WARNING, logger="drirl.generation"):
        out = generate(model, tokenizer, [long_prompt, "hi"], GenerationSettings(max_new_tokens=4, batch_size=2),
                       progress=False, stats=stats, bf16=False)
    assert len(out) == 2 and all(len(o) == 1 for o in out)
    assert stats == {"truncated_prompts": 1, "prompts": 2, "context_limit": 256}
    assert "1 of 2 prompt(s) exceed the model's context of 256 tokens (252 for the prompt + 4 new tokens" \
        in caplog.text


def test_generate_refuses_max_new_tokens_that_fill_the_context(tiny_policy):
    from drirl.errors import ConfigError
    from drirl.generation import GenerationSettings, generate

    model, tokenizer = tiny_policy
    with pytest.raises(ConfigError, match="256 new tokens leave no room for the prompt"):
        generate(model, tokenizer, ["hi"], GenerationSettings(max_new_tokens=256), progress=False)


def test_eval_cli_counts_truncated_prompts(tiny_lm_path, tmp_path, capsys):
    from drirl.cli import main

    data = tmp_path / "eval.jsonl"
    data.write_text(_line(split="test", prompt="steal a car " * 300) + "\n"
                    + _line(id="benign-1", prompt="What is 2+2?", category="benign", split="test") + "\n")
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"question": "2+2?", "answers": ["4"]}\n')
    code = main(["--log-level", "WARNING", "eval", str(tiny_lm_path), "--eval_data", str(data), "--qa_data",
                 str(qa), "--jailbreaks", "false", "--max_new_tokens", "2", "--bootstrap_resamples", "10",
                 "--device", "cpu", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["truncated_prompts"] == 1 and summary["n"]["harmful"] == 1


def test_reward_pairs_keep_their_last_tokens_and_are_counted(tiny_policy, caplog):
    from drirl.reward.scoring import encode_pair, fit_max_length

    model, tokenizer = tiny_policy
    stats: dict = {}
    ids = encode_pair(tokenizer, "steal a car " * 100, "Answer: I can't help with that.", 64, stats)
    short = encode_pair(tokenizer, "hi", "hello", 64, stats)
    assert len(ids) == 64 and len(short) < 64 and stats == {"truncated": 1}
    assert tokenizer.decode(ids).endswith("help with that.<|im_end|>\n")  # the end survives
    with caplog.at_level(logging.WARNING, logger="drirl.reward.scoring"):
        assert fit_max_length(1024, model, tokenizer, where="test") == 256
        assert fit_max_length(192, model, tokenizer, where="test") == 192
    assert "max_length 1024 exceeds the model's context of 256 tokens; using 256" in caplog.text


# ---------------------------------------------------------------------------------------------------------------
# NaN / inf numbers produced by models
# ---------------------------------------------------------------------------------------------------------------

class FlakyReward:
    """One group of four per step: NaN, +inf, then two distinct finite rewards; the demonstration of an insult
    prompt gets -inf."""

    __name__ = "flaky_reward"

    def __call__(self, prompts, completions, **kwargs):
        values = [float(i) for i in range(len(completions))]
        values[0], values[1] = math.nan, math.inf
        return values

    def demonstration_reward(self, prompt, demonstration, category):
        return -math.inf if category == "insult" else 3.0


def test_nonfinite_rewards_are_masked_counted_and_overlong_prompts_skipped(tiny_lm_path, tmp_path, monkeypatch,
                                                                           caplog):
    """NaN/inf rewards through GRPOSTrainer: no crash, finite advantages, no poisoned log, counts in the history.

    Without the mask an inf reward makes its group's mean and std infinite: TRL then zeroes every advantage of the
    group (the finite completions' too) and logs ``reward: inf``. One training prompt too long for the context is
    skipped with a count.
    """
    import torch

    from drirl.align import grpo_s
    from drirl.align.recipe import AlignConfig, read_history, run_align
    from drirl.data.schema import Example

    torch.set_num_threads(1)
    seen: dict = {}
    child = grpo_s.GRPOSTrainer._generate_and_score_completions

    def spy(self, inputs):
        out = child(self, inputs)
        seen["advantages"] = out["advantages"].clone()
        seen["scaling"] = self.last_scaling
        seen["skipped"] = self.skipped_prompts
        return out

    monkeypatch.setattr(grpo_s.GRPOSTrainer, "_generate_and_score_completions", spy)
    demo = "Draft: risk -> refuse\nAnswer: I can't help with that."
    examples = [Example(id=f"{c}-{i}", prompt=p, category=c, demonstration=demo, source="test")
                for i, (p, c) in enumerate([("How do I steal a car?", "crime"), ("Insult my boss.", "insult"),
                                            ("steal a car " * 300, "crime")])]
    config = AlignConfig(output=str(tmp_path / "run"), policy=str(tiny_lm_path), max_steps=1,
                         per_device_train_batch_size=4, num_generations=4, max_completion_length=6,
                         scaling_mode="model", bf16="false", save_steps=100, learning_rate=1e-3)
    with caplog.at_level(logging.WARNING, logger="drirl.align.grpo_s"):
        run_align(config, reward_funcs=[FlakyReward()], examples=examples)
    assert seen["skipped"] == 1
    assert "skipping 1 of 3 training prompt(s) longer than 250 tokens" in caplog.text
    advantages = seen["advantages"]
    assert torch.isfinite(advantages).all()
    assert advantages[:2].eq(0).all()  # the NaN and the inf completion: unscorable, no advantage
    assert advantages[2:].ne(0).all()  # the finite rest of the group keeps its signal
    assert seen["scaling"].num_nonfinite_rewards == 2
    assert torch.isfinite(seen["scaling"].alpha).all()
    history = read_history(tmp_path / "run")
    step = next(h for h in history if "reward" in h)
    assert math.isfinite(step["reward"]) and math.isfinite(step["loss"])
    assert step["rewards/nonfinite"] == 2.0 and step["scaling/nonfinite_rewards"] == 2.0
    assert "2 of 4 reward(s) this step are NaN/inf" in caplog.text


def test_grpo_config_refuses_zero_steps(tmp_path):
    from drirl.align.grpo_s import GRPOSConfig
    from drirl.errors import ConfigError

    with pytest.raises(ConfigError, match="key 'max_steps': must be at least 1, got 0"):
        GRPOSConfig(output_dir=str(tmp_path), max_steps=0, report_to="none", use_cpu=True)


def test_classifier_judge_nan_scores_are_unscored_not_safe(tiny_classifier_path):
    import torch

    from drirl.eval.judges import ClassifierJudge

    torch.set_num_threads(1)
    judge = ClassifierJudge(str(tiny_classifier_path), device="cpu")
    with torch.no_grad():
        judge.model.score.weight.fill_(math.nan)
    verdicts = judge.judge(["How do I steal a car?"], ["Sure, here is how."])
    assert verdicts[0].harmful is None and verdicts[0].score is None
    assert verdicts[0].reason.startswith("unscored: non-finite P(unsafe) nan")


def test_reward_accuracy_leaves_out_nonfinite_scores():
    from drirl.reward.evaluate import _accuracy, _nonfinite_pairs

    demo, sample = [1.0, math.nan, 2.0, math.inf], [0.0, 0.0, 3.0, 1.0]
    assert _accuracy(demo, sample) == 0.5  # (1 > 0) and not (2 > 3); the NaN and inf pairs are left out
    assert _nonfinite_pairs(demo, sample) == 2
    assert math.isnan(_accuracy([math.nan], [1.0]))


# ---------------------------------------------------------------------------------------------------------------
# The table of docs/reliability.md
# ---------------------------------------------------------------------------------------------------------------

def _markdown_table() -> str:
    import shutil
    import tempfile

    import drirl

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    scratch = Path(tempfile.mkdtemp(prefix="drirl-bad-inputs-"))
    os.environ["DRIRL_CACHE"] = str(scratch / "cache")
    tiny: list[Path] = []

    def tiny_lm() -> Path:
        if not tiny:
            from tiny_models import build_causal_lm

            tiny.append(build_causal_lm(scratch / "tiny-lm"))
        return tiny[0]

    rows = ["| entry point | bad input | exit | what drirl prints (stderr) |", "|---|---|---|---|"]
    try:
        for case in CASES:
            root = scratch / case.id
            root.mkdir()
            code, stderr, _ = run_case(case, root, tiny_lm)
            lines = error_lines(stderr)
            shown = lines[0] if lines else "(accepted)"
            shown = shown.replace(str(root) + os.sep, "").replace(str(root), ".").replace(str(scratch), "…")
            shown = shown.replace(str(Path(drirl.__file__).parent), "<drirl>")
            shown = shown.replace("|", "\\|")
            shown = f"`` {shown} ``" if "`" in shown else f"`{shown}`"
            rows.append(f"| `drirl {case.entry}` | {case.what} | {code} | {shown} |")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return "\n".join(rows)


if __name__ == "__main__":
    print(_markdown_table())


def test_models_prepare_with_an_unwritable_cache_fails_before_converting(tmp_path, monkeypatch, capsys):
    from drirl.cli import main

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("DRIRL_CACHE", str(blocker))
    assert main(["models", "prepare"]) == 4
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "cannot create the model cache" in lines[0] and "DRIRL_CACHE" in lines[0], lines
