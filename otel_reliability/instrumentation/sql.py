"""SQL text for telemetry: literals replaced by ``?``, and the operation and first table named.

Why our own and not a parser: this runs on every distinct statement an app sends (cached per text, see
``describe``), must never raise, and needs only what the stable database conventions ask for:

- ``db.query.text`` without the values written into it: a number or a string in the SQL text may be an e-mail,
  a token or a customer id (``select 4242`` -> ``select ?``). Bind placeholders (``?``, ``%(name)s``, ``:name``,
  ``$1``) stay as they are; comments are dropped (they break quote pairing and, written by sqlcommenter-like
  tools, carry per-request ids).
- ``db.operation.name``: the statement's keyword (``SELECT``), from a fixed list, so the metric label stays
  bounded; ``BATCH INSERT`` for an ``executemany``. After ``WITH`` the main statement's keyword is used.
- ``db.collection.name``: the first table the statement reads or writes (``FROM``/``INTO``/``UPDATE``/``TABLE``),
  as written (schema prefix kept), without identifier quotes.

Identifier quoting: double quotes (standard SQL, PostgreSQL, SQLite), backticks and brackets are identifiers and
stay; under MySQL/MariaDB double quotes delimit strings and are replaced. ``E'...'`` strings (and all strings
under MySQL) honour backslash escapes; PostgreSQL dollar-quoted bodies are replaced whole. A literal or comment
left open (a truncated or malformed statement) is replaced up to the end of the text, never kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The keywords db.operation.name may take: a fixed list keeps the metric label bounded.
OPERATIONS = frozenset({
    "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "REPLACE", "CREATE", "ALTER", "DROP", "TRUNCATE",
    "BEGIN", "START", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "SET", "SHOW", "EXPLAIN", "CALL", "EXEC",
    "EXECUTE", "PRAGMA", "VACUUM", "ANALYZE", "COPY", "LOCK", "GRANT", "REVOKE", "LISTEN", "NOTIFY", "DECLARE",
    "FETCH", "CLOSE", "PREPARE", "DEALLOCATE", "DO", "VALUES", "WITH", "COMMENT", "REINDEX", "CLUSTER", "REFRESH",
})  # fmt: skip
_MAIN = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE"})
MAX_TEXT = 16_384
_SKIP_AFTER_TABLE = frozenset({"IF", "NOT", "EXISTS", "ONLY", "TEMPORARY", "TEMP", "UNLOGGED"})
_SKIP_AFTER_UPDATE = frozenset({"ONLY", "LOW_PRIORITY", "IGNORE", "OR", "ROLLBACK", "ABORT", "REPLACE", "FAIL"})

_COMMON = (
    r"(?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z0-9_]*|)\$.*?(?:\$(?P=tag)\$|\Z))"
    r"|(?P<estring>(?<![\w$])[eE]'(?:[^'\\]|''|\\.)*(?:'|\Z))"
)
_NUMBER = r"|(?P<number>(?<![\w$:.])(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?![\w$]))"
# Standard SQL: backslash is an ordinary character in '...'; "..." is an identifier.
_STANDARD = re.compile(
    r"(?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))|"
    + _COMMON
    + r"|(?P<string>(?:(?<![\w$])[nNbBxXuU]&?)?'(?:[^']|'')*(?:'|\Z))"
    + r"|(?P<ident>\"(?:[^\"]|\"\")*\"|`[^`]*`|\[[^\]]*\])"
    + _NUMBER,
    re.S,
)
# MySQL/MariaDB: '#' comments, backslash escapes in strings, and "..." is a string unless ANSI_QUOTES is on.
_MYSQL = re.compile(
    r"(?P<comment>--[^\n]*|#[^\n]*|/\*.*?(?:\*/|\Z))|"
    + _COMMON
    + r"|(?P<string>(?:(?<![\w$])(?:_\w+|[nNbBxX]))?'(?:[^'\\]|''|\\.)*(?:'|\Z)|\"(?:[^\"\\]|\"\"|\\.)*(?:\"|\Z))"
    + r"|(?P<ident>`[^`]*`|\[[^\]]*\])"
    + _NUMBER,
    re.S,
)
_WORD = re.compile(r"\"(?:[^\"]|\"\")*\"|`[^`]*`|\[[^\]]*\]|[A-Za-z_][\w$]*|[().,;]")


def _replace(match: re.Match[str]) -> str:
    kind = match.lastgroup
    if kind == "comment":
        return " "
    if kind == "ident":
        return match.group(0)
    return "?"


def sanitize(statement: str, *, mysql: bool = False) -> str:
    """``statement`` with every string and numeric literal replaced by ``?`` and comments removed."""
    return (_MYSQL if mysql else _STANDARD).sub(_replace, statement).strip()


@dataclass(frozen=True)
class Statement:
    """What telemetry may say about one SQL text: the sanitized text, the operation, the first table."""

    query_text: str
    operation: str | None
    collection: str | None


def _unquote(name: str) -> str:
    if len(name) >= 2 and name[0] + name[-1] in ('""', "``", "[]"):
        return name[1:-1].replace('""', '"')
    return name


def _name_at(words: list[str], i: int) -> str | None:
    """The (possibly schema-qualified) identifier starting at ``words[i]``, or None (a subquery, nothing)."""
    if i >= len(words) or words[i] in "().,;" or words[i] == "?":
        return None
    parts = [_unquote(words[i])]
    while i + 2 < len(words) and words[i + 1] == "." and words[i + 2] not in "().,;":
        parts.append(_unquote(words[i + 2]))
        i += 2
    return ".".join(parts)


def _after(words: list[str], start: int, keyword: str, depth0: int) -> str | None:
    """The identifier after the first ``keyword`` at paren depth ``depth0`` from ``start``."""
    depth = depth0
    for i in range(start, len(words)):
        word = words[i]
        if word == "(":
            depth += 1
        elif word == ")":
            depth -= 1
        elif depth == depth0 and word.upper() == keyword:
            return _name_at(words, i + 1)
    return None


def describe(statement: str, *, mysql: bool = False) -> Statement:
    """Sanitized text, operation and first table of ``statement``; never raises on odd SQL.

    Only the first ``MAX_TEXT`` characters are read (a statement with a megabyte of inlined values would
    otherwise cost a quarter of a second); the text then ends in ``...``.
    """
    text = sanitize(statement[:MAX_TEXT], mysql=mysql)
    if len(statement) > MAX_TEXT:
        text += " ..."
    words = _WORD.findall(text)
    if not words:
        return Statement(text, None, None)
    first = words[0].upper()
    if first not in OPERATIONS:
        return Statement(text, None, None)
    index, operation = 0, first
    if first == "WITH":
        depth = 0
        for i, word in enumerate(words[1:], 1):
            if word == "(":
                depth += 1
            elif word == ")":
                depth -= 1
            elif depth == 0 and word.upper() in _MAIN:
                index, operation = i, word.upper()
                break
    collection: str | None = None
    if operation in ("SELECT", "DELETE"):
        collection = _after(words, index + 1, "FROM", 0)
    elif operation in ("INSERT", "REPLACE", "MERGE", "UPSERT"):
        collection = _after(words, index + 1, "INTO", 0)
    elif operation == "UPDATE":
        i = index + 1
        while i < len(words) and words[i].upper() in _SKIP_AFTER_UPDATE:
            i += 1
        collection = _name_at(words, i)
    elif operation in ("CREATE", "ALTER", "DROP", "TRUNCATE"):
        i = index + 1
        while i < len(words) and words[i].upper() not in ("TABLE", "VIEW") and operation != "TRUNCATE":
            if words[i] in "().,;":
                break
            i += 1
        if i < len(words) and words[i].upper() in ("TABLE", "VIEW"):
            i += 1
        while i < len(words) and words[i].upper() in _SKIP_AFTER_TABLE:
            i += 1
        collection = _name_at(words, i) if operation == "TRUNCATE" or i > index + 1 else None
    return Statement(text, operation, collection)
