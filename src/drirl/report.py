"""The end-of-run report: report.json, report.md and plots comparing the methods of a `drirl run`."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from drirl.io import atomic_write_json, atomic_write_text

HEADLINE = ("harmful_refusal", "benign_compliance", "ordinary_benign_compliance", "qa_accuracy",
            "jailbreak_refusal_overall", "test_reward")
# (headline key, response set in responses.jsonl, whether the outcome is a refusal, label): the rates compared
# between methods prompt by prompt.
PAIRED_METRICS = (("harmful_refusal", "harmful", True, "harmful refusal"),
                  ("benign_compliance", "borderline", False, "borderline compliance"),
                  ("ordinary_benign_compliance", "benign", False, "benign compliance"))


def load_outcomes(eval_dir: str | Path) -> dict[str, dict[str, float]]:
    """{headline key: {prompt id: 0/1}} from an evaluation's responses.jsonl (refused, or complied, per prompt).

    A degenerate response (a loop, a draft without an answer) counts 0 in both, as in the evaluation's own rates:
    the paired differences and the rates printed beside them read the same outcomes."""
    out: dict[str, dict[str, float]] = {key: {} for key, *_ in PAIRED_METRICS}
    path = Path(eval_dir) / "responses.jsonl"
    if not path.is_file():
        return out
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        for key, kind, refusal, _ in PAIRED_METRICS:
            if record.get("set") == kind and isinstance(record.get("verdict"), dict):
                refused = bool(record["verdict"].get("refused"))
                degenerate = bool(record.get("degenerate"))
                out[key][str(record["id"])] = float((refused if refusal else not refused) and not degenerate)
    return out


def _seed_pairs(a: dict[int, str], b: dict[int, str]) -> list[tuple[int, int]]:
    # A method evaluated once (base: greedy, untrained) is paired with every seed of the other.
    if len(a) == 1 and len(b) >= 1:
        return [(next(iter(a)), s) for s in b]
    if len(b) == 1:
        return [(s, next(iter(b))) for s in a]
    return [(s, s) for s in sorted(set(a) & set(b))]


def paired_comparisons(evals: dict[str, dict[int, str]], pairs: list[tuple[str, str]], *,
                       n_resamples: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """A − B for each pair on each of PAIRED_METRICS, on the prompts both answered, per seed (see
    drirl.eval.stats.paired_comparison: two-level bootstrap over seeds and prompts, exact McNemar test)."""
    from drirl.eval.stats import aligned_outcomes, paired_comparison

    cache: dict[str, dict[str, dict[str, float]]] = {}

    def outcomes(folder: str) -> dict[str, dict[str, float]]:
        if folder not in cache:
            cache[folder] = load_outcomes(folder)
        return cache[folder]

    rows = []
    for a, b in pairs:
        seed_pairs = _seed_pairs(evals.get(a, {}), evals.get(b, {}))
        if not seed_pairs:
            continue
        for key, _, _, label in PAIRED_METRICS:
            a_by_seed, b_by_seed = [], []
            for sa, sb in seed_pairs:
                x, y = aligned_outcomes(outcomes(evals[a][sa])[key], outcomes(evals[b][sb])[key])
                a_by_seed.append(x)
                b_by_seed.append(y)
            result = paired_comparison(a_by_seed, b_by_seed, n_resamples=n_resamples, seed=seed)
            if result.n_pairs:
                rows.append({"a": a, "b": b, "metric": key, "label": label, **result.to_dict()})
    return rows


def format_comparison(row: dict[str, Any]) -> str:
    """'dr-irl − grpo-irl: +12.5 points [+3.1, +21.9], p = 0.031 (…)' for one row of paired_comparisons."""
    p = "–" if row.get("p_value") is None else f"{row['p_value']:.3g}"
    return (f"{row['a']} − {row['b']}: {100 * row['difference']:+.1f} points [{100 * row['low']:+.1f}, "
            f"{100 * row['high']:+.1f}], p = {p} (n = {row['n_pairs']} prompt pairs over {row['n_seeds']} "
            f"seed(s); {row['only_a']} only {row['a']}, {row['only_b']} only {row['b']})")


def seed_summaries(evals: dict[str, dict[int, str]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{method: {headline key: SeedSummary as a dict plus the per-seed values}} from each seed's eval.json."""
    from drirl.eval.stats import seed_summary

    out: dict[str, dict[str, dict[str, Any]]] = {}
    for method, folders in evals.items():
        values = {s: json.loads((Path(d) / "eval.json").read_text()) for s, d in folders.items()
                  if (Path(d) / "eval.json").is_file()}
        out[method] = {}
        for key in HEADLINE:
            per_seed = {str(s): v.get(key) for s, v in values.items()}
            if any(x is not None for x in per_seed.values()):
                out[method][key] = {**seed_summary(list(per_seed.values())).to_dict(), "per_seed": per_seed}
    return out


