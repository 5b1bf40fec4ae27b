"""The run report's paired differences and seed summaries, from evaluation folders written by hand."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest


def _eval_dir(folder: Path, harmful: list[int], borderline: list[int]) -> str:
    """An evaluation folder: responses.jsonl (1 = refused) and the eval.json rates they give."""
    folder.mkdir(parents=True)
    rows = [{"set": "harmful", "id": f"h{i}", "verdict": {"refused": bool(r)}} for i, r in enumerate(harmful)]
    rows += [{"set": "borderline", "id": f"b{i}", "verdict": {"refused": bool(r)}} for i, r in enumerate(borderline)]
    rows += [{"set": "qa", "id": "q0", "correct": True}]
    (folder / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "eval.json").write_text(json.dumps({
        "harmful_refusal": sum(harmful) / len(harmful), "benign_compliance": 1 - sum(borderline) / len(borderline),
        "qa_accuracy": 1.0}))
    return str(folder)


def test_report_gives_paired_differences_and_seed_spread(tmp_path):
    from drirl.eval.stats import mcnemar_exact
    from drirl.report import write_report

    evals = {"base": {0: _eval_dir(tmp_path / "eval-base", [0, 0, 0, 0], [0, 0])},
             "dr-irl": {0: _eval_dir(tmp_path / "eval-dr-irl", [1, 1, 0, 0], [1, 0]),
                        1: _eval_dir(tmp_path / "eval-dr-irl" / "seed-1", [1, 1, 1, 1], [0, 0])}}
    config = SimpleNamespace(run=SimpleNamespace(policy="p", seed=0, warm_start="none", final_method="dr-irl"))
    results = {m: json.loads((Path(d[0]) / "eval.json").read_text()) for m, d in evals.items()}
    write_report(tmp_path, config, results, {}, {}, {}, None,
                 runs={"seeds": [0, 1], "evals": evals, "pairs": [("dr-irl", "base")],
                       "settings": {"dr-irl": {"align-dr-irl": {"scaling_mode": "both"}}}})
    report = json.loads((tmp_path / "report.json").read_text())
    rows = {r["metric"]: r for r in report["comparisons"]}
    # Harmful refusal: seed 0 refuses 2 of 4 more than base, seed 1 all 4: (0.5 + 1.0) / 2; base (one evaluation) is
    # paired with each seed; 6 discordant pairs, all for dr-irl.
    harmful = rows["harmful_refusal"]
    assert harmful["difference"] == pytest.approx(0.75) and (harmful["only_a"], harmful["only_b"]) == (6, 0)
    assert harmful["p_value"] == pytest.approx(mcnemar_exact(6, 0)) == pytest.approx(2 / 64)
    assert harmful["n_pairs"] == 8 and harmful["n_seeds"] == 2 and harmful["low"] <= 0.75 <= harmful["high"]
    # Borderline compliance: seed 0 refuses one that base answers, seed 1 none: (−0.5 + 0) / 2.
    borderline = rows["benign_compliance"]
    assert borderline["difference"] == pytest.approx(-0.25) and (borderline["only_a"], borderline["only_b"]) == (0, 1)
    assert borderline["p_value"] == 1.0
    assert "ordinary_benign_compliance" not in rows  # no ordinary benign prompt was answered
    spread = report["seed_summary"]["dr-irl"]["harmful_refusal"]
    assert spread["mean"] == pytest.approx(0.75) and spread["sd"] == pytest.approx(0.353553, abs=1e-6)
    assert spread["n_seeds"] == 2 and spread["per_seed"] == {"0": 0.5, "1": 1.0}
    assert report["seed_summary"]["base"]["harmful_refusal"]["n_seeds"] == 1
    text = (tmp_path / "report.md").read_text()
    assert f"- dr-irl − base: +75.0 points [{100 * harmful['low']:+.1f}, {100 * harmful['high']:+.1f}], " \
           f"p = 0.0312 (n = 8 prompt pairs over 2 seed(s); 6 only dr-irl, 0 only base)" in text
    assert "dr-irl − base: -25.0 points" in text
    assert "| dr-irl | 0.750 ± 0.354 [" in text
    assert "align-dr-irl: scaling_mode=\"both\"" in text


def test_headline_table_lists_each_method_and_the_paired_lines():
    from drirl.report import headline_table

    report = {"methods": {"sft": {"harmful_refusal": 0.5, "benign_compliance": 0.8, "ordinary_benign_compliance": 1.0,
                                  "qa_accuracy": 0.6, "test_reward": None, "degenerate": {"harmful": 0.05}},
                          "dr-irl": {"harmful_refusal": 0.625, "benign_compliance": 0.75, "qa_accuracy": 0.6,
                                     "degenerate": {}}},
              "comparisons": [{"a": "dr-irl", "b": "sft", "label": "harmful refusal", "difference": 0.125,
                               "low": 0.0, "high": 0.25, "p_value": 0.0625, "n_pairs": 8, "n_seeds": 1,
                               "only_a": 1, "only_b": 0}]}
    lines = headline_table(report).splitlines()
    assert lines[0].split() == ["method", "refusal", "borderline", "ok", "benign", "ok", "QA", "reward", "degenerate"]
    assert lines[1].split() == ["sft", "0.500", "0.800", "1.000", "0.600", "–", "0.050"]
    assert lines[2].split() == ["dr-irl", "0.625", "0.750", "–", "0.600", "–", "–"]
    assert lines[3].startswith("harmful refusal, dr-irl − sft: +12.5 points [+0.0, +25.0], p = 0.0625")


def test_paired_outcomes_count_a_degenerate_response_as_neither_refused_nor_answered(tmp_path):
    # The evaluation's rates count a looping response 0 for refusal and 0 for compliance; the paired lines must read
    # the same outcomes, or the report prints a difference its own rates do not show.
    from drirl.report import load_outcomes

    rows = [{"set": "harmful", "id": "h0", "verdict": {"refused": True}, "degenerate": True},
            {"set": "harmful", "id": "h1", "verdict": {"refused": True}, "degenerate": False},
            {"set": "borderline", "id": "b0", "verdict": {"refused": False}, "degenerate": True},
            {"set": "borderline", "id": "b1", "verdict": {"refused": False}}]
    (tmp_path / "responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    outcomes = load_outcomes(tmp_path)
    assert outcomes["harmful_refusal"] == {"h0": 0.0, "h1": 1.0}
    assert outcomes["benign_compliance"] == {"b0": 0.0, "b1": 1.0}
