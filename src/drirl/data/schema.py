"""The one record every stage exchanges (:class:`Example`), the harm taxonomy, and reading/writing example files.

An example file is JSON lines (one object per line) or a Hugging Face ``datasets`` folder written by
``save_to_disk``. Each record has the fields of :class:`Example`; ``id``, ``prompt`` and ``category`` are required.
Every problem raises :class:`~drirl.errors.DataError` naming the file, the line (the row number for a datasets
folder) and the field, or, with ``skip_invalid``, is counted per reason and skipped.

Three splits are fixed in the data: ``train``, ``validation`` (for choosing settings) and ``test`` (for reporting
only). The two held-out splits are never trained on: every training entry point passes its examples through
:func:`assert_not_test` (or takes them from :func:`train_examples`), which refuses test and validation rows.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from drirl.errors import DataError
from drirl.io import atomic_directory, atomic_write_json, iter_jsonl, read_text, write_jsonl

logger = logging.getLogger(__name__)

BENIGN = "benign"
SPLITS = ("train", "validation", "test")
# Never trained on: validation chooses settings, test only reports.
HELD_OUT_SPLITS = ("validation", "test")
_SPLITS_TEXT = "expected 'train', 'validation' or 'test'"
REQUIRED_FIELDS = ("id", "prompt", "category")
BUNDLED_DIR = Path(__file__).parent / "bundled"
DEFAULT_TAXONOMY_PATH = BUNDLED_DIR / "taxonomy.yaml"
CARD_SUFFIX = ".card.json"
FOLDER_CARD_NAME = "dataset_card.json"
_CATEGORY_ID = re.compile(r"^[a-z][a-z0-9_]*$")
_ROLES = ("system", "user", "assistant")


# --------------------------------------------------------------------------------------------- the record
@dataclass
class Example:
    """One prompt with its category and (optionally) its demonstration.

    ``prompt`` is plain text (one user turn) or a list of chat messages ``{"role", "content"}``.
    ``demonstration`` is the good answer in Chain-of-Draft form (``"Draft: ...\\nAnswer: ..."``): for a harmful
    prompt a refusal, for a benign prompt a helpful answer, the same form on both sides (the bundled set and the
    teacher filter keep it so); ``None`` until the teacher fills it.
    """

    id: str
    prompt: str | list[dict]
    category: str
    demonstration: str | None = None
    source: str = "user"
    split: str = "train"
    meta: dict = field(default_factory=dict)

    @property
    def is_benign(self) -> bool:
        return self.category == BENIGN

    def prompt_text(self) -> str:
        """The prompt as one string (chat messages joined as ``role: content`` lines)."""
        if isinstance(self.prompt, str):
            return self.prompt
        return "\n".join(f"{m['role']}: {m['content']}" for m in self.prompt)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "prompt": self.prompt, "category": self.category,
                "demonstration": self.demonstration, "source": self.source, "split": self.split,
                "meta": dict(self.meta)}

    @classmethod
    def from_dict(cls, d: Any, *, file: str | None = None, line: int | None = None,
                  taxonomy: Taxonomy | None = None, require_demonstration: bool = False) -> Example:
        """Build and check one record; any problem raises DataError(file=, line=, field=)."""
        if not isinstance(d, dict):
            raise DataError(f"expected a JSON object, got {type(d).__name__}", file=file, line=line)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            raise DataError(f"unknown field (known fields: {', '.join(sorted(known))}; put extra information "
                            "under 'meta', or import the file with `drirl data import generic`)",
                            file=file, line=line, field=unknown[0])
        for name in REQUIRED_FIELDS:
            if name not in d:
                raise DataError("missing column", file=file, line=line, field=name)
        example_id = d["id"]
        if not isinstance(example_id, str) or not example_id.strip():
            raise DataError(f"id must be a non-empty string, got {example_id!r}", file=file, line=line, field="id")
        prompt = _check_prompt(d["prompt"], file, line)
        category = d["category"]
        if not isinstance(category, str):
            raise DataError(f"category must be a string, got {category!r}", file=file, line=line,
                            field="category")
        (taxonomy or default_taxonomy()).validate(category, file=file, line=line)
        demonstration = d.get("demonstration")
        if demonstration is not None and not isinstance(demonstration, str):
            raise DataError(f"demonstration must be a string or null, got {type(demonstration).__name__}",
                            file=file, line=line, field="demonstration")
        if demonstration is not None and not demonstration.strip():
            demonstration = None  # an empty answer is no answer: the teacher fills it
        if require_demonstration and demonstration is None:
            raise DataError("missing demonstration (run `drirl data demos` to fill it)", file=file, line=line,
                            field="demonstration")
        source = d.get("source", "user")
        if not isinstance(source, str):
            raise DataError(f"source must be a string, got {source!r}", file=file, line=line, field="source")
        split = d.get("split", "train")
        if split not in SPLITS:
            raise DataError(f"wrong split value {split!r} ({_SPLITS_TEXT})", file=file, line=line,
                            field="split")
        meta = d.get("meta") or {}
        if not isinstance(meta, dict):
            raise DataError(f"meta must be an object, got {type(meta).__name__}", file=file, line=line,
                            field="meta")
        return cls(id=example_id, prompt=prompt, category=category, demonstration=demonstration, source=source,
                   split=split, meta=dict(meta))


def _check_prompt(prompt: Any, file: str | None, line: int | None) -> str | list[dict]:
    if isinstance(prompt, str):
        if not prompt.strip():
            raise DataError("empty prompt", file=file, line=line, field="prompt")
        return prompt
    if isinstance(prompt, list):
        if not prompt:
            raise DataError("empty prompt (no messages)", file=file, line=line, field="prompt")
        messages = []
        for i, message in enumerate(prompt):
            if (not isinstance(message, dict) or message.get("role") not in _ROLES
                    or not isinstance(message.get("content"), str)):
                raise DataError(f"message {i} must be {{'role': one of {'/'.join(_ROLES)}, 'content': text}}",
                                file=file, line=line, field="prompt")
            messages.append({"role": message["role"], "content": message["content"]})
        if not any(m["role"] == "user" and m["content"].strip() for m in messages):
            raise DataError("empty prompt (no user message with text)", file=file, line=line, field="prompt")
        return messages
    raise DataError(f"prompt must be a string or a list of chat messages, got {type(prompt).__name__}",
                    file=file, line=line, field="prompt")


# --------------------------------------------------------------------------------------------- taxonomy
@dataclass
class Category:
    id: str
    name: str
    description: str


@dataclass
class Taxonomy:
    """The harm categories, in order. ``benign`` is always accepted on top of them."""

    categories: list[Category]
    source: str = "bundled"

    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.categories]

    @property
    def all_ids(self) -> list[str]:
        return [*self.ids, BENIGN]

    def get(self, category_id: str) -> Category:
        for category in self.categories:
            if category.id == category_id:
                return category
        if category_id == BENIGN:
            return Category(BENIGN, "Benign", "Harmless requests that deserve a helpful answer.")
        raise KeyError(category_id)

    def validate(self, category: str, *, file: str | None = None, line: int | None = None) -> str:
        """Return ``category`` if known, else raise DataError naming the file, line and the allowed ids."""
        if category not in self.all_ids:
            raise DataError(f"unknown category {category!r} (taxonomy {self.source}: {', '.join(self.all_ids)})",
                            file=file, line=line, field="category")
        return category

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "categories": [dataclasses.asdict(c) for c in self.categories]}


def load_taxonomy(path: str | os.PathLike | None = None) -> Taxonomy:
    """Read a taxonomy YAML (``categories: [{id, name, description}, ...]``); the bundled one by default."""
    path = Path(path) if path is not None else DEFAULT_TAXONOMY_PATH
    where = str(path)
    if not path.is_file():
        raise DataError("taxonomy file not found" if not path.exists() else "taxonomy path is not a file",
                        file=where)
    text = read_text(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise DataError(f"invalid YAML: {getattr(err, 'problem', err)}", file=where,
                        line=mark.line + 1 if mark else None) from None
    if not isinstance(data, dict) or not isinstance(data.get("categories"), list) or not data["categories"]:
        raise DataError("a taxonomy is a mapping with a non-empty list 'categories'", file=where,
                        field="categories")
    categories: list[Category] = []
    for i, item in enumerate(data["categories"]):
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise DataError(f"category {i} needs an 'id'", file=where, field=f"categories[{i}].id")
        category_id = item["id"]
        if not _CATEGORY_ID.match(category_id):
            raise DataError(f"category id {category_id!r} must be lowercase letters, digits and underscores",
                            file=where, field=f"categories[{i}].id")
        if category_id == BENIGN:
            raise DataError(f"'{BENIGN}' is reserved for benign prompts and is added implicitly", file=where,
                            field=f"categories[{i}].id")
        if category_id in (c.id for c in categories):
            raise DataError(f"duplicate category id {category_id!r}", file=where, field=f"categories[{i}].id")
        categories.append(Category(category_id, str(item.get("name") or category_id),
                                   " ".join(str(item.get("description") or "").split())))
    return Taxonomy(categories, source="bundled" if path == DEFAULT_TAXONOMY_PATH else where)


_DEFAULT_TAXONOMY: Taxonomy | None = None


def default_taxonomy() -> Taxonomy:
    """The bundled taxonomy, read once."""
    global _DEFAULT_TAXONOMY
    if _DEFAULT_TAXONOMY is None:
        _DEFAULT_TAXONOMY = load_taxonomy()
    return _DEFAULT_TAXONOMY


# --------------------------------------------------------------------------------------------- reading
def _reason(err: DataError) -> str:
    """A short, countable reason for a skipped record (no file or line in it)."""
    message = err.message
    if message.startswith("unknown category"):
        return "unknown category"
    if message.startswith("malformed JSON") or message.startswith("expected a JSON object"):
        return "malformed JSON"
    if message.startswith("wrong split"):
        return "wrong split value"
    if message.startswith("duplicate id"):
        return "duplicate id"
    if message.startswith("empty prompt"):
        return "empty prompt"
    if message.startswith("missing column"):
        return f"missing column '{err.field}'"
    return f"invalid field '{err.field}'" if err.field else message


def _iter_dataset_folder(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (row number, record) from a ``save_to_disk`` folder (a Dataset, or a DatasetDict of splits)."""
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency
        raise DataError("reading a dataset folder needs the 'datasets' package", file=str(path)) from None
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as err:  # datasets raises many types (FileNotFoundError, ValueError, ArrowInvalid...)
        raise DataError(f"not a JSONL file or a datasets folder written by save_to_disk: {err}",
                        file=str(path)) from None
    parts = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [(None, loaded)]
    number = 0
    for split_name, dataset in parts:
        for row in dataset:
            number += 1
            row = dict(row)
            yield number, _decode_folder_row(row, split_name)


