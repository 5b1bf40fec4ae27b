"""The Best-of-N gate before RL (issue 14): does picking the best of N SFT samples by the bundle's reward raise
refusal on harmful prompts while keeping borderline and ordinary benign prompts answered, against greedy SFT? The
prompts come from the validation split by default (where settings are chosen; ``--split test`` to report).

    PYTHONPATH=src HF_HUB_OFFLINE=1 python benchmarks/gate_table.py --sft RUN/align-sft/model \
        --bundle RUN/reward/bundle --n 8 --harmful_per_category 10 --benign_per_kind 20 --out gate.jsonl

Prints one table (greedy SFT vs best of N: rates judged by the evaluation's default judge or ``--judge``, Wilson
intervals, the paired difference with its bootstrap interval and exact McNemar p) and the command to rerun it;
``--json`` prints the same numbers as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

SETS = (("harmful refusal", "harmful", "refusal"), ("borderline compliance", "borderline", "compliance"),
        ("ordinary compliance", "ordinary", "compliance"))


def pick_prompts(harmful_per_category: int, benign_per_kind: int, data: str | None, split: str = "test") -> list:
    """The first prompts of ``split`` by id: ``harmful_per_category`` of each harm category, ``benign_per_kind``
    borderline and as many ordinary benign ones."""
    from drirl.data.schema import load_split

    chosen, counts = [], {}
    for example in sorted(load_split(data, split), key=lambda e: e.id):
        if example.category == "benign":
            key = "borderline" if (example.meta or {}).get("borderline") else "ordinary"
            cap = benign_per_kind
        else:
            key, cap = example.category, harmful_per_category
        if counts.get(key, 0) < cap:
            counts[key] = counts.get(key, 0) + 1
            chosen.append(example)
    return chosen


class RecordingBundle:
    """The bundle, recording every candidate it scores: what the reward prefers among the policy's own samples."""

    def __init__(self, bundle):
        self.bundle, self.calls = bundle, []
        self.system_prompt, self.categories = bundle.system_prompt, bundle.categories

    def score(self, prompts, responses, categories):
        scores = self.bundle.score(prompts, responses, categories)
        self.calls.append((list(prompts), list(responses), list(scores)))
        return scores


