"""The excluded URLs of ``OTEL_PYTHON_*_EXCLUDED_URLS`` as the contrib middleware applies them, made cheap.

Why not contrib's helpers alone: on every request the contrib middleware builds scheme://host/path with
``opentelemetry.instrumentation.asgi.get_host_port_url_tuple`` (~2-3 µs here) and searches the combined regex of
``opentelemetry.util.http.get_excluded_urls`` in it (~1.5-4 µs); for the lean layer, whose whole request costs a
few µs, that would be the largest part. So the URL is built by ``_url`` (~0.4 µs, no header decoding beyond the
host) and the regex runs only when the URL contains the literal text one of the patterns requires (a few hundred
ns), which for most requests is all that runs. The regexes themselves are contrib's (``get_excluded_urls``), and
tests/test_excluded_urls.py checks both shortcuts against contrib's helpers for the same inputs (measured at load
average ~5 on 2 cores: contrib's pair 4-7 µs, ours 0.6-1 µs).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from typing import Any

from opentelemetry.util.http import ExcludeList, get_excluded_urls

Scope = MutableMapping[str, Any]


def _url(scope: Scope) -> str:
    """The URL the contrib middleware matches excluded-URL regexes against (``get_host_port_url_tuple``'s third
    element): scheme://host + path, the host from the Host header, else the ASGI server."""
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
    """The excluded URLs of the FastAPI instrumentation, as contrib's ``get_excluded_urls("FASTAPI")`` gives them
    (its own variable, else the generic one), with the pre-check in front; None when there are none."""
    regexes = get_excluded_urls("FASTAPI")
    # The same text contrib just parsed, for the pre-check's literals (its ExcludeList keeps the patterns private).
    raw = os.environ.get("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS", os.environ.get("OTEL_PYTHON_EXCLUDED_URLS", ""))
    if not raw:
        return None
    return _Excluded([p.strip() for p in raw.split(",")], regexes)