def _decode_folder_row(row: dict[str, Any], split_name: str | None) -> dict[str, Any]:
    # Arrow needs one type per column, so write_examples stores chat prompts and meta as JSON text.
    if row.pop("prompt_format", "text") == "messages" and isinstance(row.get("prompt"), str):
        try:
            row["prompt"] = json.loads(row["prompt"])
        except ValueError:
            pass
    if isinstance(row.get("meta"), str):
        try:
            row["meta"] = json.loads(row["meta"]) if row["meta"] else {}
        except ValueError:
            pass
    if split_name in SPLITS and row.get("split") is None:
        row["split"] = split_name
    return {k: v for k, v in row.items() if not (k in ("demonstration", "source", "split", "meta") and v is None)}


def read_examples_report(path: str | os.PathLike, *, taxonomy: Taxonomy | None = None, skip_invalid: bool = False,
                         require_demonstration: bool = False,
                         problems: list[DataError] | None = None) -> tuple[list[Example], dict[str, int]]:
    """Read examples; returns them with a count of skipped records per reason (empty unless ``skip_invalid``).

    ``problems``, if given, receives every DataError met (with ``skip_invalid``), for `drirl data validate`.
    """
    path = Path(path)
    taxonomy = taxonomy or default_taxonomy()
    rows: Iterable[tuple[int, Any]] = _iter_dataset_folder(path) if path.is_dir() else iter_jsonl(path)
    examples: list[Example] = []
    skipped: Counter[str] = Counter()
    first_line: dict[str, int] = {}
    records = 0
    for number, row in rows:
        records += 1
        try:
            if isinstance(row, DataError):
                raise row
            example = Example.from_dict(row, file=str(path), line=number, taxonomy=taxonomy,
                                        require_demonstration=require_demonstration)
            if example.id in first_line:
                raise DataError(f"duplicate id {example.id!r} (first seen at line {first_line[example.id]})",
                                file=str(path), line=number, field="id")
        except DataError as err:
            if not skip_invalid:
                raise
            skipped[_reason(err)] += 1
            if problems is not None:
                problems.append(err)
            continue
        first_line[example.id] = number
        examples.append(example)
    if not records:
        # An empty file is never a useful input: saying so beats training or evaluating on nothing.
        raise DataError("no records: the file is empty" if not path.is_dir() else "no records: the dataset is empty",
                        file=str(path))
    if skipped:
        logger.warning("%s: skipped %d invalid record(s): %s", path, sum(skipped.values()),
                       ", ".join(f"{reason}: {n}" for reason, n in skipped.most_common()))
    return examples, dict(skipped)


