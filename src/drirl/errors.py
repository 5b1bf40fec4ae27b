"""Error types. Every error a user can cause names the file, line or field at fault."""

from __future__ import annotations


class DrirlError(Exception):
    """Base class of the errors drirl raises on bad input; the CLI prints them without a traceback."""

    exit_code = 1


# The ``file`` of a ConfigError whose value came from a flag rather than a file.
COMMAND_LINE = "command line"


class ConfigError(DrirlError):
    """A config file or flag is wrong: unknown key, wrong type, missing required field."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None):
        self.file, self.key = file, key
        self.message = message  # without the location, to re-raise it with a better one
        origin = (file if file.startswith(COMMAND_LINE) else f"file {file}") if file else ""
        where = ", ".join(p for p in (origin, f"key '{key}'" if key else "") if p)
        super().__init__(f"{where}: {message}" if where else message)


class DataError(DrirlError):
    """A data file is malformed: bad JSON, missing column, empty prompt, unknown category, duplicate id."""

    exit_code = 3

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None, field: str | None = None):
        self.file, self.line, self.field = file, line, field
        self.message = message  # without the location, e.g. to count skipped records by reason
        parts = []
        if file:
            parts.append(f"{file}:{line}" if line is not None else str(file))
        if field:
            parts.append(f"field '{field}'")
        super().__init__(f"{' '.join(parts)}: {message}" if parts else message)


class ModelError(DrirlError):
    """A model reference cannot be resolved or loaded safely."""

    exit_code = 4
