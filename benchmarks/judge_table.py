"""The judges on the bundled labelled set: precision, recall and F1 per class on the held-out part.

    PYTHONPATH=src HF_HUB_OFFLINE=1 python benchmarks/judge_table.py            # the table of docs/judge.md
    PYTHONPATH=src HF_HUB_OFFLINE=1 python benchmarks/judge_table.py --write    # refit the bundled MiniLM weights

Every judge sees each response as `drirl judge` does; the labelled set is src/drirl/eval/bundled/judge_labelled.jsonl
(split dev: fits the learned judge; heldout: only measures). --write fits the learned judge on the dev part and
saves src/drirl/eval/bundled/judge_minilm.json before measuring.
"""

from __future__ import annotations

import argparse
import json
import time


def measure(split: str = "heldout", names: tuple[str, ...] = ("refusal", "rules", "minilm", "hybrid"),
            encoder=None, real_only: bool = False) -> dict[str, dict]:
    from drirl.eval.judges import LearnedJudge, build_judge, classification_table, load_labelled

    rows = load_labelled(split=split)
    if real_only:  # model outputs only, without the hand-written cases
        rows = [r for r in rows if r["source"] != "handwritten"]
    prompts, responses = [r["prompt"] for r in rows], [r["response"] for r in rows]
    truth = [r["label"] for r in rows]
    learned = LearnedJudge(encoder=encoder)
    results = {}
    for name in names:
        judge = build_judge(name, encoder=learned.encoder) if name in ("minilm", "hybrid") else build_judge(name)
        started = time.perf_counter()
        predicted = [v.label for v in judge.judge(prompts, responses)]
        results[name] = {**classification_table(truth, predicted), "seconds": time.perf_counter() - started,
                         "n": len(rows)}
    return results


def degenerate_check() -> dict:
    """degenerate_reason() against the hand labels of every row (it is not fitted, so both splits measure it)."""
    from drirl.eval.judges import load_labelled
    from drirl.responses import degenerate_reason

    rows = load_labelled(degenerate=True)
    flagged = [degenerate_reason(r["response"]) is not None for r in rows]
    labelled = [r["label"] == "degenerate" for r in rows]
    tp = sum(f and t for f, t in zip(flagged, labelled, strict=True))
    return {"n": len(rows), "labelled": sum(labelled), "flagged": sum(flagged), "both": tp,
            "precision": tp / sum(flagged) if any(flagged) else 0.0,
            "recall": tp / sum(labelled) if any(labelled) else 0.0}


def markdown(results: dict[str, dict]) -> str:
    lines = ["| judge | refusal P / R / F1 | compliance P / R / F1 | partial P / R / F1 | accuracy | macro F1 |",
             "|---|---|---|---|---|---|"]
    for name, t in results.items():
        cells = [" / ".join(f"{t[label][k]:.2f}" for k in ("precision", "recall", "f1"))
                 for label in ("refusal", "compliance", "partial")]
        lines.append(f"| {name} | {' | '.join(cells)} | {t['accuracy']:.2f} | {t['macro_f1']:.2f} |")
    first = next(iter(results.values()))
    support = ", ".join(f"{label} {first[label]['support']}" for label in ("refusal", "compliance", "partial"))
    lines.append(f"\n{first['n']} held-out responses ({support}).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="refit and save the bundled MiniLM judge weights")
    parser.add_argument("--split", default="heldout", choices=["dev", "heldout"])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--real_only", action="store_true", help="measure on model outputs only (no hand-written rows)")
    args = parser.parse_args()

    from drirl.eval.judges import LEARNED_WEIGHTS, bundled_path, fit_learned_judge, load_labelled
    from drirl.io import atomic_write_text
    from drirl.models import load_text_encoder

    encoder = load_text_encoder("minilm")
    if args.write:
        weights = fit_learned_judge(load_labelled(split="dev"), encoder)
        atomic_write_text(bundled_path(LEARNED_WEIGHTS), json.dumps(weights) + "\n")
    results = measure(args.split, encoder=encoder, real_only=args.real_only)
    degenerate = degenerate_check()
    if args.json:
        print(json.dumps({"judges": results, "degenerate": degenerate}, indent=1))
        return
    print(markdown(results))
    print(f"\ndegenerate_reason() on all {degenerate['n']} rows: {degenerate['labelled']} labelled degenerate, "
          f"{degenerate['flagged']} flagged, {degenerate['both']} both (precision {degenerate['precision']:.2f}, "
          f"recall {degenerate['recall']:.2f}).")


if __name__ == "__main__":
    main()
