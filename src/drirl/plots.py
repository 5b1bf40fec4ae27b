"""Every figure drirl draws, and the one function that saves a figure: :func:`save_figure` writes a PNG atomically
(a temporary file beside the target, fsynced, then renamed over it), so a crash never leaves a half-written plot.
The functions take plain dicts and lists (an evaluation's ``eval.json`` summary, a trainer's ``log_history``, a
reward bundle's cross-category matrix) and import matplotlib only when they draw, on the Agg backend (no display
needed): the bar charts and the heatmap use its object-oriented ``Figure`` API, the training curves pyplot.

FIGURES: which command or stage writes which PNG

* ``drirl align`` (:func:`drirl.align.recipe.train_policy`, also each align stage of ``drirl run``):
  ``<output>/training_curves.png`` by :func:`plot_training_curves`;
* ``drirl eval`` (:func:`drirl.eval.report.write_eval_outputs`, also each ``eval-*`` folder of ``drirl run``):
  ``per_category.png`` by :func:`plot_per_category` and ``jailbreaks.png`` by :func:`plot_jailbreaks`;
* ``drirl reward eval``: ``<bundle>/cross_category.png`` (or ``--heatmap PNG``) by :func:`plot_heatmap`;
* ``drirl run``, its reward stage: ``<bundle folder>/heatmap.png`` by :func:`plot_heatmap`;
* ``drirl run``, its report (:func:`drirl.report.write_report`): ``per_category_refusal.png`` by
  :func:`plot_comparison`, ``reward_curves.png`` by :func:`plot_reward_curves` and ``alpha_<method>.png`` by
  :func:`plot_alpha`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from drirl.io import atomic_write

__all__ = ["plot_alpha", "plot_comparison", "plot_heatmap", "plot_jailbreaks", "plot_per_category",
           "plot_reward_curves", "plot_training_curves", "save_figure"]


def save_figure(figure: Any, path: str | os.PathLike, *, dpi: int = 120, tight: bool = True) -> Path:
    """Save a matplotlib figure as a PNG atomically (temporary file in the same folder, fsynced, then renamed);
    returns ``path``. ``tight`` crops the figure to its drawn content (``bbox_inches="tight"``)."""
    path = Path(path)
    with atomic_write(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=dpi, **({"bbox_inches": "tight"} if tight else {}))
    return path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------------------------------------------------------
# Training: reward and α over steps
# ---------------------------------------------------------------------------------------------------------------

def _history(run_dir: str) -> list[dict[str, Any]]:
    path = Path(run_dir) / "log_history.json"
    return json.loads(path.read_text()) if path.is_file() else []


def plot_training_curves(history: list[dict[str, Any]], path: str | Path) -> Path | None:
    """Mean reward per step (and on the held-out prompts when measured), and α's mean with its min-max band when
    scaling was on."""
    plt = _pyplot()

    rows = [h for h in history if "reward" in h and "step" in h]
    if not rows:
        return None
    steps = [h["step"] for h in rows]
    has_alpha = any("scaling/alpha/mean" in h for h in rows)
    figure, axes = plt.subplots(1, 2 if has_alpha else 1, figsize=(10 if has_alpha else 5, 3.5), squeeze=False)
    axes[0][0].plot(steps, [h["reward"] for h in rows], marker="o", ms=3, label="training prompts")
    held_out = [h for h in history if "eval_reward" in h and "step" in h]
    if held_out:
        axes[0][0].plot([h["step"] for h in held_out], [h["eval_reward"] for h in held_out], marker="s", ms=5,
                        lw=2, label="held-out prompts")
        axes[0][0].legend()
    axes[0][0].set(xlabel="step", ylabel="mean reward", title="reward")
    if has_alpha:
        alpha_rows = [h for h in rows if "scaling/alpha/mean" in h]
        x = [h["step"] for h in alpha_rows]
        axes[0][1].plot(x, [h["scaling/alpha/mean"] for h in alpha_rows], label="α mean")
        axes[0][1].fill_between(x, [h["scaling/alpha/min"] for h in alpha_rows],
                                [h["scaling/alpha/max"] for h in alpha_rows], alpha=0.2, label="α min–max")
        axes[0][1].set(xlabel="step", ylabel="α", title="difficulty factor α")
        axes[0][1].legend()
    figure.tight_layout()
    save_figure(figure, path, dpi=110)
    plt.close(figure)
    return Path(path)


def plot_reward_curves(histories: dict[str, str], path: Path) -> Path | None:
    """The training reward of each method over steps ({method: run folder holding log_history.json})."""
    plt = _pyplot()

    curves = {m: [(h["step"], h["reward"]) for h in _history(d) if "reward" in h] for m, d in histories.items()}
    curves = {m: c for m, c in curves.items() if c}
    if not curves:
        return None
    figure, axis = plt.subplots(figsize=(6, 3.5))
    for method, points in curves.items():
        axis.plot(*zip(*points, strict=False), marker="o", ms=3, label=method)
    axis.set(xlabel="step", ylabel="mean reward (own reward models)", title="training reward")
    axis.legend()
    save_figure(figure, path, dpi=110)
    plt.close(figure)
    return path


def plot_alpha(history_dir: str, path: Path) -> Path | None:
    """α over training (mean and min-max band) and the per-category mean α."""
    plt = _pyplot()

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
    save_figure(figure, path, dpi=110)
    plt.close(figure)
    return path


# ---------------------------------------------------------------------------------------------------------------
# Evaluation: rates with their 95% intervals, one model or several
# ---------------------------------------------------------------------------------------------------------------

def as_summary(result: Any) -> dict[str, Any]:
    """An evaluation result as a dict: an EvalResult's ``to_dict()``, or the dict itself (eval.json)."""
    return result.to_dict() if hasattr(result, "to_dict") else dict(result)


