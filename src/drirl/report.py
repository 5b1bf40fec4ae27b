"""The end-of-run report: report.json, report.md and plots comparing the methods of a `drirl run`."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from drirl.io import atomic_write_json, atomic_write_text

HEADLINE = ("harmful_refusal", "benign_compliance", "ordinary_benign_compliance", "qa_accuracy",
            "jailbreak_refusal_overall", "test_reward")


def _history(run_dir: str) -> list[dict[str, Any]]:
    path = Path(run_dir) / "log_history.json"
    return json.loads(path.read_text()) if path.is_file() else []


def plot_reward_curves(histories: dict[str, str], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from drirl.align.plots import save_figure

    curves = {m: [(h["step"], h["reward"]) for h in _history(d) if "reward" in h] for m, d in histories.items()}
    curves = {m: c for m, c in curves.items() if c}
    if not curves:
        return None
    figure, axis = plt.subplots(figsize=(6, 3.5))
    for method, points in curves.items():
        axis.plot(*zip(*points, strict=False), marker="o", ms=3, label=method)
    axis.set(xlabel="step", ylabel="mean reward (own reward models)", title="training reward")
    axis.legend()
    save_figure(figure, path)
    plt.close(figure)
    return path


def plot_alpha(history_dir: str, path: Path) -> Path | None:
    """α over training (mean and min-max band) and the per-category mean α."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from drirl.align.plots import save_figure

    rows = [h for h in _history(history_dir) if "scaling/alpha/mean" in h]
    if not rows:
        return None
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    steps = [h["step"] for h in rows]
    for name, colour in (("alpha", "C0"), ("alpha_data", "C1"), ("alpha_model", "C2")):
        left.plot(steps, [h[f"scaling/{name}/mean"] for h in rows], color=colour, label=f"{name} mean")
    left.fill_between(steps, [h["scaling/alpha/min"] for h in rows], [h["scaling/alpha/max"] for h in rows],
                      color="C0", alpha=0.15, label="α min–max")
    left.set(xlabel="step", ylabel="value", title="difficulty factors")
    left.legend(fontsize=7)
    by_category: dict[str, list[float]] = {}
    for h in rows:
        for key, value in h.items():
            if key.startswith("scaling/alpha_by_category/"):
                by_category.setdefault(key.rsplit("/", 1)[1], []).append(value)
    names = sorted(by_category)
    right.bar(names, [sum(v) / len(v) for v in (by_category[n] for n in names)], color="C0")
    right.axhline(1.0, color="grey", lw=0.8)
    right.set(ylabel="mean α", title="α by category")
    right.tick_params(axis="x", rotation=45)
    save_figure(figure, path)
    plt.close(figure)
    return path


def _fmt(value: Any) -> str:
    return "—" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def write_report(root: Path, config: Any, results: dict[str, dict[str, Any]], histories: dict[str, str],
                 timings: dict[str, float], bundles: dict[str, str], final: Path | None) -> Path:
    from drirl.eval.report import compare_results, plot_comparison

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
            reward_metrics[name] = {k: data.get(k) for k in ("pairwise_accuracy", "mean_pairwise_accuracy")}
    report = {
        "methods": {m: {k: r.get(k) for k in HEADLINE} | {f"{k}_ci": r.get(f"{k}_ci") for k in HEADLINE}
                    for m, r in results.items()},
        "per_category": {m: r.get("per_category") for m, r in results.items()},
        "reward_by_verdict": {m: r.get("test_reward_by_verdict") for m, r in results.items()},
        "reward_models": reward_metrics,
        "stage_seconds": {k: round(v, 1) for k, v in timings.items()},
        "total_seconds": round(sum(timings.values()), 1),
        "final_model": str(final) if final else None,
        "plots": plots,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }
    atomic_write_json(root / "report.json", report)
    lines = ["# drirl run report", "",
             f"Policy `{config.run.policy}`, methods {', '.join(results)}, seed {config.run.seed}"
             + _warm_start_note(config) + ".", "",
             compare_results(results), ""]
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


def _warm_start_note(config: Any) -> str:
    if getattr(config.run, "warm_start", "none") == "sft":
        return "; the GRPO methods start from the SFT model (`run.warm_start: sft`)"
    return ""


def model_card(config: Any, result: dict[str, Any] | None) -> str:
    from drirl.config import config_to_dict

    lines = ["---", "library_name: transformers", "tags: [drirl, safety, grpo, inverse-rl]", "---", "",
             f"# {config.run.final_method} model trained with drirl", "",
             f"- **Base model:** `{config.run.policy}`" + _warm_start_note(config),
             f"- **Data:** {config.run.data or 'the bundled drirl 7-category Chain-of-Draft set (train split)'}",
             f"- **Method:** {config.run.final_method} (see drirl's METHOD.md: category reward models learned by "
             "inverse RL, GRPO with dynamic reward scaling)", "", "## Settings", "", "```json",
             json.dumps({"run": config_to_dict(config.run), **config.sections}, indent=2), "```", ""]
    if result:
        lines += ["## Evaluation (bundled test split, offline refusal matcher)", "", "| metric | value | 95% CI |",
                  "|---|---|---|"]
        for key in HEADLINE:
            ci = result.get(f"{key}_ci") or [None, None]
            lines.append(f"| {key} | {_fmt(result.get(key))} | {_fmt(ci[0])} – {_fmt(ci[1])} |")
    return "\n".join(lines) + "\n"