def _pm(entry: dict[str, Any] | None) -> str:
    if not entry or entry.get("n_seeds", 0) == 0:
        return "—"
    return (f"{entry['mean']:.3f} ± {entry['sd']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}] "
            f"({entry['n_seeds']})")


def _fmt(value: Any) -> str:
    return "—" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def write_report(root: Path, config: Any, results: dict[str, dict[str, Any]], histories: dict[str, str],
                 timings: dict[str, float], bundles: dict[str, str], final: Path | None,
                 runs: dict[str, Any] | None = None) -> Path:
    """report.json and report.md. ``results``: each method's evaluation of the first seed; ``runs`` (from
    drirl.pipeline): ``seeds``, ``evals`` ({method: {seed: eval folder}}), ``pairs`` to compare, and each method's
    resolved ``settings``."""
    from drirl.eval.report import compare_results
    from drirl.plots import plot_alpha, plot_comparison, plot_reward_curves

    runs = runs or {}
    evals = runs.get("evals") or {}
    seeds = runs.get("seeds") or [getattr(config.run, "seed", 0)]
    comparisons = paired_comparisons(evals, runs.get("pairs") or [], seed=seeds[0]) if evals else []
    by_seed = seed_summaries(evals) if evals else {}

    plots: dict[str, str] = {}
    if results:
        plots["per_category_refusal"] = str(plot_comparison(results, root / "per_category_refusal.png"))
    curve = plot_reward_curves(histories, root / "reward_curves.png")
    if curve:
        plots["reward_curves"] = str(curve)
    for method, run_dir in histories.items():
        alpha = plot_alpha(run_dir, root / f"alpha_{method}.png")
        if alpha:
            plots[f"alpha_{method}"] = str(alpha)
    reward_metrics = {}
    for name in bundles:
        path = root / name / "reward_eval.json"
        if path.is_file():
            data = json.loads(path.read_text())
            reward_metrics[name] = {k: data.get(k) for k in ("pairwise_accuracy", "mean_pairwise_accuracy",
                                                             "decision_accuracy")}
    report = {
        "methods": {m: {k: r.get(k) for k in HEADLINE} | {f"{k}_ci": r.get(f"{k}_ci") for k in HEADLINE}
                    | {"degenerate": {k: (v or {}).get("mean") for k, v in (r.get("degenerate") or {}).items()}}
                    for m, r in results.items()},
        "per_category": {m: r.get("per_category") for m, r in results.items()},
        "reward_by_verdict": {m: r.get("test_reward_by_verdict") for m, r in results.items()},
        "reward_models": reward_metrics,
        "seeds": seeds,
        "methods_seed": seeds[0],  # "methods", "per_category"... are of this seed; seed_summary covers them all
        "seed_summary": by_seed,
        "comparisons": comparisons,
        "settings": runs.get("settings") or {},
        "stage_seconds": {k: round(v, 1) for k, v in timings.items()},
        "total_seconds": round(sum(timings.values()), 1),
        "final_model": str(final) if final else None,
        "plots": plots,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }
    atomic_write_json(root / "report.json", report)
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}"
    lines = ["# drirl run report", "",
             f"Policy `{config.run.policy}`, methods {', '.join(results)}, {seed_text}"
             + _warm_start_note(config) + ".", ""]
    if len(seeds) > 1:
        lines += ["## Over seeds: mean ± sd [95% t interval over seed means] (seeds)", "",
                  "Each trained method was trained and evaluated once per seed; the interval carries the variance "
                  "between training runs. base is evaluated once (greedy, untrained).", "",
                  "| method | " + " | ".join(label for *_, label in PAIRED_METRICS) + " | QA accuracy |",
                  "|---|" + "---|" * (len(PAIRED_METRICS) + 1)]
        for method, table in by_seed.items():
            cells = [_pm(table.get(key)) for key, *_ in PAIRED_METRICS] + [_pm(table.get("qa_accuracy"))]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines += ["", f"Details below are of seed {seeds[0]}.", ""]
    lines += [compare_results(results), ""]
    if comparisons:
        lines += ["## Paired differences (same prompts)", "",
                  "A − B in points (percentage points of the rate), with a 95% paired bootstrap interval over the "
                  "prompts (and over the seeds, when there are several) and the exact McNemar test on the prompts "
                  "where the two disagree.", ""]
        for key, _, _, label in PAIRED_METRICS:
            rows = [r for r in comparisons if r["metric"] == key]
            if rows:
                lines += [f"**{label}**", ""] + [f"- {format_comparison(r)}" for r in rows] + [""]
    settings = runs.get("settings") or {}
    if settings:
        lines += ["## Settings each method ran with (differences from the defaults)", ""]
        for method, stages in settings.items():
            lines.append(f"- **{method}**: " + ("; ".join(
                f"{stage}: " + ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in values.items()
                                          if k not in ("inputs",)) for stage, values in stages.items()) or "—"))
        lines.append("")
    if reward_metrics:
        lines += ["## Reward models (held-out pairwise accuracy: demonstration vs policy sample)", "",
                  "| bundle | category | accuracy |", "|---|---|---|"]
        for name, metrics in reward_metrics.items():
            for category, acc in (metrics.get("pairwise_accuracy") or {}).items():
                lines.append(f"| {name} | {category} | {_fmt(acc)} |")
            lines.append(f"| {name} | **mean** | {_fmt(metrics.get('mean_pairwise_accuracy'))} |")
        lines.append("")
    lines += ["## Where the time went", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in timings.items()]
    lines += [f"| **total** | {sum(timings.values()):.0f} |", "", "## Plots", ""]
    lines += [f"![{name}]({Path(p).name})" for name, p in plots.items()]
    if final:
        lines += ["", f"The {config.run.final_method} model is in `{final}` (LoRA merged, with a model card)."]
    atomic_write_text(root / "report.md", "\n".join(lines) + "\n")
    return root / "report.md"


