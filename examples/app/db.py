"""Database: users and episodes, SQLite by default, PostgreSQL when ``DATABASE_URL`` says so.

The pool is deliberately small (``EXAMPLE_POOL_SIZE`` + ``EXAMPLE_POOL_MAX_OVERFLOW``, default 5 + 2) so that the
pool-saturation scenario fills it with a handful of slow requests. Its ``pool_logging_name`` is the pool's name in
metrics and in ``/api/health/pool``; without it otel-reliability would use host:port/database, never credentials.
"""

from __future__ import annotations

import enum
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, ForeignKey, String, Text, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker


def _default_url() -> str:
    directory = Path(os.environ.get("EXAMPLE_DATA_DIR") or Path(tempfile.gettempdir()) / "otel-reliability-example")
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{directory / 'example.db'}"


DATABASE_URL = os.environ.get("DATABASE_URL") or _default_url()
POOL_SIZE = int(os.environ.get("EXAMPLE_POOL_SIZE", "5"))
POOL_MAX_OVERFLOW = int(os.environ.get("EXAMPLE_POOL_MAX_OVERFLOW", "2"))
POOL_TIMEOUT = float(os.environ.get("EXAMPLE_POOL_TIMEOUT", "10"))


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class EpisodeStatus(str, enum.Enum):
    DRAFT = "draft"
    PROCESSING = "processing"
    PUBLISHED = "published"
    ERROR = "error"


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Episode(Base):
    __tablename__ = "episodes"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    # draft -> processing -> published | error; the stuck detector watches rows left in "processing".
    status: Mapped[str] = mapped_column(String(20), default=EpisodeStatus.DRAFT.value, index=True)
    media_object: Mapped[str | None] = mapped_column(String(300), nullable=True)
    transcript: Mapped[str | None] = mapped_column(Text, nullable=True)
    summary: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    plays: Mapped[int] = mapped_column(default=0)  # a hot counter: concurrent increments conflict
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user_id": self.user_id,
            "title": self.title,
            "status": self.status,
            "media_object": self.media_object,
            "summary": self.summary,
            "error": self.error,
            "plays": self.plays,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }


def _make_engine() -> Any:
    kwargs: dict[str, Any] = {
        "pool_size": POOL_SIZE,
        "max_overflow": POOL_MAX_OVERFLOW,
        "pool_timeout": POOL_TIMEOUT,
        "pool_pre_ping": True,
        "pool_logging_name": "example",
    }
    if DATABASE_URL.startswith("sqlite"):
        # The pool hands connections to other threads; WAL + a busy timeout let readers and a writer overlap.
        from sqlalchemy.pool import QueuePool

        kwargs.update(poolclass=QueuePool, connect_args={"check_same_thread": False, "timeout": 5})
        engine = create_engine(DATABASE_URL, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

        return engine
    return create_engine(DATABASE_URL, **kwargs)


engine = _make_engine()
SessionLocal = sessionmaker(bind=engine, expire_on_commit=False)
# Read-modify-write of a hot counter is only correct under SERIALIZABLE, where the database refuses one of
# two conflicting transactions (SQLSTATE 40001) and run_in_transaction runs the loser's work again.
SerializableSession = sessionmaker(
    bind=engine.execution_options(isolation_level="SERIALIZABLE"), expire_on_commit=False
)


def create_schema() -> None:
    Base.metadata.create_all(engine)


def is_postgres() -> bool:
    return engine.dialect.name == "postgresql"
