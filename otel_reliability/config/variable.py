"""The model of one ``OTEL_RELIABILITY_*`` variable (``Variable``: name, default, parser, allowed form) and the
parsers the declarations in ``otel_reliability.config.variables`` share. Only the standard library."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A variable has a value we cannot use. ``str()`` is the one-line start-up message."""

    def __init__(self, variable: str, value: str, allowed: str) -> None:
        self.variable = variable
        self.value = value
        self.allowed = allowed
        super().__init__(f"otel-reliability: {variable}={value!r} is invalid: expected {allowed}")


@dataclass(frozen=True)
class Variable(Generic[T]):
    """One environment variable: its name, default, parser and the allowed form a bad value is told (what it
    means is the docstring below its declaration in ``variables.py``, and the README's table)."""

    name: str
    default: str
    parse: Callable[[str], T]
    allowed: str
    secret: bool = False
    deprecated: str | None = None  # set: why it is ignored; a start-up WARNING says so when the variable is set


def _number(minimum: float, maximum: float | None = None) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = float(raw)
        if value != value or value < minimum or (maximum is not None and value > maximum):
            raise ValueError(raw)
        return value

    return parse


def _integer(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw)
        if value < minimum:
            raise ValueError(raw)
        return value

    return parse


def _boolean(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(raw)


_PATH = re.compile(r"^/[A-Za-z0-9_\-./]*[A-Za-z0-9_\-]$")


def _path(raw: str) -> str:
    if not _PATH.match(raw) or "//" in raw:
        raise ValueError(raw)
    return raw


def _directory(raw: str) -> str | None:
    if raw == "":
        return None
    if not os.path.isabs(raw) or "\0" in raw:
        raise ValueError(raw)
    return raw


def _token(raw: str) -> str | None:
    if raw == "":
        return None
    if len(raw) < 8 or any(c.isspace() for c in raw):
        raise ValueError(raw)
    return raw


_NAME = re.compile(r"^[A-Za-z0-9_.\-:]+$")


def _names(raw: str) -> frozenset[str]:
    names = [n.strip() for n in raw.split(",") if n.strip()]
    if any(not _NAME.match(n) for n in names):
        raise ValueError(raw)
    return frozenset(names)
