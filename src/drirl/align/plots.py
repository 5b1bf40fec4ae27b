"""Training plots a person would rather look at than read: reward and α over steps."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


def save_figure(figure: Any, path: str | Path) -> None:
    """Save a matplotlib figure atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        figure.savefig(tmp, dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def plot_training_curves(history: list[dict[str, Any]], path: str | Path) -> Path | None:
    """Mean reward per step (and on the held-out prompts when measured), and α's mean with its min-max band when
    scaling was on."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    save_figure(figure, path)
    plt.close(figure)
    return Path(path)
