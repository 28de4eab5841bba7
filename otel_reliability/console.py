"""What otel-reliability prints on stderr itself: the start-up line, and its own log lines where nothing else
would show them, all in one format::

    otel-reliability[4242] INFO: 0.1.0 started: service.name=shop.main; HTTP layer lean (auto: ...); ...
    otel-reliability[4242] WARNING: metrics endpoint localhost:9464 not started (Address already in use); ...

Why: our loggers have no handler of their own, so under uvicorn (which configures only its ``uvicorn.*``
loggers) an INFO line is dropped and a WARNING comes out of Python's last-resort handler as a bare message,
with nothing saying which program or process wrote it. Where the application configured handlers of its own
(on the root logger, say), those print our lines in the application's format and this one stays quiet: no line
twice. The start-up line is not a log record: it is written to stderr whatever the logging set-up
(``OTEL_RELIABILITY_STARTUP_LINE=false`` silences it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys

ROOT_LOGGER = "otel_reliability"
_PREFIX = "otel-reliability: "
_USERINFO = re.compile(r"//[^/@\s]*@")
_QUERY = re.compile(r"\?[^\s]*")


def mask_url(url: str) -> str:
    """A URL as it may be printed: never the user:password in it, nor its query string (tokens live there)."""
    return _QUERY.sub("?***", _USERINFO.sub("//***@", url))


def line(level: str, message: str) -> str:
    """One line in our format (the message's own ``otel-reliability:`` prefix is not repeated)."""
    return f"otel-reliability[{os.getpid()}] {level}: {message.removeprefix(_PREFIX)}"


class Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = line(record.levelname, record.getMessage())
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def write(level: str, message: str) -> None:
    """Write one line on stderr now (never raises: a closed stderr must not stop the app)."""
    with contextlib.suppress(Exception):
        sys.stderr.write(line(level, message) + "\n")
        sys.stderr.flush()


def _is_otel_handler(handler: logging.Handler) -> bool:
    return type(handler).__module__.startswith("opentelemetry.")


class ConsoleFallback(logging.Handler):
    """Prints our lines on stderr when nothing else would show them on a console.

    Why, beyond the module docstring: with ``OTEL_LOGS_EXPORTER=otlp`` the SDK puts its LoggingHandler on the
    root logger; from then on Python's last-resort stderr handler stays silent, and a line saying "the collector
    is unreachable" would go only to that collector. Where the application configured its own handlers, they
    print it and this one stays quiet (no line twice).
    """

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(Formatter())

    def emit(self, record: logging.LogRecord) -> None:
        logger: logging.Logger | None = logging.getLogger(record.name)
        while logger is not None:
            if any(h is not self and not _is_otel_handler(h) and record.levelno >= h.level for h in logger.handlers):
                return
            logger = logger.parent if logger.propagate else None
        with contextlib.suppress(Exception):
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()


def install() -> None:
    """Our WARNING lines (every ``otel_reliability.*`` logger) reach stderr in our format unless the
    application's handlers show them. Idempotent."""
    logger = logging.getLogger(ROOT_LOGGER)
    if not any(isinstance(h, ConsoleFallback) for h in logger.handlers):
        logger.addHandler(ConsoleFallback())


def show_on_console(name: str) -> None:
    """Our INFO lines under ``name`` too (WARNING and above always), whatever the root logger's set-up."""
    logger = logging.getLogger(name)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)  # shown unless the application asked otherwise
    install()
