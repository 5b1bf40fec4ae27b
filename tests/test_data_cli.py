"""`drirl data ...` through drirl.cli.main: stats (--json), import, balance, validate, demos, help texts."""

from __future__ import annotations

import importlib
import json
import sys
import types
from pathlib import Path

import pytest

from drirl.data.schema import BENIGN, Example, read_card, read_examples, write_examples

FIXTURES = Path(__file__).parent / "fixtures" / "importers"
HARM_IDS = ["insult", "discrimination", "crime", "physical_harm", "mental_health", "privacy", "ethics"]
# drirl.cli registers every stage; stages other engineers have not written yet are stood in for by a no-op.
_OTHER_STAGES = ["drirl.commands.align", "drirl.commands.eval", "drirl.commands.reward", "drirl.commands.run"]


@pytest.fixture
def cli(monkeypatch):
    for name in _OTHER_STAGES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:
            stub = types.ModuleType(name)
            stub.register = lambda subparsers: None
            monkeypatch.setitem(sys.modules, name, stub)
            parent, _, child = name.rpartition(".")
            monkeypatch.setattr(sys.modules[parent], child, stub, raising=False)
    from drirl.cli import main

    return main


def test_stats_json_on_the_bundled_set(cli, capsys):
    assert cli(["data", "stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)  # exactly one JSON object on stdout
    assert list(stats["categories"]) == [*HARM_IDS, BENIGN]
    for category in HARM_IDS:
        assert stats["categories"][category] == {"train": 36, "validation": 6, "test": 20}
    assert stats["categories"][BENIGN] == {"train": 150, "validation": 30, "test": 120}
    assert stats["total"] == sum(sum(c.values()) for c in stats["categories"].values()) == 734


def test_stats_table(cli, capsys):
    assert cli(["data", "stats"]) == 0
    out = capsys.readouterr().out
    assert "the bundled set" in out and "words mean" in out
    assert all(category in out for category in [*HARM_IDS, BENIGN])


def test_stats_bad_file_exits_with_data_error(cli, capsys, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "prompt": "p", "category": "crime"}\n{"id": "a", "prompt": "q", "category": "x"}\n')
    assert cli(["data", "stats", str(bad)]) == 3
    err = capsys.readouterr().err
    assert "bad.jsonl:2" in err and "unknown category 'x'" in err and "Traceback" not in err
    assert cli(["data", "stats", str(bad), "--skip-invalid"]) == 0
    assert "skipped 1 invalid record(s)" in capsys.readouterr().out


def test_import_balance_validate(cli, capsys, tmp_path):
    imported = tmp_path / "strongreject.jsonl"
    assert cli(["data", "import", "strongreject", str(FIXTURES / "strongreject.csv"), "--output",
                str(imported)]) == 3  # an empty prompt without --skip-invalid
    assert "strongreject.csv:8" in capsys.readouterr().err and not imported.exists()
    assert cli(["data", "import", "strongreject", str(FIXTURES / "strongreject.csv"), "--output", str(imported),
                "--skip-invalid"]) == 0
    out = capsys.readouterr().out
    assert "Hate, harassment and discrimination" in out and "discrimination" in out
    assert "--skip-invalid: skipped 1 invalid row(s) (empty prompt: 1)" in out
    assert len(read_examples(imported)) == 6
    assert read_card(imported)["import"]["dropped"] == {"empty prompt": 1}

    balanced = tmp_path / "balanced"
    assert cli(["data", "balance", str(imported), "--output", str(balanced), "--strategy", "upsample",
                "--max_repeats", "2", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "before" in out and "after" in out
    card = read_card(balanced)
    assert card["balance"]["after"]["physical_harm"] == 2 and card["config"]["max_repeats"] == 2
    assert card["input_card"]["stage"] == "import"
    assert cli(["data", "validate", str(balanced)]) == 0
    assert "OK" in capsys.readouterr().out
    assert cli(["data", "validate", str(balanced), "--require-demonstration"]) == 3
    captured = capsys.readouterr()
    assert "missing demonstration" in captured.out and "invalid record(s)" in captured.err


def test_generic_import_flags(cli, capsys, tmp_path):
    out = tmp_path / "generic.jsonl"
    assert cli(["data", "import", "generic", str(FIXTURES / "generic.csv"), "--output", str(out), "--columns",
                "id=qid,prompt=question,category=label,split=part", "--category-map",
                "hate=insult,theft=crime,none=benign"]) == 0
    assert [e.category for e in read_examples(out)] == ["insult", "crime", BENIGN]
    mapping = tmp_path / "map.yaml"
    mapping.write_text("mapping:\n  Violence: crime\n  Sexual content: null\n")
    assert cli(["data", "import", "strongreject", str(FIXTURES / "strongreject.csv"), "--output", str(out),
                "--skip-invalid", "--mapping", str(mapping)]) == 0
    assert [e.category for e in read_examples(out)] == ["crime"]
    assert cli(["data", "import", "nope", "x.csv", "--output", str(out)]) == 2
    assert "unknown source" in capsys.readouterr().err


def test_demos_command_with_yaml(cli, capsys, tmp_path, monkeypatch):
    from test_data_demos import FakeEndpoint

    write_examples(tmp_path / "in.jsonl", [Example("h-1", "Pick my neighbour's lock?", "crime", None, "t")])
    config = tmp_path / "demos.yaml"
    config.write_text(f"demos:\n  input: {tmp_path / 'in.jsonl'}\n  output: {tmp_path / 'out.jsonl'}\n"
                      "  endpoint_model: m\n  progress: false\n  min_relevance: null\n")
    with FakeEndpoint() as server:
        assert cli(["data", "demos", "--config", str(config), "--endpoint_url", server.url]) == 0
    assert "1 accepted" in capsys.readouterr().out
    assert read_examples(tmp_path / "out.jsonl", require_demonstration=True)[0].id == "h-1"
    assert cli(["data", "demos", "--config", str(config), "--batch_size", "zero"]) == 2
    assert "batch_size" in capsys.readouterr().err


@pytest.mark.parametrize("action", ["stats", "import", "balance", "demos", "split", "merge", "validate"])
def test_every_subcommand_has_help_with_an_example(cli, capsys, action):
    with pytest.raises(SystemExit) as info:
        cli(["data", action, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "example" in out and f"drirl data {action}" in out


def test_stats_form_table_shows_the_same_form_for_harmful_and_benign(cli, capsys):
    assert cli(["data", "stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    form = stats["form"]
    assert set(form) == {*HARM_IDS, BENIGN}
    assert all(form[c]["with_draft"] == 1.0 for c in form)  # every demonstration has a draft, benign ones too
    assert form[BENIGN]["n"] == 300 and stats["form_harmful"]["n"] == 434
    assert 0 < form[BENIGN]["draft_words"] < 15 and 0 < stats["form_harmful"]["draft_words"] < 15
    assert cli(["data", "stats"]) == 0
    out = capsys.readouterr().out
    assert "with draft" in out and "draft words" in out and "answer words" in out
    benign_row = next(line for line in out.splitlines()[out.splitlines().index("") + 1:] if line.startswith(BENIGN))
    assert benign_row.split()[:3] == [BENIGN, "300", "100%"]


def test_import_changes_single_labels_and_prints_the_built_in_table(cli, capsys, tmp_path):
    from drirl.data.importers import HARMBENCH_MAPPING

    assert cli(["data", "import", "harmbench", "--output", str(tmp_path / "x"), "--print-mapping"]) == 0
    printed = dict(line.split() for line in capsys.readouterr().out.splitlines())
    assert printed["chemical_biological"] == HARMBENCH_MAPPING["chemical_biological"]
    assert not (tmp_path / "x").exists()
    out = tmp_path / "hb.jsonl"
    base = tmp_path / "hb-base.jsonl"
    assert cli(["data", "import", "harmbench", str(FIXTURES / "harmbench_behaviors.csv"), "--output", str(base)]) == 0
    # One label moved, one dropped; every other label keeps its built-in category.
    assert cli(["data", "import", "harmbench", str(FIXTURES / "harmbench_behaviors.csv"), "--output", str(out),
                "--map", "chemical_biological=crime,harassment_bullying="]) == 0
    capsys.readouterr()
    before, after = read_examples(base), read_examples(out)
    moved = {e.prompt for e in before if e.category == HARMBENCH_MAPPING["chemical_biological"]} - {
        e.prompt for e in after if e.category == HARMBENCH_MAPPING["chemical_biological"]}
    assert moved and all(e.category == "crime" for e in after if e.prompt in moved)
    assert not any("bully" in e.prompt for e in after) and any("bully" in e.prompt for e in before)
    assert cli(["data", "import", "generic", str(FIXTURES / "generic.csv"), "--output", str(out), "--map", "a=b"]) == 2
    assert "--category-map" in capsys.readouterr().err
