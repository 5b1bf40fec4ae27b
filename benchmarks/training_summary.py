"""What each GRPO run of a finished `drirl run` did during training, from its log_history.json: the training reward
at the start and the end, how far α spread (its standard deviation within a batch, the share clipped to
[alpha_min, alpha_max], the share masked as outliers), the share of groups whose rewards were all equal (no
advantage at all), and the share of completions cut at max_completion_length.

    PYTHONPATH=src python benchmarks/training_summary.py RUN --methods grpo grpo-irl dr-irl

Rows are method × seed; ``--json`` prints the same as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

# (column, log key): averaged over the logged steps.
AVERAGED = (("α sd", "scaling/alpha/std"), ("α^D sd", "scaling/alpha_data/std"), ("α^M sd", "scaling/alpha_model/std"),
            ("clipped", "scaling/fraction_clipped"), ("masked", "scaling/fraction_masked"),
            ("zero-sd groups", "frac_reward_zero_std"), ("cut completions", "completions/clipped_ratio"),
            ("reward sd", "reward_std"))


def align_folders(run: Path, method: str) -> dict[int, Path]:
    """{seed: align folder holding log_history.json}; align-<method> is the first seed."""
    from drirl.pipeline import recorded_seeds, seed_folder

    seeds = recorded_seeds(run)
    found = {}
    for seed in seeds:
        folder = seed_folder(run / f"align-{method}", seeds, seed) / "run"
        if (folder / "log_history.json").is_file():
            found[seed] = folder
    return found


def _mean(values: list[float]) -> float:
    known = [v for v in values if v is not None and math.isfinite(v)]
    return sum(known) / len(known) if known else math.nan


def summarise(history: list[dict], window: int = 5) -> dict[str, float]:
    """The averaged columns, and the mean training reward of the first and last ``window`` logged steps."""
    steps = [row for row in history if "reward" in row]
    out = {name: _mean([row.get(key) for row in steps]) for name, key in AVERAGED}
    out["reward first"] = _mean([row["reward"] for row in steps[:window]])
    out["reward last"] = _mean([row["reward"] for row in steps[-window:]])
    out["steps"] = len(steps)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--methods", nargs="+", default=["grpo", "grpo-irl", "dr-irl"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    table = {m: {s: summarise(json.loads((f / "log_history.json").read_text()))
                 for s, f in align_folders(args.run, m).items()} for m in args.methods}
    if args.json:
        print(json.dumps(table))
        return 0
    columns = ["steps", "reward first", "reward last"] + [name for name, _ in AVERAGED]
    print("| method | seed | " + " | ".join(columns) + " |")
    print("|---|---:|" + "---:|" * len(columns))
    for method, by_seed in table.items():
        for seed, row in by_seed.items():
            cells = [f"{row[c]:.0f}" if c == "steps" else f"{row[c]:.3f}" for c in columns]
            print(f"| {method} | {seed} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
