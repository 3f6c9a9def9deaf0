"""Typed, validated dataclass configs and `--set key=value` overrides.

Every config is a dataclass whose fields carry a one-line docstring (the string literal right
after the field, as in torchtitan). `validate()` raises `ValueError("<field>: got <x>, expected
<range>")` for a user's mistake. `Registry` holds every kind of named thing (generators,
presets, sweeps, target sets). Nothing here imports numpy, Ray or torch.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import math
import sys
import textwrap
import types
import typing
from collections.abc import Callable
from typing import Any


class Config:
    """Mixin for config dataclasses: validation helpers, field docs, dict round trip."""

    RENAMED: typing.ClassVar[dict[str, str]] = {}
    """Old field name -> its new name: old run folders still load, and `--set` of an old path still
    works, with a one-line deprecation message."""

    def validate(self) -> None:
        """Check every field; subclasses extend this and call `super().validate()`.

        Here, for every config: a number is finite (NaN passes every range check, since a comparison
        with NaN is false, so no field may be left to its own range check for that), and each
        nested config validates, named by its section.
        """
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name}: got {value!r}, expected a finite number")
            if isinstance(value, Config):
                try:
                    value.validate()
                except ValueError as err:  # name the section: "pretrain.lr: got ..."
                    raise ValueError(f"{f.name}.{err}") from None

    # -- validation helpers -------------------------------------------------------------------
    def _check_range(self, name: str, lo: float | None = None, hi: float | None = None) -> None:
        value = getattr(self, name)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            lo_s = "-inf" if lo is None else lo
            hi_s = "inf" if hi is None else hi
            raise ValueError(f"{name}: got {value!r}, expected a value in [{lo_s}, {hi_s}]")

    def _check_choice(self, name: str, choices: typing.Iterable[Any]) -> None:
        value = getattr(self, name)
        choices = list(choices)
        if value not in choices:
            raise ValueError(f"{name}: got {value!r}, expected one of {choices}")

    def _check_resource_name(self, name: str) -> None:
        """A custom Ray resource name (letters, digits, '_' or '-'), or empty."""
        value = getattr(self, name)
        if value and not value.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"{name}: got {value!r}, expected a Ray resource name "
                             "(letters, digits, '_' or '-')")

    def _check_order(self, low: str, high: str) -> None:
        lo, hi = getattr(self, low), getattr(self, high)
        if lo > hi:
            raise ValueError(f"{low}: got {lo!r}, expected a value <= {high} ({hi!r})")

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Build from a dict (e.g. a manifest); unknown keys are an error."""
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}
        data = {cls.RENAMED.get(k, k) if k not in known else k: v for k, v in data.items()}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"{unknown[0]}: unknown field of {cls.__name__}, expected one of {sorted(known)}")
        kwargs = {}
        for name, value in data.items():
            sub = hints[name]
            if isinstance(sub, type) and issubclass(sub, Config):
                if isinstance(value, dict):
                    try:
                        value = sub.from_dict(value)
                    except ValueError as err:  # name the section: "pretrain.lr: ..."
                        raise ValueError(f"{name}.{err}") from None
                elif not isinstance(value, Config):
                    raise ValueError(f"{name}: got {type(value).__name__}, expected an object of fields")
            elif not _has_type(value, sub):
                raise ValueError(f"{name}: got {value!r} ({type(value).__name__}), expected {sub}")
            kwargs[name] = value
        return cls(**kwargs)


def _has_type(value: Any, kind: Any) -> bool:
    """Whether a JSON-loaded `value` fits the field type `kind` (a bool is no number; an int is a float)."""
    if kind is Any or isinstance(kind, typing.TypeVar):
        return True
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    origin = typing.get_origin(kind)
    if origin is typing.Literal:
        return value in typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, k) for k in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, dict)
    return True  # a type this check does not know: left to validate()


