"""Counts per category and split, the length of the demonstrations and their form (`drirl data stats`)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

from drirl.data.schema import BENIGN, SPLITS, Example, Taxonomy, default_taxonomy

DRAFT_PREFIX = "Draft:"
ANSWER_LABEL = "\nAnswer:"


def word_count(text: str) -> int:
    return len(text.split())


def split_draft(demonstration: str) -> tuple[str | None, str]:
    """``(draft, answer)`` of a Chain-of-Draft demonstration ``"Draft: ...\\nAnswer: ..."``; ``(None, text)`` when
    the text does not have that shape (no leading ``Draft:`` or no ``Answer:`` line)."""
    text = demonstration.strip()
    if not text.startswith(DRAFT_PREFIX) or ANSWER_LABEL not in text:
        return None, text
    draft, _, answer = text[len(DRAFT_PREFIX):].partition(ANSWER_LABEL)
    return draft.strip(), answer.strip()


def _ordered_categories(seen: Iterable[str], taxonomy: Taxonomy | None) -> list[str]:
    seen = list(dict.fromkeys(seen))
    if taxonomy is None:
        bundled = default_taxonomy()
        # The bundled taxonomy orders the table whenever it covers the data; otherwise keep first-seen order.
        taxonomy = bundled if all(c in bundled.all_ids for c in seen) else None
    if taxonomy is not None:
        return [*taxonomy.ids, *(c for c in seen if c not in taxonomy.all_ids), BENIGN]
    return [c for c in seen if c != BENIGN] + [BENIGN]


def demonstration_form(demonstrations: Iterable[str]) -> dict[str, Any] | None:
    """The form of some demonstrations: ``{"n", "with_draft" (share 0..1), "draft_steps" (mean number of
    ``->``-separated steps), "draft_words" (both means over those with a draft), "answer_words" (mean; the whole
    text when there is no draft)}``; None when there are none.

    If harmful and benign demonstrations differ here (a draft only on refusals, say), the form itself tells a model
    which decision to take; the bundled set keeps these equal so that only the content decides.
    """
    drafts: list[int] = []
    steps: list[int] = []
    answers: list[int] = []
    for text in demonstrations:
        draft, answer = split_draft(text)
        if draft is not None:
            drafts.append(word_count(draft))
            steps.append(len(draft.split("->")))
        answers.append(word_count(answer))
    if not answers:
        return None
    return {"n": len(answers), "with_draft": round(len(drafts) / len(answers), 3),
            "draft_steps": round(statistics.fmean(steps), 2) if steps else None,
            "draft_words": round(statistics.fmean(drafts), 1) if drafts else None,
            "answer_words": round(statistics.fmean(answers), 1)}


def dataset_stats(examples: Iterable[Example], taxonomy: Taxonomy | None = None) -> dict[str, Any]:
    """``{"categories": {category: {"train": n, "validation": n, "test": n}}, "total": n,
    "demonstration_words": {...}, "form": {...}, "form_harmful": {...}}``.

    Every taxonomy category and ``benign`` appear, with zeros when absent, so tables from different files line up.
    ``demonstration_words`` gives per category the number of demonstrations and their word counts
    (mean, median, min, max); ``form`` gives per category :func:`demonstration_form`, ``form_harmful`` the same
    over all harm categories together (None without harmful demonstrations). Categories without demonstrations are
    left out of both.
    """
    examples = list(examples)
    order = _ordered_categories((e.category for e in examples), taxonomy)
    categories: dict[str, dict[str, int]] = {c: dict.fromkeys(SPLITS, 0) for c in order}
    lengths: dict[str, list[int]] = {c: [] for c in order}
    texts: dict[str, list[str]] = {c: [] for c in order}
    for example in examples:
        categories[example.category][example.split] += 1
        if example.demonstration:
            lengths[example.category].append(word_count(example.demonstration))
            texts[example.category].append(example.demonstration)
    words = {c: {"n": len(v), "mean": round(statistics.fmean(v), 1), "median": statistics.median(v),
                 "min": min(v), "max": max(v)} for c, v in lengths.items() if v}
    form = {c: demonstration_form(v) for c, v in texts.items() if v}
    harmful = demonstration_form([t for c, v in texts.items() if c != BENIGN for t in v])
    return {"categories": categories, "total": len(examples), "demonstration_words": words, "form": form,
            "form_harmful": harmful}


def format_stats_table(stats: dict[str, Any]) -> str:
    """Plain-text tables: counts per split and demonstration word lengths per category, then the form table
    (share of demonstrations with a draft, mean draft steps, mean draft words, mean answer words)."""
    categories: dict[str, dict[str, int]] = stats["categories"]
    words: dict[str, dict[str, Any]] = stats.get("demonstration_words", {})
    width = max([len("category"), len("all harmful"), *(len(c) for c in categories)])
    header = (f"{'category':<{width}}  {'train':>6}  {'valid':>6}  {'test':>6}  {'total':>6}  {'demos':>6}  "
              f"{'words mean':>10}  {'median':>6}  {'min':>4}  {'max':>4}")
    lines = [header, "-" * len(header)]
    totals = dict.fromkeys(SPLITS, 0)
    for category, counts in categories.items():
        for split in SPLITS:
            totals[split] += counts.get(split, 0)
        w = words.get(category)
        length = (f"{w['n']:>6}  {w['mean']:>10.1f}  {w['median']:>6g}  {w['min']:>4}  {w['max']:>4}" if w
                  else f"{0:>6}  {'-':>10}  {'-':>6}  {'-':>4}  {'-':>4}")
        lines.append(f"{category:<{width}}  {counts.get('train', 0):>6}  {counts.get('validation', 0):>6}  "
                     f"{counts.get('test', 0):>6}  {sum(counts.values()):>6}  {length}")
    lines.append("-" * len(header))
    n_demos = sum(w["n"] for w in words.values())
    lines.append(f"{'total':<{width}}  {totals['train']:>6}  {totals['validation']:>6}  {totals['test']:>6}  "
                 f"{stats['total']:>6}  {n_demos:>6}")
    form: dict[str, dict[str, Any]] = stats.get("form") or {}
    if form:
        lines.append("")
        lines.append("form of the demonstrations (a draft on one side only would let the form carry the decision)")
        form_header = (f"{'category':<{width}}  {'demos':>6}  {'with draft':>10}  {'draft steps':>11}  "
                       f"{'draft words':>11}  {'answer words':>12}")
        lines += [form_header, "-" * len(form_header)]
        rows = list(form.items())
        if stats.get("form_harmful"):
            rows.append(("all harmful", stats["form_harmful"]))
        for category, f in rows:
            has_draft = f["draft_words"] is not None
            draft_steps = f"{f['draft_steps']:>11.2f}" if has_draft else f"{'-':>11}"
            draft_words = f"{f['draft_words']:>11.1f}" if has_draft else f"{'-':>11}"
            lines.append(f"{category:<{width}}  {f['n']:>6}  {f['with_draft']:>10.0%}  {draft_steps}  {draft_words}  "
                         f"{f['answer_words']:>12.1f}")
    return "\n".join(lines)
