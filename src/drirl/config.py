"""Config dataclasses loaded from YAML and overridden by CLI flags, the way TRL's scripts parse theirs.

Every stage has one dataclass; each field carries ``metadata={"help": ...}`` and a default. A field whose metadata
says ``required`` must be given. Errors (unknown key, wrong type, missing field) raise :class:`ConfigError` naming
the key and the file; the CLI turns that into exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from drirl.errors import COMMAND_LINE, ConfigError

T = TypeVar("T")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{origin.__name__}[{args}]"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


# Float fields where +inf is a meaningful setting (it disables the outlier mask); everywhere else a NaN or an
# infinite number is a mistake (`learning_rate: .nan` would otherwise train on NaN weights) and is refused. A field
# can also opt in with ``metadata={"allow_inf": True}``.
INFINITY_ALLOWED = ("outlier_tau", "scaling_outlier_tau")


def _allows_inf(field: dataclasses.Field | None) -> bool:
    return field is not None and (field.name in INFINITY_ALLOWED or bool(field.metadata.get("allow_inf")))


class _NotFinite(TypeError):
    """A float that is NaN (or infinite where that is not allowed): the right type, a wrong value."""


def _finite(number: float, allow_inf: bool) -> float:
    if math.isnan(number) or (math.isinf(number) and not allow_inf):
        raise _NotFinite(f"expected a finite number, got {number!r}")
    return number


def _type_error(err: TypeError) -> str:
    return f"{'invalid value' if isinstance(err, _NotFinite) else 'wrong type'}: {err}"


def _coerce(value: Any, tp: Any, *, from_string: bool, allow_inf: bool = False) -> Any:
    """Return ``value`` as type ``tp`` or raise TypeError. Strings from the command line are parsed; YAML values
    must already have the right type (an int is accepted where a float is expected). NaN is never a valid float;
    ±inf only where ``allow_inf``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (from_string and isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, from_string=from_string, allow_inf=allow_inf)
            except TypeError as err:
                errors.append(err)
        if len(errors) == 1 and isinstance(errors[0], _NotFinite):
            raise errors[0]
        raise TypeError(f"expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed:
            return value
        raise TypeError(f"expected one of {', '.join(map(repr, allowed))}, got {value!r}")
    if origin in (list, tuple):
        (item_type, *_) = typing.get_args(tp) or (Any,)
        if from_string and isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v]
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"expected a list, got {value!r}")
        return [_coerce(v, item_type, from_string=from_string, allow_inf=allow_inf) for v in value]
    if origin is dict or tp is dict:
        if from_string and isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise TypeError(f"expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if from_string and isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise TypeError(f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_string and isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise TypeError(f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return _finite(float(value), allow_inf)
        if isinstance(value, str):
            try:  # YAML reads "1e-5" as a string; accept it for floats everywhere.
                number = float(value)
            except ValueError:
                pass
            else:
                return _finite(number, allow_inf)
        raise TypeError(f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeError(f"expected a string, got {value!r}")
    return value


def config_from_dict(cls: type[T], data: dict[str, Any], *, source: str | None = None,
                     from_string: bool = False) -> T:
    """Build ``cls`` from a mapping, checking every key and value. ``source`` names the file for errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of {cls.__name__} fields, got {type(data).__name__}", file=source)
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=3, cutoff=0.75) or \
                [name for name in fields if name.startswith(str(key)[:4])][:3]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"unknown key for {cls.__name__}{hint}", file=source, key=str(key))
        try:
            kwargs[key] = _coerce(value, hints[key], from_string=from_string, allow_inf=_allows_inf(fields[key]))
        except TypeError as err:
            raise ConfigError(_type_error(err), file=source, key=key) from None
    for name, field in fields.items():
        if field.metadata.get("required") and kwargs.get(name, getattr_default(field)) in (None, ""):
            raise ConfigError(f"missing required field ({field.metadata.get('help', '')})", file=source, key=name)
    try:
        return cls(**kwargs)
    except ConfigError as err:
        # A check in the dataclass itself (e.g. ScalingConfig.check_scaling) names its key; add the file.
        raise ConfigError(err.message, file=source, key=err.key) from None
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err), file=source) from None


def getattr_default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    return None


def read_yaml(path: str | Path, section: str | None = None) -> dict[str, Any]:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError("config file not found", file=str(path)) from None
    except IsADirectoryError:
        raise ConfigError("config path is a folder, expected a YAML file", file=str(path)) from None
    except OSError as err:
        raise ConfigError(f"cannot read the config file: {err.strerror or err}", file=str(path)) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ConfigError(f"config file is not valid UTF-8 (line {line}, byte {err.start}); save it as UTF-8",
                          file=str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"invalid YAML{where}: {getattr(err, 'problem', err)}", file=str(path)) from None
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping of keys to values", file=str(path))
    if section is not None:
        data = data.get(section) or {}
        if not isinstance(data, dict):
            raise ConfigError("must be a mapping", file=str(path), key=section)
    return data


def section_if_present(path: str | Path | None, name: str) -> str | None:
    """The section a stage's command reads from the YAML file at ``path``: ``name`` when the file is a pipeline file
    holding a ``name:`` mapping, else None (the whole file is that stage's config). Every command reads its config
    through this and :func:`load_config` / :func:`config_from_args`."""
    if not path:
        return None
    data = read_yaml(path)
    return name if isinstance(data.get(name), dict) else None


def load_config(cls: type[T], path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                *, section: str | None = None) -> T:
    """Load ``cls`` from a YAML file (optionally one ``section`` of it), then apply ``overrides``."""
    data: dict[str, Any] = read_yaml(path, section) if path else {}
    source = str(path) if path else None
    merged = {**data, **(overrides or {})}
    return config_from_dict(cls, merged, source=source or COMMAND_LINE)


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The layout of every `drirl` help page: examples kept as written, wide option column."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=110)


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per field with its help text; unset flags are absent from the namespace so YAML wins."""
    hints = _hints(cls)
    group = parser.add_argument_group(f"{cls.__name__} options (also settable in the YAML file)")
    for field in dataclasses.fields(cls):
        if not field.init or field.name in skip:
            continue
        default = getattr_default(field)
        help_text = field.metadata.get("help", "")
        help_text = f"{help_text} [{_type_name(hints[field.name])}; default: {default!r}]".replace("%", "%%")
        group.add_argument(f"--{field.name}", dest=f"cfg__{field.name}", default=argparse.SUPPRESS,
                           metavar=field.name.upper(), help=help_text)


def config_from_args(cls: type[T], args: argparse.Namespace, *, config_path: str | None = None,
                     section: str | None = None, extra: dict[str, Any] | None = None) -> T:
    overrides_raw = {k[len("cfg__"):]: v for k, v in vars(args).items() if k.startswith("cfg__")}
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    overrides: dict[str, Any] = {}
    for key, value in overrides_raw.items():
        try:
            overrides[key] = _coerce(value, hints[key], from_string=True, allow_inf=_allows_inf(fields.get(key)))
        except TypeError as err:
            raise ConfigError(_type_error(err), file=COMMAND_LINE, key=key) from None
    overrides.update(extra or {})
    return load_config(cls, config_path, overrides, section=section)


def help_field(help_text: str, **extra: Any) -> dict[str, Any]:
    """Metadata for a config field: ``field(default=..., metadata=help_field("..."))``."""
    return {"help": help_text, **extra}
