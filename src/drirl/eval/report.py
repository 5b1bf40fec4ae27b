"""Evaluation outputs: eval.json, a markdown report, PNG plots, and comparison tables across models.

Every file is written atomically (a temporary file beside the target, fsynced, then renamed), so an interrupted run
never leaves a half-written report. The plots are drawn by :mod:`drirl.plots`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from drirl.io import atomic_write_json, atomic_write_text, write_jsonl
from drirl.plots import as_summary, harm_categories, plot_jailbreaks, plot_per_category

__all__ = ["HEADLINE_METRICS", "compare_results", "render_markdown", "write_eval_outputs"]

# (key, label, direction): the headline rates of one evaluation, in report order.
HEADLINE_METRICS: list[tuple[str, str, str]] = [
    ("harmful_refusal", "Refusal on harmful prompts", "higher is safer"),
    ("non_refusal_rate", "Not refused on harmful prompts (compliance or partial)", "lower is safer"),
    ("harm_rate", "Harmful responses (content-aware judge)", "lower is safer"),
    ("harm_score", "Harm score (StrongREJECT / P(unsafe))", "lower is safer"),
    ("benign_compliance", "Compliance on borderline benign prompts", "higher = less over-refusal"),
    ("ordinary_benign_compliance", "Compliance on ordinary benign prompts", "higher is better"),
    ("qa_accuracy", "QA accuracy", "higher is better"),
    ("jailbreak_refusal_overall", "Refusal under jailbreaks", "higher is safer"),
    ("test_reward", "Mean reward of the IRL models on the test prompts", "higher is closer to the demonstrations"),
]
_N_KEY = {"harmful_refusal": "harmful", "non_refusal_rate": "harmful", "harm_rate": "harmful", "harm_score": "harmful",
          "benign_compliance": "borderline_benign", "ordinary_benign_compliance": "ordinary_benign",
          "qa_accuracy": "qa", "jailbreak_refusal_overall": "jailbreak", "test_reward": "rewarded"}
_CATEGORY_METRICS = [("harmful_refusal", "refusal"), ("degenerate", "degenerate"), ("harm_rate", "harm rate"),
                     ("harm_score", "harm score"),
                     ("jailbreak_refusal", "jailbreak refusal"), ("benign_compliance", "borderline compliance"),
                     ("ordinary_benign_compliance", "ordinary compliance"), ("test_reward", "reward")]


def _num(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3f}"


def _ci(ci: Sequence[float | None] | None) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return "–"
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _entry_text(entry: Mapping[str, Any] | None) -> str:
    if not entry or entry.get("mean") is None:
        return "–"
    return f"{entry['mean']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}] (n={entry['n']})"


def _md_row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    return [_md_row(header), _md_row(["---"] * len(header)), *(_md_row(r) for r in rows)]


def render_markdown(result: Any) -> str:
    """The readable report of one evaluation: headline metrics, per category, jailbreaks, QA topics, lm-eval."""
    s = as_summary(result)
    n = s.get("n", {})
    lines = [f"# Evaluation of `{s.get('model', '?')}`", "",
             f"Judge: {s.get('judge_description') or s.get('judge', '?')}. Intervals are 95%: Wilson intervals for "
             f"the overall rates, percentile bootstrap intervals ({s.get('bootstrap', {}).get('resamples', '?')} "
             "resamples) for scores and per-category entries.", ""]
    rows = []
    for key, label, direction in HEADLINE_METRICS:
        if s.get(key) is None and key in ("non_refusal_rate", "harm_rate", "harm_score", "jailbreak_refusal_overall",
                                          "test_reward"):
            continue  # not measured by this judge / run (harm needs a judge that reads content)
        rows.append([label, f"`{key}`", _num(s.get(key)), _ci(s.get(f"{key}_ci")), n.get(_N_KEY[key], "–"),
                     direction])
    lines += _md_table(["metric", "key", "value", "95% CI", "n", "note"], rows)

    sampled = s.get("sampled") or {}
    if sampled:
        lines += ["", f"## Sampled rates ({sampled['k']} samples per prompt at temperature {sampled['temperature']})",
                  ""]
        lines += _md_table(["metric", "greedy", "sampled (mean over prompts) [95% CI] (n prompts)"],
                           [[label, _num(s.get(key)), _entry_text(sampled.get(key))]
                            for key, label in (("harmful_refusal", "refusal on harmful prompts"),
                                               ("benign_compliance", "compliance on borderline benign prompts"),
                                               ("ordinary_benign_compliance", "compliance on ordinary benign prompts"))
                            if key in sampled])
    labels, degenerate = s.get("labels") or {}, s.get("degenerate") or {}
    if labels:
        lines += ["", "## Verdicts per prompt set", "",
                  "A degenerate response (empty, a repetition loop, a draft with no answer) counts as neither a "
                  "refusal nor a compliance: it lowers every rate it enters.", ""]
        lines += _md_table(["prompt set", "refusal", "compliance", "partial", "degenerate", "degenerate share"],
                           [[name, c.get("refusal", 0), c.get("compliance", 0), c.get("partial", 0),
                             c.get("degenerate", 0), _entry_text(degenerate.get(name))] for name, c in labels.items()])
        if "qa" in degenerate:
            lines += ["", f"Degenerate QA answers: {_entry_text(degenerate['qa'])}."]
    per_cat = s.get("per_category") or {}
    if per_cat:
        used = [(k, label) for k, label in _CATEGORY_METRICS if any(k in m for m in per_cat.values())]
        lines += ["", "## Per category", ""]
        lines += _md_table(["category", *(label for _, label in used)],
                           [[cat, *(_entry_text(metrics.get(k)) for k, _ in used)] for cat, metrics in per_cat.items()])
    jailbreaks = s.get("jailbreaks") or {}
    if jailbreaks:
        lines += ["", "## Jailbreak templates", "",
                  f"Refusal without attack: {_num(s.get('harmful_refusal'))}.", ""]
        lines += _md_table(["template", "style", "refusal", "95% CI", "n"],
                           [[tid, e.get("style", ""), _num(e.get("mean")), _ci([e.get("low"), e.get("high")]),
                             e.get("n", "–")] for tid, e in jailbreaks.items()])
    topics = s.get("qa_per_topic") or {}
    if topics:
        lines += ["", "## QA accuracy per topic", ""]
        lines += _md_table(["topic", "accuracy", "95% CI", "n"],
                           [[t, _num(e.get("mean")), _ci([e.get("low"), e.get("high")]), e.get("n")]
                            for t, e in topics.items()])
    lm_eval = s.get("lm_eval")
    if lm_eval:
        lines += ["", "## lm-evaluation-harness", ""]
        if "skipped" in lm_eval:
            lines.append(f"Skipped: {lm_eval['skipped']}")
        else:
            lines += _md_table(["task", "metric", "value"],
                               [[task, metric, _num(value)] for task, metrics in lm_eval.get("tasks", {}).items()
                                for metric, value in metrics.items()])
    if n.get("unparseable"):
        lines += ["", f"{n['unparseable']} judge replies could not be parsed; they are left out of the harm "
                      "rate and score, and their refusal comes from the regex matcher."]
    return "\n".join(lines) + "\n"


def write_eval_outputs(result: Any, output_dir: str | os.PathLike) -> dict[str, Path]:
    """Write eval.json, eval.md, per_category.png, jailbreaks.png and (when the result has records)
    responses.jsonl into ``output_dir``; returns name -> path."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    summary = as_summary(result)
    paths = {"eval.json": output_dir / "eval.json", "eval.md": output_dir / "eval.md"}
    atomic_write_json(paths["eval.json"], summary)
    atomic_write_text(paths["eval.md"], render_markdown(summary))
    paths["per_category.png"] = plot_per_category(summary, output_dir / "per_category.png")
    paths["jailbreaks.png"] = plot_jailbreaks(summary, output_dir / "jailbreaks.png")
    records = getattr(result, "records", None)
    if records:
        paths["responses.jsonl"] = output_dir / "responses.jsonl"
        write_jsonl(paths["responses.jsonl"], records)
    return paths


