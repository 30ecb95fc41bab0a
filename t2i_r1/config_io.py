"""Dataclass configs from YAML files and ``key.sub=value`` command-line overrides, validated on load.

One mechanism for every config of the project: a dataclass tree is the schema (field docstrings are
the help), YAML supplies values, overrides win, and ``__post_init__`` of each dataclass validates.
Unknown keys, values of the wrong type and numbers that are not finite (``.nan``, ``.inf``) raise
``ConfigError`` naming the field, and the file or the command-line override that set it.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

C = TypeVar("C")


class ConfigError(ValueError):
    def __init__(self, message: str, field: str = ""):
        super().__init__(message)
        self.field = field  # dotted name of the offending field ("" when unknown)


def check_finite(config, prefix: str = "") -> None:
    """Raise ``ConfigError`` naming the first float field of dataclass ``config`` that is NaN or infinite
    (for configs built in code or from command-line flags, which do not pass through ``_coerce``)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            name = f"{prefix}{f.name}"
            raise ConfigError(f"{name} must be a finite number, got {value}", name)


def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp, where: str):
    """Check / convert ``value`` to the annotated type ``tp``; ``where`` names the field for errors."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {tp}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(get_args(tp))}", where)
        return value
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of fields, got {value!r}", where)
        return build(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}", where)
        (item,) = get_args(tp)[:1] or (Any,)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}", where)
        _, item = get_args(tp) or (Any, Any)
        return {k: _coerce(v, item, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}", where)
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads 1e-6 as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{where}: expected a number, got {value!r}", where)
        if not math.isfinite(number):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}", where)
        return number
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}", where)
    if tp is str:
        if isinstance(value, (str, Path)):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}", where)
    return value


def build(cls: type[C], values: dict[str, Any], where: str = "") -> C:
    """Instantiate dataclass ``cls`` from a (nested) mapping, checking names and types."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - names)
    prefix = f"{where}." if where else ""
    if unknown:
        raise ConfigError(f"unknown field {prefix}{unknown[0]} (known fields of {cls.__name__}: {', '.join(sorted(names))})",
                          f"{prefix}{unknown[0]}")
    kwargs = {k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in values.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{where or cls.__name__}: {err}", where) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"grpo.beta=0.02"`` -> (["grpo", "beta"], 0.02); the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not of the form key.sub=value")
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else ""


def _set(tree: dict, path: list[str], value) -> None:
    for part in path[:-1]:
        node = tree.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {'.'.join(path)}: {part} is not a section")
        tree = node
    tree[path[-1]] = value


def _merge(base: dict, top: dict) -> dict:
    """Deep merge: mappings merge key by key, anything else in ``top`` replaces ``base``."""
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_yaml_tree(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A YAML config as a mapping; ``base: other.yaml`` (relative to the file) is read first and merged under it."""
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'base' files include each other")
    try:
        tree = yaml.safe_load(path.read_bytes().decode("utf-8-sig")) or {}
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text; save the file as UTF-8") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    base = tree.pop("base", None)
    if base is None:
        return tree
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must be a path to another YAML config")
    return _merge(read_yaml_tree(path.parent / base, (*seen, path.resolve())), tree)


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] | None = None) -> C:
    """Read ``path`` (YAML, optionally with ``base: parent.yaml``) into ``cls``, apply ``overrides``, validate.

    Errors name the field, and the override that set it (or the file when no override touched it).
    """
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        tree = read_yaml_tree(path)
    given: dict[str, str] = {}  # dotted key -> the override text that set it
    for text in overrides or []:
        key, value = parse_override(text)
        _set(tree, key, value)
        given[".".join(key)] = text
    try:
        return build(cls, tree)
    except ConfigError as err:
        # the override that set this field, or one inside the section whose validation failed (the top
        # level's own validation names its fields in the message)
        blamed = [t for k, t in given.items()
                  if ((k == err.field or k.startswith(err.field + ".")) if err.field else k in str(err))]
        if blamed:
            raise ConfigError(f"command-line override {blamed[-1]!r}: {err}", err.field) from None
        raise ConfigError(f"{path}: {err}" if path else str(err), err.field) from None


def to_dict(config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def dump_yaml(config) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)