def read_examples(path: str | os.PathLike, *, taxonomy: Taxonomy | None = None, skip_invalid: bool = False,
                  require_demonstration: bool = False) -> list[Example]:
    """Read a JSONL file or a datasets folder of examples; see :func:`read_examples_report`."""
    examples, _ = read_examples_report(path, taxonomy=taxonomy, skip_invalid=skip_invalid,
                                       require_demonstration=require_demonstration)
    return examples


# --------------------------------------------------------------------------------------------- writing
def card_path(path: str | os.PathLike) -> Path:
    """Where the dataset card of an example file lives: ``<file>.card.json``, or inside a folder."""
    path = Path(path)
    return path.with_name(path.name + CARD_SUFFIX) if _is_jsonl_path(path) else path / FOLDER_CARD_NAME


def read_card(path: str | os.PathLike) -> dict[str, Any] | None:
    card = card_path(path)
    if not card.is_file():
        return None
    try:
        return json.loads(card.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"unreadable dataset card: {err}", file=str(card)) from None


def _is_jsonl_path(path: Path) -> bool:
    return path.suffix.lower() in (".jsonl", ".json") and not path.is_dir()


def write_examples(path: str | os.PathLike, examples: Iterable[Example], *, card: dict | None = None) -> None:
    """Write examples atomically: a ``.jsonl`` file (card beside it as ``<file>.card.json``), or else a datasets
    folder via ``save_to_disk`` built under a temporary name and renamed into place (card inside)."""
    path = Path(path)
    examples = list(examples)
    seen: set[str] = set()
    for example in examples:
        if example.id in seen:
            raise DataError(f"refusing to write duplicate id {example.id!r}", file=str(path), field="id")
        seen.add(example.id)
    if _is_jsonl_path(path):
        write_jsonl(path, (e.to_dict() for e in examples))
        if card is not None:
            atomic_write_json(card_path(path), card)
        return
    import datasets

    columns: dict[str, list[Any]] = {name: [] for name in
                                     ("id", "prompt", "prompt_format", "category", "demonstration", "source",
                                      "split", "meta")}
    for example in examples:
        is_text = isinstance(example.prompt, str)
        columns["id"].append(example.id)
        columns["prompt"].append(example.prompt if is_text else json.dumps(example.prompt, ensure_ascii=False))
        columns["prompt_format"].append("text" if is_text else "messages")
        columns["category"].append(example.category)
        columns["demonstration"].append(example.demonstration)
        columns["source"].append(example.source)
        columns["split"].append(example.split)
        columns["meta"].append(json.dumps(example.meta, ensure_ascii=False, sort_keys=True))
    features = datasets.Features({name: datasets.Value("string") for name in columns})
    dataset = datasets.Dataset.from_dict(columns, features=features)
    with atomic_directory(path) as tmp:
        dataset.save_to_disk(str(tmp))
        if card is not None:
            atomic_write_json(tmp / FOLDER_CARD_NAME, card)