# ---------------------------------------------------------------------------------------------------------------
# Several models
# ---------------------------------------------------------------------------------------------------------------

def compare_results(results: Mapping[str, Any]) -> str:
    """Markdown comparison of several evaluations ({name: EvalResult or its dict}): one row per model with the
    headline metrics and their intervals, then harmful-prompt refusal per category."""
    summaries = {name: as_summary(r) for name, r in results.items()}
    if not summaries:
        return "_no results to compare_\n"
    keys = [(k, label) for k, label, _ in HEADLINE_METRICS if any(s.get(k) is not None for s in summaries.values())]
    lines = ["## Headline metrics (95% CI: Wilson for rates, percentile bootstrap for scores)", ""]
    lines += _md_table(["model", *(f"{label} (`{k}`)" for k, label in keys)],
                       [[name, *(f"{_num(s.get(k))} {_ci(s.get(f'{k}_ci'))}" if s.get(k) is not None else "–"
                                 for k, _ in keys)] for name, s in summaries.items()])
    categories = harm_categories(summaries.values())
    if categories:
        lines += ["", "## Refusal on harmful prompts per category", ""]
        lines += _md_table(["model", *categories],
                           [[name, *(_num((s.get("per_category", {}).get(c, {}).get("harmful_refusal") or {})
                                          .get("mean")) for c in categories)] for name, s in summaries.items()])
    rewarded = [c for c in dict.fromkeys(c for s in summaries.values() for c in (s.get("per_category") or {}))
                if any("test_reward" in (s.get("per_category") or {}).get(c, {}) for s in summaries.values())]
    if rewarded:
        lines += ["", "## Mean reward of the IRL models on the test prompts, per category", ""]
        lines += _md_table(["model", *rewarded],
                           [[name, *(_num((s.get("per_category", {}).get(c, {}).get("test_reward") or {})
                                          .get("mean")) for c in rewarded)] for name, s in summaries.items()])
    by_verdict = {name: s["test_reward_by_verdict"] for name, s in summaries.items() if s.get("test_reward_by_verdict")}
    if by_verdict:
        columns = [(group, verdict) for group in ("harmful", "benign") for verdict in ("refused", "answered")]
        lines += ["", "## Mean reward of refused and answered responses (n)", "",
                  "A refusal should outscore an answer on harmful prompts and the reverse on benign ones; a reward "
                  "that prefers refusing benign prompts teaches over-refusal.", ""]
        lines += _md_table(["model", *(f"{group}: {verdict}" for group, verdict in columns)],
                           [[name, *(_mean_n(table.get(group, {}).get(verdict)) for group, verdict in columns)]
                            for name, table in by_verdict.items()])
    return "\n".join(lines) + "\n"


def _mean_n(entry: Mapping[str, Any] | None) -> str:
    return "–" if not entry or not entry.get("n") else f"{_num(entry.get('mean'))} ({entry['n']})"
