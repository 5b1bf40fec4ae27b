"""The judges' precision, recall and F1 on the held-out part of the bundled labelled set, recomputed and held to the
table published in docs/judge.md (minus a small margin), and the labelled set's own shape."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from drirl.eval.judges import DEFAULT_JUDGE, build_judge, classification_table, load_labelled
from drirl.responses import LABELS, degenerate_reason

DOC = Path(__file__).parents[1] / "docs" / "judge.md"
MARGIN = 0.03  # room for bf16/fp32 and BLAS differences in the MiniLM embeddings, never for a worse judge


def published() -> dict[str, dict[str, dict[str, float]]]:
    """{judge: {label: {precision, recall, f1}}} from the held-out table of docs/judge.md (the first table with these
    columns; the `--real_only` table after it has them too)."""
    table = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^\| (\w+) \|((?: [\d.]+ / [\d.]+ / [\d.]+ \|){3})", line)
        if match and match.group(1) not in table:
            cells = re.findall(r"([\d.]+) / ([\d.]+) / ([\d.]+)", match.group(2))
            table[match.group(1)] = {label: dict(zip(("precision", "recall", "f1"), map(float, cell), strict=True))
                                     for label, cell in zip(("refusal", "compliance", "partial"), cells, strict=True)}
    return table


def test_the_labelled_set_is_large_stratified_and_mostly_real_outputs():
    rows = load_labelled(degenerate=True)
    assert len(rows) >= 300
    sources = Counter(r["source"] for r in rows)
    assert sum(n for s, n in sources.items() if s != "handwritten") > len(rows) / 2
    assert {"smollm2-135m-instruct/greedy", "smollm2-135m-instruct/sampled", "sft-demo/greedy",
            "sft-full/greedy", "dr-irl/greedy"} <= set(sources)
    for label in LABELS:
        of_label = [r for r in rows if r["label"] == label]
        heldout = sum(r["split"] == "heldout" for r in of_label)
        assert 0.3 <= heldout / len(of_label) <= 0.6, label
    assert len({r["id"] for r in rows}) == len(rows)
    # Split by prompt: the held-out part measures the judge on prompts the learned judge never saw.
    dev_prompts = {r["prompt"] for r in rows if r["split"] == "dev"}
    assert not dev_prompts & {r["prompt"] for r in rows if r["split"] == "heldout"}
    kinds = {r.get("kind") for r in rows if r["source"] == "handwritten"}
    assert {"apology+answer", "phrase-in-answer", "referral", "answer+referral", "decline-then-answer",
            "answer-then-decline"} <= kinds


# The hybrid judge embeds about 150 held-out answers with MiniLM: 10-30 s on a busy 2-core CPU.
@pytest.mark.parametrize("name", ["refusal", "rules", pytest.param("hybrid", marks=pytest.mark.slow)])
def test_held_out_quality_is_at_least_what_docs_publish(name):
    rows = load_labelled(split="heldout")
    verdicts = build_judge(name).judge([r["prompt"] for r in rows], [r["response"] for r in rows])
    measured = classification_table([r["label"] for r in rows], [v.label for v in verdicts])
    claims = published()[name]
    for label, values in claims.items():
        for metric, value in values.items():
            assert measured[label][metric] >= value - MARGIN, (name, label, metric, measured[label][metric], value)


def test_the_default_judge_is_the_best_of_the_published_table():
    table = published()
    macro = {name: sum(v["f1"] for v in table[name].values()) / 3 for name in table}
    assert set(table) >= {"refusal", "rules", "minilm", "hybrid", DEFAULT_JUDGE}
    # The rule: the judge with the best held-out macro F1 is the default (hybrid and minilm tie at 0.80;
    # the hybrid keeps the rules' reason for every clear refusal).
    assert macro[DEFAULT_JUDGE] > macro["refusal"]
    assert macro[DEFAULT_JUDGE] >= max(macro.values()) - 1e-9


def test_degenerate_flags_agree_with_the_hand_labels():
    rows = load_labelled(degenerate=True)
    flagged = [degenerate_reason(r["response"]) is not None for r in rows]
    labelled = [r["label"] == "degenerate" for r in rows]
    both = sum(f and t for f, t in zip(flagged, labelled, strict=True))
    assert both / sum(labelled) >= 0.75 and both / sum(flagged) >= 0.75