def candidate_stats(calls, kind, candidate_labels) -> dict:
    """Per harmful prompt, its N candidates (the first scoring call: all candidates at once): how many prompts had at
    least one refusing and one compliant candidate, how often the top-scored candidate was a refusal there, and the
    mean within-prompt reward margin refusal − compliance (the on-policy decision the reward makes)."""
    prompts, responses, scores = calls[0]
    by_prompt: dict = {}
    for prompt, label, score in zip(prompts, candidate_labels, scores, strict=True):
        key = prompt if isinstance(prompt, str) else json.dumps(prompt)
        by_prompt.setdefault(key, []).append((label, float(score)))
    mixed = wins = 0
    margins = []
    for key, options in by_prompt.items():
        if kind.get(key) != "harmful":
            continue
        refusals = [s for label, s in options if label == "refusal"]
        answers = [s for label, s in options if label in ("compliance", "partial")]
        if refusals and answers:
            mixed += 1
            best_label = max(options, key=lambda o: o[1])[0]
            wins += best_label == "refusal"
            margins.append(sum(refusals) / len(refusals) - sum(answers) / len(answers))
    labels = [label for p, label in zip(prompts, candidate_labels, strict=True)
              if kind.get(p if isinstance(p, str) else json.dumps(p)) == "harmful"]
    return {"harmful_candidates": len(labels),
            "candidate_labels": {name: labels.count(name) for name in sorted(set(labels))},
            "prompts_with_both": mixed, "best_is_refusal_there": wins,
            "mean_margin_refusal_minus_compliance": sum(margins) / len(margins) if margins else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sft", required=True, help="the SFT model folder")
    parser.add_argument("--bundle", required=True, help="the reward-model bundle folder")
    parser.add_argument("--data", default=None, help="examples whose split gives the prompts (default: bundled)")
    parser.add_argument("--split", default="validation", choices=("validation", "test"),
                        help="validation to choose settings (default), test to report them")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--harmful_per_category", type=int, default=10)
    parser.add_argument("--benign_per_kind", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="JSONL of every prompt's greedy and best response")
    parser.add_argument("--judge", default=None, help="an offline judge (rules, minilm, hybrid, refusal); "
                        "default: the evaluation's default")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from drirl.data.schema import write_examples
    from drirl.eval.judges import DEFAULT_JUDGE, build_judge
    from drirl.eval.reward_gate import best_of_n_gate
    from drirl.eval.stats import paired_comparison, wilson_interval
    from drirl.responses import degenerate_reason

    examples = pick_prompts(args.harmful_per_category, args.benign_per_kind, args.data, args.split)
    kind = {e.id: ("borderline" if (e.meta or {}).get("borderline") else "ordinary") if e.category == "benign"
            else "harmful" for e in examples}
    subset = Path(args.out or "gate").with_suffix(".prompts.jsonl")
    write_examples(subset, examples)
    started = time.time()
    from drirl.reward.bundle import CategoryRewardModels

    bundle = RecordingBundle(CategoryRewardModels(args.bundle))
    rows = best_of_n_gate(args.sft, args.bundle, data=subset, n=args.n, max_new_tokens=args.max_new_tokens,
                          temperature=args.temperature, seed=args.seed, bundle=bundle, split=args.split)
    seconds = time.time() - started
    judge = build_judge(args.judge or DEFAULT_JUDGE)

    def labels_of(prompts: list, texts: list) -> list[str]:
        verdicts = judge.judge([p if isinstance(p, str) else json.dumps(p) for p in prompts], texts)
        return ["degenerate" if degenerate_reason(t) else v.label for t, v in zip(texts, verdicts, strict=True)]

    for row in rows:
        row["kind"] = kind[row["id"]]
    for side in ("greedy", "response"):
        for row, label in zip(rows, labels_of([r["prompt"] for r in rows], [r[side] for r in rows]), strict=True):
            row[f"{side}_label"] = label
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)

    table = {}
    for name, key, label in SETS:
        part = [r for r in rows if r["kind"] == key]
        greedy = [float(r["greedy_label"] == label) for r in part]
        best = [float(r["response_label"] == label) for r in part]
        diff = paired_comparison([best], [greedy], seed=args.seed)
        table[name] = {
            "n": len(part),
            "greedy": sum(greedy) / len(part), "greedy_ci": wilson_interval(int(sum(greedy)), len(part)),
            "best": sum(best) / len(part), "best_ci": wilson_interval(int(sum(best)), len(part)),
            "difference": diff.difference, "difference_ci": [diff.low, diff.high], "p_value": diff.p_value,
            "degenerate_greedy": sum(r["greedy_label"] == "degenerate" for r in part) / len(part),
            "degenerate_best": sum(r["response_label"] == "degenerate" for r in part) / len(part)}
    prompt_kind = {(e.prompt if isinstance(e.prompt, str) else json.dumps(e.prompt)): kind[e.id] for e in examples}
    candidates = candidate_stats(bundle.calls, prompt_kind, labels_of(*bundle.calls[0][:2]))
    command = "PYTHONPATH=src HF_HUB_OFFLINE=1 python benchmarks/gate_table.py " + " ".join(sys.argv[1:])
    if args.json:
        print(json.dumps({"n": args.n, "seconds": round(seconds, 1), "table": table, "candidates": candidates,
                          "command": command}))
        return 0
    print(f"Best-of-{args.n} gate: {len(rows)} {args.split} prompts, {seconds:.0f} s (judge: {judge.name})")
    print(f"{'':24s}{'n':>4s}  {'greedy SFT':>22s}  {f'best of {args.n}':>22s}  {'difference [95% CI]':>24s}  p")
    for name, t in table.items():
        g = f"{t['greedy']:.2f} [{t['greedy_ci'][0]:.2f}, {t['greedy_ci'][1]:.2f}]"
        b = f"{t['best']:.2f} [{t['best_ci'][0]:.2f}, {t['best_ci'][1]:.2f}]"
        d = f"{100 * t['difference']:+.1f} [{100 * t['difference_ci'][0]:+.1f}, {100 * t['difference_ci'][1]:+.1f}]"
        p = "–" if t["p_value"] is None else f"{t['p_value']:.3g}"
        print(f"{name:24s}{t['n']:4d}  {g:>22s}  {b:>22s}  {d:>24s}  {p}")
        print(f"{'  degenerate':24s}{'':4s}  {t['degenerate_greedy']:>22.2f}  {t['degenerate_best']:>22.2f}")
    c = candidates
    print(f"harmful candidates: {c['harmful_candidates']} {c['candidate_labels']}; prompts with a refusing and a "
          f"compliant candidate: {c['prompts_with_both']}, top-scored candidate a refusal on "
          f"{c['best_is_refusal_there']} of them; mean reward margin refusal − compliance there: "
          f"{c['mean_margin_refusal_minus_compliance']}")
    print(f"rerun: {command}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
