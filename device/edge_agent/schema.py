"""Checking a parsed YAML mapping against annotated dataclasses: the agent config's walker.

Why not pydantic: it is not on board images by default, pulls a compiled core, and the
config needs only four things it does — types, choices, ranges, unknown keys rejected with
the key path in the message — which fit in this file. Fields carry their documentation and
limits in ``field_doc`` metadata (``doc``, ``choices``, ``min``, ``max``, ``path``, ``pin``);
every error names the key path (``config: camera.type: must be one of …``). ``StrictLoader``
is PyYAML's safe loader refusing a key given twice.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any

import yaml

from edge_agent.pins import gpio_number
from edge_common.errors import ConfigError


def field_doc(default: Any, doc: str, **meta: Any) -> Any:
    """A dataclass field with its documentation and validation metadata."""
    meta["doc"] = doc
    return field(default=default, metadata=meta)


def type_name(tp: Any) -> str:
    if typing.get_origin(tp) is list:
        return "list of " + type_name(typing.get_args(tp)[0])
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    return {
        int: "integer",
        float: "number",
        str: "string",
        bool: "boolean",
        type(None): "null",
    }.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted as floats."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                if "finite" in str(err):
                    raise
                continue
        raise ConfigError(f"config: {key}: must be {type_name(tp)}, got {value!r}")
    if typing.get_origin(tp) is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        raise ConfigError(f"config: {key}: must be a list, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            # NaN compares false with every bound (a NaN threshold disabled every reject),
            # so non-finite numbers are refused here, before any range check.
            if not math.isfinite(value):
                raise ConfigError(f"config: {key}: must be a finite number, got {value!r}")
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"config: {key}: must be {type_name(tp)}, got {value!r}")


def _key(key: Any) -> str:
    """A key as the error line shows it: plain when printable, else quoted (a key holding
    a line break must not break the one-line error; found by tests/test_fuzz.py)."""
    return key if isinstance(key, str) and key.isprintable() and key.strip() else repr(key)


def build(cls: type, data: Any, prefix: str, base: Path | None) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        where = prefix.rstrip(".") or "top level"
        raise ConfigError(f"config: {where}: must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    unknown = [k for k in data if k not in fields]
    if unknown:
        known = ", ".join(fields)
        raise ConfigError(f"config: {prefix}{_key(unknown[0])}: unknown key (known: {known})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = prefix + name
        tp = hints[name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            sub = data.get(name)
            if isinstance(sub, str) and "type" in {f.name for f in dataclasses.fields(tp)}:
                sub = {"type": sub}  # shorthand: `trigger: modbus`
            kwargs[name] = build(tp, sub, key + ".", base)
            continue
        if name not in data:
            continue
        value = _coerce(data[name], tp, key)
        meta = f.metadata
        if isinstance(value, list):
            for i, v in enumerate(value):
                if "choices" in meta and v not in meta["choices"]:
                    raise ConfigError(
                        f"config: {key}[{i}]: must be one of {', '.join(meta['choices'])}"
                    )
                if v in value[:i]:
                    raise ConfigError(f"config: {key}[{i}]: {v} is listed twice")
        elif value is not None:
            if "choices" in meta and value not in meta["choices"]:
                raise ConfigError(f"config: {key}: must be one of {', '.join(meta['choices'])}")
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            if numeric and "min" in meta and value < meta["min"]:
                raise ConfigError(f"config: {key}: must be ≥ {meta['min']}, got {value}")
            if numeric and "max" in meta and value > meta["max"]:
                raise ConfigError(f"config: {key}: must be ≤ {meta['max']}, got {value}")
            if meta.get("pin"):
                gpio_number(value, key)
        kwargs[name] = value
    obj = cls(**kwargs)
    if base is not None:
        for name, f in fields.items():
            val = getattr(obj, name)
            if f.metadata.get("path") and isinstance(val, str):
                setattr(obj, name, str((base / os.path.expanduser(val)).resolve()))
    return obj


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the
    last silently: a second ``actuator:`` section would switch the rejector off)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    dup = key in seen
                except TypeError:  # an unhashable key: PyYAML refuses it below
                    continue
                if dup:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)
