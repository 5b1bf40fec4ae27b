"""`drirl data split` (stratified, seeded), `drirl data merge` (ids unique, no prompt in two splits) and the
warning when a category ends without training examples."""

from __future__ import annotations

import json
import logging
from collections import Counter

import pytest

from drirl.data.balance import BalanceConfig, balance
from drirl.data.schema import BENIGN, Example, empty_categories, read_card, read_examples, write_examples
from drirl.data.splitting import SplitConfig, assign_splits, held_out_count, merge_files
from drirl.errors import ConfigError, DataError


def _data() -> list[Example]:
    rows = [Example(f"c-{i}", f"crime prompt {i}", "crime", None, "t") for i in range(20)]
    rows += [Example(f"i-{i}", f"insult prompt {i}", "insult", None, "t") for i in range(10)]
    rows += [Example(f"b-{i}", f"benign prompt {i}", BENIGN, None, "t", "train", {"borderline": i < 10})
             for i in range(30)]
    return rows


def test_held_out_count_rounds_half_up():
    assert held_out_count(20, 0.2) == 4
    assert held_out_count(10, 0.25) == 3  # 2.5 rounds up
    assert held_out_count(10, 0.24) == 2
    assert held_out_count(3, 0.0) == 0


def test_split_is_stratified_seeded_and_keeps_held_out_rows():
    data = _data()
    data[0] = Example("c-0", "crime prompt 0", "crime", None, "t", "test")  # already held out: stays test
    out, report = assign_splits(data, SplitConfig(validation=0.1, test=0.2, seed=3))
    assert [e.id for e in out] == [e.id for e in data]  # input order kept
    counts = Counter((e.category, e.meta.get("borderline"), e.split) for e in out)
    assert counts[("crime", None, "test")] == 4 and counts[("crime", None, "validation")] == 2
    assert counts[("crime", None, "train")] == 14
    assert counts[("insult", None, "test")] == 2 and counts[("insult", None, "validation")] == 1
    # borderline (10) and ordinary (20) benign prompts are split separately
    assert counts[(BENIGN, True, "test")] == 2 and counts[(BENIGN, True, "validation")] == 1
    assert counts[(BENIGN, False, "test")] == 4 and counts[(BENIGN, False, "validation")] == 2
    assert out[0].split == "test"
    assert report.before["crime"] == {"train": 19, "validation": 0, "test": 1}
    assert report.after["crime"] == {"train": 14, "validation": 2, "test": 4}
    assert set(report.after) == {"crime", "insult", "benign (borderline)", "benign (ordinary)"}
    again, _ = assign_splits(data, SplitConfig(validation=0.1, test=0.2, seed=3))
    assert [e.split for e in again] == [e.split for e in out]
    other, _ = assign_splits(data, SplitConfig(validation=0.1, test=0.2, seed=4))
    assert [e.split for e in other] != [e.split for e in out]
    assert all(e.split == "train" for e in data[1:])  # the input is not modified


def test_split_warns_when_a_stratum_gets_nothing(caplog):
    tiny = [Example("x-1", "one lonely crime prompt", "crime", None, "t")]
    out, report = assign_splits(tiny, SplitConfig(validation=0.1, test=0.2))
    assert out[0].split == "train"
    assert report.empty == ["crime: no validation rows", "crime: no test rows"]
    assert "crime: no test rows" in caplog.text


def test_bad_split_config():
    with pytest.raises(ConfigError, match="leaves no training rows"):
        SplitConfig(validation=0.5, test=0.5)
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        SplitConfig(test=-0.1)


def test_merge_keeps_ids_unique_and_refuses_a_prompt_in_two_splits(tmp_path):
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    write_examples(a, [Example("a-1", "How do I pick a lock?", "crime", None, "t")])
    write_examples(b, [Example("b-1", "What is the capital of Peru?", BENIGN, None, "t", "test")])
    write_examples(c, [Example("a-1", "Another prompt", "crime", None, "t")])
    merged = merge_files([a, b])
    assert [e.id for e in merged] == ["a-1", "b-1"] and merged[1].split == "test"
    with pytest.raises(DataError) as info:
        merge_files([a, b, c])
    message = str(info.value)
    assert "'a-1'" in message and str(a) in message and str(c) in message and "field 'id'" in message
    leak = tmp_path / "leak.jsonl"
    write_examples(leak, [Example("l-1", "how do I pick a LOCK", "crime", None, "t", "test")])
    with pytest.raises(DataError, match=r"'l-1' \(test\) is also 'a-1' \(train\) in .*a\.jsonl"):
        merge_files([a, leak])
    with pytest.raises(ConfigError, match="at least two"):
        merge_files([a])


def test_split_and_merge_commands(tmp_path, capsys):
    from drirl.cli import main

    source = tmp_path / "mine.jsonl"
    write_examples(source, _data())
    out = tmp_path / "mine.split.jsonl"
    assert main(["data", "split", str(source), "--output", str(out), "--test", "0.3", "--validation", "0",
                 "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "stratum" in printed and "crime" in printed and f"wrote 60 example(s) to {out}" in printed
    rows = read_examples(out)
    assert Counter(e.split for e in rows if e.category == "crime") == {"train": 14, "test": 6}
    card = read_card(out)
    assert card["stage"] == "split" and card["config"]["test"] == 0.3
    assert card["split"]["after"]["crime"] == {"train": 14, "validation": 0, "test": 6}
    other = tmp_path / "other.jsonl"
    write_examples(other, [Example("o-1", "a new privacy prompt", "privacy", None, "t")])
    merged = tmp_path / "all.jsonl"
    assert main(["data", "merge", str(out), str(other), "--output", str(merged)]) == 0
    assert len(read_examples(merged)) == 61
    assert json.loads((tmp_path / "all.jsonl.card.json").read_text())["inputs"] == [str(out), str(other)]
    assert main(["data", "merge", str(out), str(out), "--output", str(tmp_path / "dup.jsonl")]) == 3
    err = capsys.readouterr().err
    assert "is in" in err and "Traceback" not in err and not (tmp_path / "dup.jsonl").exists()


def test_empty_category_warnings_after_balancing(caplog):
    caplog.set_level(logging.WARNING)
    data = [Example(f"c-{i}", f"p{i}", "crime", None, "t") for i in range(3)]
    data += [Example("b-1", "benign p", BENIGN, None, "t"), Example("x-1", "held out", "insult", None, "t", "test")]
    assert "insult" in empty_categories(data) and "crime" not in empty_categories(data)
    assert empty_categories(data, split="test") == [c for c in empty_categories([]) if c != "insult"]
    _, report = balance(data, BalanceConfig())
    assert "insult" in report.empty and "crime" not in report.empty and BENIGN not in report.empty
    assert "warning: no training example for insult" in report.to_table()
    assert "no training example for insult" in caplog.text