def with_defaults(**values: Any) -> Callable[[type], type]:
    """Class decorator, under `@dataclasses.dataclass`, for a config composed of sections: the
    sections' fields named here get these defaults in this config. The field, its type and its doc
    stay declared once, in its section; the config only says where its defaults differ:

        @dataclasses.dataclass
        @with_defaults(lr=0.01, epochs=100)
        class FinetuneConfig(ScheduleSection, ...): ...
    """
    def wrap(cls: type) -> type:
        own = cls.__dict__.get("__annotations__", {})
        hints: dict[str, Any] = {}
        for base in cls.__mro__[1:]:
            if dataclasses.is_dataclass(base):
                for name, kind in typing.get_type_hints(base).items():
                    hints.setdefault(name, kind)
        for name, value in values.items():
            if name in own:
                raise TypeError(f"{cls.__name__}.{name}: declared in the class and in with_defaults")
            if name not in hints:
                raise TypeError(f"{cls.__name__}: with_defaults({name}=...) names no field of its sections")
            own[name] = hints[name]  # the resolved type: the section's declaration, not a new one
            setattr(cls, name, value)
        cls.__annotations__ = own
        cls.__config_defaults__ = dict(values)
        return cls

    return wrap


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each dataclass field of `cls` (and its bases)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body
        for node, nxt in zip(body, body[1:], strict=False):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _parse_value(key: str, text: str, kind: Any) -> Any:
    """Convert the text of `--set key=text` to the field's type, or raise ValueError."""
    if kind is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{key}: got {text!r}, expected a boolean (true/false)")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{key}: got {text!r}, expected an integer") from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{key}: got {text!r}, expected a number") from None
    if kind is str:
        return text
    origin = typing.get_origin(kind)
    if origin is typing.Literal:
        choices = typing.get_args(kind)
        if text not in choices:
            raise ValueError(f"{key}: got {text!r}, expected one of {list(choices)}")
        return text
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if text.lower() in ("none", "null") and len(args) < len(typing.get_args(kind)):
            return None
        return _parse_value(key, text, args[0])
    raise ValueError(f"{key}: cannot be set from the command line (type {kind})")


def leaf_paths(cfg: Config, prefix: str = "") -> dict[str, tuple[Config, str]]:
    """Map every dotted field path of a nested config to (owning config, field name)."""
    out: dict[str, tuple[Config, str]] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        path = prefix + f.name
        if isinstance(value, Config):
            out.update(leaf_paths(value, path + "."))
        else:
            out[path] = (cfg, f.name)
    return out


def renamed_paths(cfg: Config, prefix: str = "") -> dict[str, str]:
    """Map every old dotted path of a nested config (its classes' `RENAMED`) to the new one."""
    out = {prefix + old: prefix + new for old, new in type(cfg).RENAMED.items()}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, Config):
            out.update(renamed_paths(value, f"{prefix}{f.name}."))
    return out


def apply_overrides(cfg: Config, overrides: typing.Iterable[str]) -> Config:
    """Apply `key=value` strings to a (nested) config in place, with type checking.

    A key is a dotted path (`data.num_classes`) or a bare field name that is unique in the
    config (`num_classes`). The result is validated.
    """
    paths, renamed = leaf_paths(cfg), renamed_paths(cfg)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set: got {item!r}, expected key=value")
        key, text = (s.strip() for s in item.split("=", 1))
        old = key if key in renamed else None
        if key not in paths and old is None:  # a bare old name, e.g. `lr` for `ssl.lr`
            bare = [p for p in renamed if p.rsplit(".", 1)[-1] == key]
            old = bare[0] if len(bare) == 1 and not any(p.rsplit(".", 1)[-1] == key for p in paths) else None
        if old is not None:
            key = renamed[old]
            print(f"fdsl: --set {old} is deprecated, it is now {key} (same meaning); "
                  f"use --set {key}={text}", file=sys.stderr)
        if key in paths:
            owner, name = paths[key]
        else:
            matches = [p for p in paths if p.rsplit(".", 1)[-1] == key]
            if len(matches) != 1:
                hint = f"one of {sorted(paths)}" if not matches else f"a full path: {matches}"
                raise ValueError(f"{key}: unknown or ambiguous config field, expected {hint}")
            owner, name = paths[matches[0]]
        kind = typing.get_type_hints(type(owner))[name]
        setattr(owner, name, _parse_value(key, text, kind))
    cfg.validate()
    return cfg


class Registry:
    """Names -> objects (generators, presets, sweeps, target loaders), registered once each.

        PRESETS = Registry("preset", "see `fdsl presets`")

        @PRESETS.register("debug-vit")
        def debug_vit(): ...

        PRESETS.get("debug-vit")   # the function; an unknown name is a ValueError listing the names
    """

    def __init__(self, kind: str, hint: str = ""):
        self.kind = kind
        """What the names name: the field a message names ("preset", "sweep", "dataset", ...)."""
        self.hint = hint
        """Said after the names in a message (e.g. "see `fdsl presets`")."""
        self._items: dict[str, Any] = {}

    def register(self, name: str) -> Callable[[Any], Any]:
        """Decorator: register the decorated object under `name` (each name once)."""
        def add(obj):
            self.add(name, obj)
            return obj
        return add

    def add(self, name: str, obj: Any) -> None:
        if name in self._items:
            raise AssertionError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = obj

    def get(self, name: str, shown: str | None = None) -> Any:
        """The object of `name`, or ValueError listing the registered names (`shown`: what the user
        typed, when `name` was taken from it)."""
        if name not in self._items:
            hint = f" ({self.hint})" if self.hint else ""
            raise ValueError(f"{self.kind}: got {shown or name!r}, expected one of {self.names()}{hint}")
        return self._items[name]

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
