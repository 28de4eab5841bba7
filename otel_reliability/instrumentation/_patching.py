"""Wrapping a method on a class and on every subclass that overrides it, with exactly one wrapper per call.

A method wrapped on a base class misses subclasses that define their own version (``SingletonThreadPool.connect``,
``psycopg2``'s ``do_executemany``), so those are wrapped too; when such an override calls ``super()``, only the
outermost wrapper may act, or the call would be measured twice: ``acts`` tells a wrapper whether it is that one.
"""

from __future__ import annotations

from collections.abc import Iterator

_definers: dict[tuple[type, str], type | None] = {}


def classes_defining(base: type, attr: str) -> Iterator[type]:
    """``base`` and its subclasses (imported so far) whose own ``__dict__`` defines ``attr``."""
    seen: set[type] = set()
    stack = [base]
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        if attr in cls.__dict__:
            yield cls
        stack.extend(cls.__subclasses__())


def definer(cls: type, attr: str) -> type | None:
    """The class whose ``attr`` an instance of ``cls`` calls (the first in its MRO that defines it); cached."""
    key = (cls, attr)
    try:
        return _definers[key]
    except KeyError:
        found = next((klass for klass in cls.__mro__ if attr in klass.__dict__), None)
        _definers[key] = found
        return found


def acts(owner: type, instance: object, attr: str) -> bool:
    """Whether the wrapper of ``attr`` placed on ``owner`` is the outermost one for a call on ``instance``."""
    return definer(type(instance), attr) is owner
