"""Jailbreak templates for robustness checks: each wraps a harmful prompt in an attack framing (role play, prefix
injection, obfuscation) and the evaluation measures how often the model still refuses.

A template is one JSON (or YAML) record ``{"id", "style", "template"}`` whose template text holds ``{prompt}``
exactly once. The bundled set lives in ``drirl/eval/bundled/jailbreaks.jsonl``; users can point at their own
``.jsonl``, ``.json`` or ``.yaml`` file. These are static, human-written attacks: the paper's optimised attacks
(AutoDAN, GCG) need gradient or search access and are out of scope for the offline default.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from drirl.errors import DataError
from drirl.io import read_jsonl_numbered, read_text

__all__ = ["PLACEHOLDER", "JailbreakTemplate", "bundled_jailbreaks_path", "load_jailbreak_templates", "wrap"]

PLACEHOLDER = "{prompt}"
_FIELDS = ("id", "style", "template")


@dataclass(frozen=True)
class JailbreakTemplate:
    id: str
    style: str
    template: str

    def wrap(self, prompt: str) -> str:
        return wrap(prompt, self)


def bundled_jailbreaks_path() -> Path:
    return Path(str(resources.files("drirl.eval") / "bundled" / "jailbreaks.jsonl"))


def wrap(prompt: str, template: JailbreakTemplate | str) -> str:
    """The attack prompt: ``{prompt}`` replaced by the harmful prompt (plain replacement, so braces elsewhere in
    the template or the prompt need no escaping)."""
    text = template.template if isinstance(template, JailbreakTemplate) else template
    if text.count(PLACEHOLDER) != 1:
        raise DataError(f"a jailbreak template must contain {PLACEHOLDER} exactly once", field="template")
    return text.replace(PLACEHOLDER, prompt)


def _read_records(path: Path) -> list[tuple[int | None, Any]]:
    """(line or None, record) pairs from a JSONL, JSON or YAML file."""
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".yaml", ".yml"):
        raise DataError("jailbreak templates must be a .jsonl, .json, .yaml or .yml file", file=str(path))
    if suffix == ".jsonl":
        return list(read_jsonl_numbered(path))
    text = read_text(path)
    if suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as err:
            raise DataError(f"malformed JSON: {err}", file=str(path)) from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise DataError(f"invalid YAML: {err}", file=str(path)) from None
    if isinstance(data, dict) and "templates" in data:
        data = data["templates"]
    if not isinstance(data, list):
        raise DataError("expected a list of templates (or a mapping with a 'templates' list)", file=str(path))
    return [(None, row) for row in data]


def load_jailbreak_templates(path: str | Path | None = None) -> list[JailbreakTemplate]:
    """Read and validate templates: every record needs non-empty string ``id``, ``style`` and ``template``, ids are
    unique, and each template holds ``{prompt}`` exactly once. ``path`` None reads the bundled set."""
    path = Path(path) if path is not None else bundled_jailbreaks_path()
    templates: list[JailbreakTemplate] = []
    seen: dict[str, int | None] = {}
    for index, (line, row) in enumerate(_read_records(path)):
        where = {"file": str(path), "line": line if line is not None else index + 1}
        if not isinstance(row, dict):
            raise DataError(f"expected a mapping with {', '.join(_FIELDS)}", **where)
        unknown = sorted(set(row) - set(_FIELDS))
        if unknown:
            raise DataError(f"unknown key(s) {unknown}; expected {', '.join(_FIELDS)}", **where, field=unknown[0])
        for key in _FIELDS:
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise DataError("missing or empty (must be a non-empty string)", **where, field=key)
        count = row["template"].count(PLACEHOLDER)
        if count != 1:
            raise DataError(f"must contain {PLACEHOLDER} exactly once, found it {count} time(s)", **where,
                            field="template")
        if row["id"] in seen:
            raise DataError(f"duplicate id '{row['id']}'", **where, field="id")
        seen[row["id"]] = line
        templates.append(JailbreakTemplate(id=row["id"], style=row["style"], template=row["template"]))
    if not templates:
        raise DataError("no jailbreak templates in the file", file=str(path))
    return templates
