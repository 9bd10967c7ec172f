"""Typed settings sections, checked in one place.

A section is a dataclass; each field may carry a ``check`` in its metadata (``field(metadata=check(...))``):
a function ``value -> value`` (converted, e.g. ``"3e-4"`` -> ``0.0003``) that raises :class:`Invalid` with what the
value must be. :func:`build_section` turns a mapping (YAML, JSON) into the dataclass: unknown keys are refused naming
the key and the section, with a "did you mean" hint; every given value goes through its field's check; absent keys
take the field's default, defined once on the dataclass. Used by :class:`~usam.adapters.lora.LoraSettings`, the
adapter's ``config.json`` and the training config (:mod:`usam.train.config`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import MISSING, fields
from difflib import get_close_matches
from typing import Callable

from ..errors import ConfigError, short_repr


class Invalid(ValueError):
    """What a value must be, phrased to follow its key: ``"must be a positive integer"``."""


def check(fn: Callable) -> dict:
    """Field metadata that makes :func:`build_section` pass the value through ``fn``."""
    return {"check": fn}


def unknown_keys(given, known, section: str) -> str | None:
    """The error text for keys of ``given`` that are not in ``known`` (``None`` when all are known)."""
    unknown = [k for k in given if k not in known]
    if not unknown:
        return None
    where = f"in {section}" if section else "at the top level"
    near = get_close_matches(str(unknown[0]), [str(k) for k in known], n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return f"unknown keys {sorted(map(str, unknown))} {where}{hint}; known: {', '.join(sorted(known))}"


def build_section(cls, raw, section: str):
    """``cls(**raw)``, checked: ``raw`` a mapping (``None``: all defaults), no unknown key, each value through its
    field's check. Raises :class:`ConfigError` naming ``section.key``."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{section or 'the config'} must be a mapping, got {short_repr(raw)}")
    known = [f.name for f in fields(cls) if f.init]
    problem = unknown_keys(raw, known, section)
    if problem:
        raise ConfigError(problem)
    values = {}
    for f in fields(cls):
        if f.name not in raw:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ConfigError(f"{section + ': ' if section else ''}missing required key {f.name!r}")
            continue
        fn = f.metadata.get("check")
        try:
            values[f.name] = fn(raw[f.name]) if fn else raw[f.name]
        except Invalid as exc:
            key = f"{section}.{f.name}" if section else f.name
            raise ConfigError(f"{key} {exc}, got {short_repr(raw[f.name])}") from None
    return cls(**values)


# ------------------------------------------------------------------------------------------- value checks
def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def positive_int(v):
    if not is_int(v) or v < 1:
        raise Invalid("must be a positive integer")
    return v


def non_negative_int(v):
    if not is_int(v) or v < 0:
        raise Invalid("must be a non-negative integer")
    return v


def integer(v):
    if not is_int(v):
        raise Invalid("must be an integer")
    return v


def optional(fn: Callable, what: str = "or null") -> Callable:
    """``fn`` for a value that may also be ``None`` (the message says ``... or null``)."""

    def run(v):
        if v is None:
            return None
        try:
            return fn(v)
        except Invalid as exc:
            raise Invalid(f"{exc} {what}".rstrip()) from None

    return run


def number(lo: float = 0.0, hi: float | None = None, above: bool = False) -> Callable:
    """A finite number (YAML's ``3.0e-4`` and ``"3e-4"`` alike) in ``[lo, hi]`` (``(lo, ...`` with ``above``)."""
    rng = (f"in [{lo}, {hi}]" if hi is not None else f"> {lo:g}" if above else f">= {lo:g}")

    def run(v):
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise Invalid("must be a number")
        try:
            x = float(v)
        except ValueError:
            raise Invalid("must be a number") from None
        if not math.isfinite(x) or x < lo or (above and x == lo) or (hi is not None and x > hi):
            raise Invalid(f"must be a finite number {rng}")
        return x

    return run


def boolean(v):
    if not isinstance(v, bool):
        raise Invalid("must be true or false")
    return v


def one_of(*options: str) -> Callable:
    text = ", ".join(map(repr, options[:-1])) + f" or {options[-1]!r}"

    def run(v):
        if v not in options:
            raise Invalid(f"must be {text}")
        return v

    return run


def text(v):
    if not isinstance(v, str) or not v:
        raise Invalid("must be a non-empty string")
    return v


def name_list(v):
    if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
        raise Invalid("must be a non-empty list of names")
    return list(v)


class SectionView(Mapping):
    """Read-only ``section["key"]`` / ``.get`` / ``.items()`` over a settings dataclass's fields, for code and
    records that treat a section as the mapping it was written as (a resume hash, ``config.json``'s training
    record: ``dict(section)``)."""

    def __getitem__(self, key: str):
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def _names(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self))