def harm_categories(summaries: Any) -> list[str]:
    """The harm categories of evaluation summaries (those with a harmful refusal rate), in first-seen order."""
    categories: list[str] = []
    for s in summaries:
        for cat, metrics in (s.get("per_category") or {}).items():
            if "harmful_refusal" in metrics and cat not in categories:
                categories.append(cat)
    return categories


def _errors(entries: Sequence[Mapping[str, Any] | None]) -> tuple[list[float], list[list[float]]]:
    """Bar heights and asymmetric error bars; a missing value is a zero-height bar without an error bar."""
    means, low, high = [], [], []
    for e in entries:
        mean = e.get("mean") if e else None
        if mean is None:
            means.append(0.0)
            low.append(0.0)
            high.append(0.0)
            continue
        means.append(mean)
        low.append(max(0.0, mean - (e.get("low") if e.get("low") is not None else mean)))
        high.append(max(0.0, (e.get("high") if e.get("high") is not None else mean) - mean))
    return means, [low, high]


def _short(summary: Mapping[str, Any]) -> str:
    # A model folder's last part names it well enough in a plot title.
    model = str(summary.get("model") or "")
    return Path(model).name if os.sep in model and Path(model).name else model


def _empty_figure(message: str) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 2.5))
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center")
    return fig