# --------------------------------------------------------------------------------------------- splits
def check_split(split: str) -> str:
    """Return ``split`` if it is one of :data:`SPLITS`, else raise DataError naming the allowed values."""
    if split not in SPLITS:
        raise DataError(f"wrong split value {split!r} ({_SPLITS_TEXT})", field="split")
    return split


def split_examples(examples: Iterable[Example], split: str) -> list[Example]:
    """The examples of one split ('train', 'validation' or 'test')."""
    check_split(split)
    return [e for e in examples if e.split == split]


def assert_not_test(examples: Iterable[Example], *, where: str = "training") -> None:
    """Raise DataError if any example belongs to a held-out split (test or validation): no command ever trains on
    them. The message names the splits that leaked and the first ids."""
    leaked = [e for e in examples if e.split in HELD_OUT_SPLITS]
    if leaked:
        ids = [e.id for e in leaked]
        shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        counts = Counter(e.split for e in leaked)
        splits = [s for s in ("test", "validation") if counts[s]]
        what = " and ".join(f"{counts[s]} {s}-split" for s in splits)
        raise DataError(f"{what} example(s) reached {where} ({shown}): refusing to train on the "
                        f"{' and '.join(splits)} split{'s' if len(splits) > 1 else ''}", field="split")


# Clearer name for the same guard: it refuses every held-out split, not only test.
assert_train_only = assert_not_test