def headline_table(report: dict[str, Any]) -> str:
    """The few numbers a run ends with on the terminal: each method's headline rates (first seed), the share of
    degenerate answers to harmful prompts, then the paired differences."""
    columns = (("harmful_refusal", "refusal"), ("benign_compliance", "borderline ok"),
               ("ordinary_benign_compliance", "benign ok"), ("qa_accuracy", "QA"), ("test_reward", "reward"))
    width = max([len("method"), *map(len, report.get("methods", {}))])
    lines = [f"{'method':<{width}}  " + "  ".join(f"{label:>13}" for _, label in columns) + f"  {'degenerate':>10}"]
    for method, values in report.get("methods", {}).items():
        cells = ["–" if values.get(key) is None else f"{values[key]:.3f}" for key, _ in columns]
        degenerate = (values.get("degenerate") or {}).get("harmful")
        lines.append(f"{method:<{width}}  " + "  ".join(f"{c:>13}" for c in cells)
                     + f"  {'–' if degenerate is None else f'{degenerate:.3f}':>10}")
    lines += [f"{row.get('label', row.get('metric', ''))}, {format_comparison(row)}"
              for row in report.get("comparisons") or []]
    return "\n".join(lines)


def _warm_start_note(config: Any) -> str:
    if getattr(config.run, "warm_start", "none") == "sft":
        return "; the GRPO methods start from the SFT model (`run.warm_start: sft`)"
    return ""


def model_card(config: Any, result: dict[str, Any] | None,
               records: dict[str, dict[str, Any]] | None = None) -> str:
    """README.md of the exported model. ``records``: stage name -> the resolved settings of each stage that
    produced the model (what ran, not the user's sections)."""
    from drirl.config import config_to_dict

    method = config.run.final_method
    registry = getattr(config.run, "registry", {})
    description = registry[method].description if method in registry else method
    lines = ["---", "library_name: transformers", "tags: [drirl, safety, grpo, inverse-rl]", "---", "",
             f"# {method} model trained with drirl", "",
             f"- **Base model:** `{config.run.policy}`" + _warm_start_note(config),
             f"- **Data:** {config.run.data or 'the bundled drirl 7-category Chain-of-Draft set (train split)'}",
             f"- **Method:** {method}: {description} (see drirl's METHOD.md)", "",
             "## Settings it was trained with", "",
             "Each stage that produced this model, with its settings as they ran (stage.json of the run folder).",
             "", "```json", json.dumps({"run": config_to_dict(config.run), "stages": records or {}}, indent=2,
                                       default=str), "```", ""]
    if result:
        lines += [f"## Evaluation ({'the data' if config.run.data else 'the bundled'} test split, judge "
                  f"{result.get('judge', '?')})", "", "| metric | value | 95% CI |", "|---|---|---|"]
        for key in HEADLINE:
            ci = result.get(f"{key}_ci") or [None, None]
            lines.append(f"| {key} | {_fmt(result.get(key))} | {_fmt(ci[0])} – {_fmt(ci[1])} |")
    return "\n".join(lines) + "\n"