def plot_per_category(result: Any, path: str | os.PathLike) -> Path:
    """Refusal rate per harmful category (and compliance on benign prompts) with 95% CI error bars."""
    from matplotlib.figure import Figure

    s = as_summary(result)
    per_cat = s.get("per_category") or {}
    labels, entries, colors = [], [], []
    for cat, metrics in per_cat.items():
        if "harmful_refusal" in metrics:
            labels.append(cat)
            entries.append(metrics["harmful_refusal"])
            colors.append("tab:blue")
    for key, label in (("benign_compliance", "benign\n(borderline,\ncompliance)"),
                       ("ordinary_benign_compliance", "benign\n(ordinary,\ncompliance)")):
        entry = per_cat.get("benign", {}).get(key)
        if entry:
            labels.append(label)
            entries.append(entry)
            colors.append("tab:green")
    if not labels:
        return save_figure(_empty_figure("no per-category results"), path)
    means, yerr = _errors(entries)
    fig = Figure(figsize=(max(6.0, 0.9 * len(labels) + 2), 4))
    ax = fig.add_subplot()
    ax.bar(range(len(labels)), means, yerr=yerr, capsize=4, color=colors)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("rate (95% bootstrap CI)")
    ax.set_title(f"Refusal on harmful prompts (blue) and compliance on benign ones (green) — {_short(s)}",
                 fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def plot_jailbreaks(result: Any, path: str | os.PathLike) -> Path:
    """Refusal per jailbreak template with CI error bars, against the refusal rate without attack."""
    from matplotlib.figure import Figure

    s = as_summary(result)
    jailbreaks = s.get("jailbreaks") or {}
    if not jailbreaks:
        return save_figure(_empty_figure("jailbreak robustness was not evaluated"), path)
    labels = list(jailbreaks)
    means, yerr = _errors([jailbreaks[t] for t in labels])
    fig = Figure(figsize=(max(6.0, 0.8 * len(labels) + 2), 4))
    ax = fig.add_subplot()
    ax.bar(range(len(labels)), means, yerr=yerr, capsize=4, color="tab:orange", label="under attack")
    if s.get("harmful_refusal") is not None:
        ax.axhline(s["harmful_refusal"], color="tab:blue", linestyle="--", label="no attack")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("refusal rate (95% bootstrap CI)")
    ax.set_title(f"Refusal under jailbreak templates — {_short(s)}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def plot_comparison(results: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Grouped bars: refusal on harmful prompts per category (plus overall), one bar per model, CI error bars."""
    from matplotlib.figure import Figure

    summaries = {name: as_summary(r) for name, r in results.items()}
    categories = harm_categories(summaries.values())
    if not summaries or not categories:
        return save_figure(_empty_figure("no per-category results to compare"), path)
    groups = [*categories, "overall"]
    width = 0.8 / len(summaries)
    fig = Figure(figsize=(max(7.0, 1.1 * len(groups) * max(1, len(summaries)) / 2 + 3), 4.5))
    ax = fig.add_subplot()
    for k, (name, s) in enumerate(summaries.items()):
        entries = [(s.get("per_category", {}).get(c, {}) or {}).get("harmful_refusal") for c in categories]
        ci = s.get("harmful_refusal_ci") or [None, None]
        entries.append({"mean": s.get("harmful_refusal"), "low": ci[0], "high": ci[1]})
        means, yerr = _errors(entries)
        positions = [i - 0.4 + width * (k + 0.5) for i in range(len(groups))]
        ax.bar(positions, means, width=width, yerr=yerr, capsize=2, label=name)
    ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("refusal on harmful prompts (95% CI)")
    ax.set_title("Refusal per category, by model", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------------------------
# Reward models: the cross-category matrix
# ---------------------------------------------------------------------------------------------------------------

def _cell(value: Any) -> float:
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def plot_heatmap(matrix: Mapping[str, Mapping[str, float]] | Sequence[Sequence[float]], categories: Sequence[str],
                 path: str | os.PathLike, *, row_labels: Sequence[str] | None = None,
                 title: str = "Pairwise accuracy: reward model (row) on the pairs of a category (column)") -> Path:
    """Draw the cross-category matrix as an annotated heatmap PNG, written atomically; returns ``path``.

    ``matrix`` is ``{model: {category: value}}`` (rows in its order) or a list of rows whose labels are
    ``row_labels`` (default: ``categories`` when square, else ``model 1..n``). Missing or NaN cells show "–".
    """
    from matplotlib.figure import Figure

    categories = list(categories)
    if isinstance(matrix, Mapping):
        rows = list(matrix)
        values = [[_cell(matrix[r].get(c)) for c in categories] for r in rows]
    else:
        values = [[_cell(v) for v in row] for row in matrix]
        if any(len(row) != len(categories) for row in values):
            raise ValueError(f"every row of the matrix needs {len(categories)} values (one per category)")
        rows = list(row_labels) if row_labels is not None else (
            categories if len(values) == len(categories) else [f"model {i + 1}" for i in range(len(values))])
    if len(rows) != len(values):
        raise ValueError(f"{len(rows)} row labels for {len(values)} rows")
    import numpy as np

    data = np.ma.masked_invalid(np.array(values, dtype=float).reshape(len(rows), len(categories)))
    fig = Figure(figsize=(max(4.5, 0.9 * len(categories) + 2.5), max(2.2, 0.6 * len(rows) + 1.8)))
    ax = fig.add_subplot()
    image = ax.imshow(data, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(categories)), categories, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel("pairs of category")
    ax.set_ylabel("reward model")
    ax.set_title(title, fontsize=9)
    for r in range(len(rows)):
        for c in range(len(categories)):
            value = values[r][c]
            text = "–" if math.isnan(value) else f"{value:.2f}"
            ax.text(c, r, text, ha="center", va="center", fontsize=8,
                    color="black" if not math.isnan(value) and value > 0.6 else "white")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="accuracy")
    fig.tight_layout()
    return save_figure(fig, path, tight=False)