def train_examples(examples: Iterable[Example], *, where: str = "training") -> list[Example]:
    """The training split, checked by :func:`assert_not_test`; every training entry point goes through this (by way
    of :func:`load_split`)."""
    train = split_examples(examples, "train")
    assert_not_test(train, where=where)
    return train


def load_examples(data: str | os.PathLike | None = None, *, taxonomy: Taxonomy | None = None,
                  skip_invalid: bool = False, require_demonstration: bool = False) -> list[Example]:
    """Every example of ``data`` (a JSON-lines file or a datasets folder), or of the bundled set when it is None."""
    if data is None or data == "":
        return load_bundled()
    return read_examples(data, taxonomy=taxonomy, skip_invalid=skip_invalid,
                         require_demonstration=require_demonstration)


def load_split(data: str | os.PathLike | None, split: str, *, taxonomy: Taxonomy | None = None,
               with_demonstration: bool = False, skip_invalid: bool = False, require_demonstration: bool = False,
               where: str = "training") -> list[Example]:
    """The examples of one split of ``data`` (None: the bundled set): the one loader of every stage.

    ``with_demonstration`` keeps the rows that have one; ``require_demonstration`` makes a row without one an error
    (naming file and line). The train split goes through :func:`train_examples`, so no held-out row reaches
    ``where``.
    """
    check_split(split)
    examples = load_examples(data, taxonomy=taxonomy, skip_invalid=skip_invalid,
                             require_demonstration=require_demonstration)
    chosen = train_examples(examples, where=where) if split == "train" else split_examples(examples, split)
    if with_demonstration:
        chosen = [e for e in chosen if e.demonstration]
    return chosen


def empty_categories(examples: Iterable[Example], taxonomy: Taxonomy | None = None, *,
                     split: str = "train") -> list[str]:
    """Taxonomy categories (benign included) without any example of ``split``: no reward model can be trained for
    such a category, so the commands that can empty one (demos, balance, split) warn about it."""
    check_split(split)
    taxonomy = taxonomy or default_taxonomy()
    present = {e.category for e in examples if e.split == split}
    return [c for c in taxonomy.all_ids if c not in present]


def validation_examples(examples: Iterable[Example]) -> list[Example]:
    """The validation split: the rows settings are chosen on (never trained on, never reported as results)."""
    return split_examples(examples, "validation")


# --------------------------------------------------------------------------------------------- bundled set
def bundled_dataset_paths() -> list[Path]:
    """The bundled demonstration files: the seven harm categories, and the benign prompts (DATASHEET.md)."""
    return [BUNDLED_DIR / "harmful.jsonl", BUNDLED_DIR / "benign.jsonl"]


def load_bundled(split: str | None = None, categories: list[str] | None = None) -> list[Example]:
    """The bundled examples, optionally one split and some categories (``"benign"`` included by name)."""
    taxonomy = default_taxonomy()
    if categories is not None:
        for category in categories:
            taxonomy.validate(category)
    examples: list[Example] = []
    seen: dict[str, Path] = {}
    for path in bundled_dataset_paths():
        for example in read_examples(path, taxonomy=taxonomy):
            if example.id in seen:
                raise DataError(f"duplicate id {example.id!r} (also in {seen[example.id]})", file=str(path),
                                field="id")
            seen[example.id] = path
            examples.append(example)
    if split is not None:
        examples = split_examples(examples, split)
    if categories is not None:
        wanted = set(categories)
        examples = [e for e in examples if e.category in wanted]
    return examples
