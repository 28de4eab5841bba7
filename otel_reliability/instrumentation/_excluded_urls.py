"""The excluded URLs of ``OTEL_PYTHON_*_EXCLUDED_URLS`` as the contrib middleware applies them, made cheap.

The contrib middleware searches the combined regex in scheme://host/path on every request (~5 µs here); the
lean layer first looks for the literal text every pattern requires (a few hundred ns), and for most requests
that is all that runs.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from typing import Any

from opentelemetry.util.http import ExcludeList, parse_excluded_urls

Scope = MutableMapping[str, Any]


def _url(scope: Scope) -> str:
    """The URL the contrib middleware matches excluded-URL regexes against: scheme://host + path."""
    host = None
    for name, value in scope.get("headers") or ():
        if name == b"host":
            host = value.decode("latin-1")
            break
    if host is None:
        address, port = scope.get("server") or ("0.0.0.0", 80)
        host = address if str(port) == "80" else f"{address}:{port}"
    return f"{scope.get('scheme', 'http')}://{host}{scope.get('path', '')}"


_METACHARACTERS = frozenset(".^$*+?{}[]()")


def required_literal(pattern: str) -> str:
    """Text that every match of ``pattern`` contains: its leading literal (``""`` when unsure).

    Conservative: an alternation outside any group, a leading metacharacter or an escape class gives ``""``; a
    literal followed by a quantifier that may repeat it zero times ends the prefix before it.
    """
    if _top_level_alternation(pattern):
        return ""
    literal: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            if i + 1 >= len(pattern) or pattern[i + 1].isalnum():
                break  # \d, \b, \1 ...: a class or an assertion, not a character
            char, i = pattern[i + 1], i + 2
        elif char in _METACHARACTERS:
            break
        else:
            i += 1
        if i < len(pattern) and pattern[i] in "*?{":
            break
        literal.append(char)
    return "".join(literal)


def _top_level_alternation(pattern: str) -> bool:
    depth, i, in_class = 0, 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            if pattern[i + 1 : i + 2] == "]":  # "[]...]": a leading ] is part of the class
                i += 1
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth <= 0:
            return True
        i += 1
    return False


class _Excluded:
    """``OTEL_PYTHON_*_EXCLUDED_URLS`` as the contrib middleware applies them (a regex search in
    scheme://host/path), with a cheap pre-check: the regex only runs when the URL contains the literal
    text one of the patterns requires. Searching the combined regex costs ~5 µs per request here; the
    pre-check a few hundred ns, and for most requests it is all that runs."""

    def __init__(self, patterns: list[str], regexes: ExcludeList) -> None:
        literals = [required_literal(p) for p in patterns]
        self._literals = tuple(literals) if all(literals) else None
        self._regexes = regexes

    def url_disabled(self, url: str) -> bool:
        if self._literals is None:
            return self._regexes.url_disabled(url)
        for literal in self._literals:  # a plain loop: any() over a generator costs twice as much here
            if literal in url:
                return self._regexes.url_disabled(url)
        return False


def excluded_urls() -> _Excluded | None:
    """The excluded URLs of the FastAPI instrumentation (its own variable, else the generic one)."""
    # Read exactly as opentelemetry.util.http.get_excluded_urls("FASTAPI") reads them.
    raw = os.environ.get("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", os.environ.get("OTEL_PYTHON_EXCLUDED_URLS", ""))
    if not raw:
        return None
    return _Excluded([p.strip() for p in raw.split(",")], parse_excluded_urls(raw))
