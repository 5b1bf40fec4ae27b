"""Split one example file into train / validation / test, and merge several files (`drirl data split|merge`).

Splitting is stratified: within each category (and, for benign prompts, separately for borderline and ordinary
ones) a seeded shuffle picks the validation and test rows, so every split keeps the category mix. Rows already in
a held-out split stay there: a test prompt is never moved into training.

Merging keeps every id unique: an id found in two files is an error naming both. A prompt that appears in two
different splits (say train in one file, test in another) is an error too, since it would leak the held-out
split into training.
"""

from __future__ import annotations

import logging
import os
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

from drirl.config import help_field
from drirl.data.schema import BENIGN, SPLITS, Example, Taxonomy, default_taxonomy, read_examples
from drirl.errors import ConfigError, DataError

logger = logging.getLogger(__name__)


@dataclass
class SplitConfig:
    validation: float = field(default=0.1, metadata=help_field(
        "Share of each category's prompts in the validation split (settings are chosen on it)."))
    test: float = field(default=0.2, metadata=help_field(
        "Share of each category's prompts in the test split (results are reported on it, nothing is tuned on it)."))
    seed: int = field(default=0, metadata=help_field("Seed of the shuffle; the same seed gives the same split."))
    stratify_borderline: bool = field(default=True, metadata=help_field(
        "Split borderline and ordinary benign prompts (meta.borderline) separately, so both kinds reach every "
        "split."))

    def __post_init__(self) -> None:
        for name in ("validation", "test"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError("must lie in [0, 1)", key=name)
        if self.validation + self.test >= 1.0:
            raise ConfigError(f"validation + test = {self.validation + self.test:g} leaves no training rows; "
                              "keep the sum below 1", key="test")


@dataclass
class SplitReport:
    """Rows per stratum (category, or benign/borderline) and split, before and after."""

    before: dict[str, dict[str, int]]
    after: dict[str, dict[str, int]]
    empty: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"before": self.before, "after": self.after, "empty": list(self.empty)}


def _stratum(example: Example, config: SplitConfig) -> str:
    if example.category == BENIGN and config.stratify_borderline:
        return f"{BENIGN} (borderline)" if example.meta.get("borderline") else f"{BENIGN} (ordinary)"
    return example.category


def held_out_count(total: int, share: float) -> int:
    """Rows of a stratum of ``total`` rows that a split of share s gets: round(s · total), halves rounded up."""
    return int(share * total + 0.5)


def assign_splits(examples: list[Example], config: SplitConfig | None = None,
                  taxonomy: Taxonomy | None = None) -> tuple[list[Example], SplitReport]:
    """Return the examples (input order) with ``split`` set, stratified per category; see the module docstring.

    Per stratum of n rows, test gets round(test · n) rows and validation round(validation · n), counting the rows
    already there; the rest stays train. A stratum whose held-out rows already exceed the share keeps them all.
    """
    config = config or SplitConfig()
    taxonomy = taxonomy or default_taxonomy()
    groups: dict[str, list[int]] = defaultdict(list)
    for index, example in enumerate(examples):
        taxonomy.validate(example.category)
        groups[_stratum(example, config)].append(index)
    new_split = {i: e.split for i, e in enumerate(examples)}
    before: dict[str, dict[str, int]] = {}
    after: dict[str, dict[str, int]] = {}
    for name in sorted(groups):
        indices = groups[name]
        counts = Counter(examples[i].split for i in indices)
        before[name] = {s: counts[s] for s in SPLITS}
        # One generator per stratum, seeded by name: adding a category never changes another's split.
        rng = random.Random(f"drirl-split:{config.seed}:{name}")
        train = [i for i in indices if examples[i].split == "train"]
        rng.shuffle(train)
        for split, share in (("test", config.test), ("validation", config.validation)):
            wanted = max(0, held_out_count(len(indices), share) - counts[split])
            for i in train[:wanted]:
                new_split[i] = split
            train = train[wanted:]
        final = Counter(new_split[i] for i in indices)
        after[name] = {s: final[s] for s in SPLITS}
    empty = [f"{name}: no {s} rows" for name, c in after.items() for s in SPLITS
             if not c[s] and (s == "train" or getattr(config, s) > 0)]
    for problem in empty:
        logger.warning("split: %s (too few prompts in this category for the requested shares)", problem)
    out = [e if new_split[i] == e.split else replace(e, split=new_split[i], meta=dict(e.meta))
           for i, e in enumerate(examples)]
    return out, SplitReport(before, after, empty)


def format_split_table(report: SplitReport) -> str:
    """Rows per stratum: train/validation/test before -> after."""
    width = max([len("stratum"), *(len(n) for n in report.after)])
    lines = [f"{'stratum':<{width}}  {'train':>12}  {'validation':>12}  {'test':>12}",
             f"{'-' * width}  {'-' * 12}  {'-' * 12}  {'-' * 12}"]
    for name, counts in report.after.items():
        cells = [f"{report.before[name][s]:>4} -> {counts[s]:>4}" for s in SPLITS]
        lines.append(f"{name:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)


def _normalised(text: str) -> str:
    return " ".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def merge_files(paths: list[str | os.PathLike], *, taxonomy: Taxonomy | None = None) -> list[Example]:
    """The examples of every file, in order. An id in two files, or a prompt in two different splits, is a
    DataError naming both files."""
    if len(paths) < 2:
        raise ConfigError("merge needs at least two files", key="inputs")
    taxonomy = taxonomy or default_taxonomy()
    merged: list[Example] = []
    id_source: dict[str, str] = {}
    prompt_source: dict[str, tuple[str, Example]] = {}
    for path in paths:
        where = str(path)
        for example in read_examples(path, taxonomy=taxonomy):
            if example.id in id_source:
                raise DataError(f"id {example.id!r} is in {id_source[example.id]} and in {where}: ids must stay "
                                "unique (rename them in one file)", file=where, field="id")
            id_source[example.id] = where
            key = _normalised(example.prompt_text())
            seen = prompt_source.get(key)
            if seen is not None and seen[1].split != example.split:
                raise DataError(f"the prompt of {example.id!r} ({example.split}) is also {seen[1].id!r} "
                                f"({seen[1].split}) in {seen[0]}: a prompt in two splits leaks the held-out split",
                                file=where, field="split")
            prompt_source.setdefault(key, (where, example))
            merged.append(example)
    return merged
