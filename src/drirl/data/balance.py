"""Balance the training split so every category has the same number of examples (METHOD.md §2.2).

Large categories are down-sampled, small ones up-sampled by repeating examples, with a cap on how often one
example may appear (repeating one prompt fifty times teaches the reward model that prompt, not the category).
The test split is never touched. Everything is deterministic given the seed.
"""

from __future__ import annotations

import logging
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

from drirl.config import help_field
from drirl.data.schema import BENIGN, Example, Taxonomy, default_taxonomy, empty_categories
from drirl.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

REPEAT_MARK = "#r"


@dataclass
class BalanceConfig:
    strategy: Literal["downsample", "upsample", "target"] = field(
        default="upsample",
        metadata=help_field("downsample: every category to the smallest one; upsample: every category towards the "
                            "largest one (repeating examples, capped by max_repeats); target: every category to "
                            "target_per_category, down- or up-sampling as needed."))
    target_per_category: int | None = field(
        default=None, metadata=help_field("Training examples per category for strategy 'target'."))
    max_repeats: int = field(
        default=3, metadata=help_field("Most times one example may appear after up-sampling, the original included "
                                       "(3: the original plus copies #r1 and #r2). 1 disables up-sampling."))
    seed: int = field(default=0, metadata=help_field("Seed of the sampling; the same seed gives the same output."))
    include_benign: bool = field(
        default=True, metadata=help_field("Balance the benign prompts as one more category; if false they pass "
                                          "through unchanged."))

    def __post_init__(self) -> None:
        if self.strategy not in ("downsample", "upsample", "target"):
            raise ConfigError(f"unknown strategy {self.strategy!r} (downsample, upsample or target)", key="strategy")
        if self.max_repeats < 1:
            raise ConfigError("must be at least 1", key="max_repeats")
        if self.strategy == "target" and (self.target_per_category is None or self.target_per_category < 1):
            raise ConfigError("strategy 'target' needs a positive target_per_category", key="target_per_category")


@dataclass
class BalanceReport:
    """Training examples per category before and after balancing."""

    before: dict[str, int]
    after: dict[str, int]
    strategy: str = "upsample"
    target: int | None = None
    repeated: dict[str, int] = field(default_factory=dict)
    passed_through: int = 0
    empty: list[str] = field(default_factory=list)  # taxonomy categories left without a training example

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "target": self.target, "before": dict(self.before),
                "after": dict(self.after), "repeated": dict(self.repeated), "passed_through": self.passed_through,
                "empty": list(self.empty)}

    def to_table(self) -> str:
        width = max([len("category"), *(len(c) for c in self.before)])
        lines = [f"{'category':<{width}}  {'before':>7}  {'after':>7}  {'change':>7}  {'copies':>6}",
                 f"{'-' * width}  {'-' * 7}  {'-' * 7}  {'-' * 7}  {'-' * 6}"]
        for category, before in self.before.items():
            after = self.after.get(category, 0)
            lines.append(f"{category:<{width}}  {before:>7}  {after:>7}  {after - before:>+7}  "
                         f"{self.repeated.get(category, 0):>6}")
        total_before, total_after = sum(self.before.values()), sum(self.after.values())
        lines.append(f"{'total':<{width}}  {total_before:>7}  {total_after:>7}  {total_after - total_before:>+7}  "
                     f"{sum(self.repeated.values()):>6}")
        target = f", target {self.target}" if self.target is not None else ""
        lines.append(f"(training split only; strategy {self.strategy}{target}; {self.passed_through} held-out or "
                     "unbalanced example(s) passed through unchanged)")
        if self.empty:
            lines.append(f"warning: no training example for {', '.join(self.empty)}: no reward model can be "
                         "trained for it")
        return "\n".join(lines)


def _upsample(items: list[Example], wanted: int, max_repeats: int, rng: random.Random) -> list[Example]:
    """``items`` plus copies up to ``wanted``: round k copies a fresh permutation with id suffix ``#rk``, so no
    example is copied twice before every other one was copied once."""
    copies: list[Example] = []
    for round_number in range(1, max_repeats):
        if len(items) + len(copies) >= wanted:
            break
        order = list(items)
        rng.shuffle(order)
        for example in order[: wanted - len(items) - len(copies)]:
            copies.append(Example(id=f"{example.id}{REPEAT_MARK}{round_number}", prompt=example.prompt,
                                  category=example.category, demonstration=example.demonstration,
                                  source=example.source, split=example.split,
                                  meta={**example.meta, "repeat_of": example.id}))
    return [*items, *copies]


def balance(examples: list[Example], config: BalanceConfig | None = None,
            taxonomy: Taxonomy | None = None) -> tuple[list[Example], BalanceReport]:
    """Balance the training split per category; returns the new examples and the before/after report.

    Output order: balanced training examples category by category (taxonomy order, originals in input order,
    then their copies), followed by the examples passed through (test split; benign when not included).
    """
    config = config or BalanceConfig()
    taxonomy = taxonomy or default_taxonomy()
    already = next((e for e in examples if "repeat_of" in e.meta), None)
    if already is not None:
        raise DataError(f"the input is already up-sampled (example {already.id!r} repeats "
                        f"{already.meta['repeat_of']!r}); balance the unbalanced file instead", field="id")
    balanced_ids = taxonomy.ids + ([BENIGN] if config.include_benign else [])
    groups: dict[str, list[Example]] = defaultdict(list)
    passed: list[Example] = []
    for example in examples:
        taxonomy.validate(example.category)
        if example.split == "train" and example.category in balanced_ids:
            groups[example.category].append(example)
        else:
            passed.append(example)
    before = {category: len(groups[category]) for category in balanced_ids}
    present = [n for n in before.values() if n > 0]
    if not present:
        empty = _warn_empty(examples, taxonomy)
        return list(examples), BalanceReport(before, dict(before), config.strategy, None, {}, len(passed), empty)
    if config.strategy == "downsample":
        target = min(present)
    elif config.strategy == "upsample":
        target = max(present)
    else:
        target = int(config.target_per_category or 0)
    output: list[Example] = []
    after: dict[str, int] = {}
    repeated: dict[str, int] = {}
    for category in balanced_ids:
        items = groups[category]
        # One generator per category, seeded by name: adding a category never changes another's sample.
        rng = random.Random(f"drirl-balance:{config.seed}:{category}")
        if len(items) > target:
            keep = set(rng.sample(range(len(items)), target))
            chosen = [e for i, e in enumerate(items) if i in keep]
        elif len(items) < target and items:
            chosen = _upsample(items, min(target, len(items) * config.max_repeats), config.max_repeats, rng)
        else:
            chosen = list(items)
        after[category] = len(chosen)
        repeated[category] = sum(1 for e in chosen if "repeat_of" in e.meta)
        output.extend(chosen)
    ids = Counter(e.id for e in output + passed)
    clash = [i for i, n in ids.items() if n > 1]
    if clash:
        raise DataError(f"balancing would create duplicate ids ({', '.join(clash[:3])}); ids must not end with "
                        f"'{REPEAT_MARK}<n>'", field="id")
    empty = _warn_empty(output + passed, taxonomy)
    return output + passed, BalanceReport(before, after, config.strategy, target, repeated, len(passed), empty)


def _warn_empty(examples: list[Example], taxonomy: Taxonomy) -> list[str]:
    empty = empty_categories(examples, taxonomy)
    if empty:
        logger.warning("balance: no training example for %s: no reward model can be trained for it",
                       ", ".join(empty))
    return empty
