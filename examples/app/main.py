"""The example app: a small podcast backend shaped like the seed's service.

Run it under ``opentelemetry-instrument`` (``make demo`` does all of this)::

    python examples/fake_services.py --port 9100 &
    cd examples && FAKE_SERVICES_URL=http://127.0.0.1:9100 \\
        ../.venv/bin/opentelemetry-instrument ../.venv/bin/uvicorn app.main:app --port 8000

What otel-reliability gives it with no code: request metrics and the error rate, pool metrics, process resources,
the breakers of pybreaker and circuitbreaker, the health endpoints. What it uses the public API for, because only
the app knows: ``register_breaker`` (its hand-written gcs breaker), ``track_operation`` (the processing job),
``register_stuck_detector`` (the episodes table), ``run_in_transaction`` (every write), ``temp_file`` (uploads).

Errors follow one shape, ``{"error": {"code", "message", "retryable"}}``, so a client knows what to retry
(see ``examples/client.py``). Two routes misbehave on purpose, for the scenarios in ``examples/load.py``:
``GET /api/users/{id}/stats`` has a division-by-zero bug for users without episodes (error burst) and
``GET /api/reports/usage?hold_ms=`` keeps its database connection while it works (pool saturation).
``POST /api/episodes/{id}/play`` increments a hot counter under SERIALIZABLE: concurrent calls conflict and
``run_in_transaction`` retries them (contention).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import otel_reliability

from . import jobs, services
from .db import (
    Episode,
    EpisodeStatus,
    SerializableSession,
    SessionLocal,
    User,
    create_schema,
    engine,
    is_postgres,
    utcnow,
)

_logger = logging.getLogger("example")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    create_schema()
    # Jobs live in the episodes table: rows "processing" for longer than OTEL_RELIABILITY_STUCK_THRESHOLD are stuck,
    # also after the process that ran them died; the admin cleanup marks them "error".
    # (Named apart from the in-process "episode.process" operation: the two are different views of the same job.)
    otel_reliability.register_stuck_detector(
        "episodes.processing",
        bind=engine,
        table=Episode,
        status_column="status",
        in_progress_values=[EpisodeStatus.PROCESSING.value],
        timestamp_column="updated_at",
        error_value=EpisodeStatus.ERROR.value,
    )
    yield


app = FastAPI(title="otel-reliability example", lifespan=lifespan)


# --- one error shape ------------------------------------------------------------------------------------------


def _error(status: int, code: str, message: str, retryable: bool, headers: dict[str, str] | None = None, **extra: Any):
    body = {"error": {"code": code, "message": message, "retryable": retryable, **extra}}
    return JSONResponse(body, status_code=status, headers=headers)


@app.exception_handler(services.UpstreamError)
async def upstream_failed(request: Request, exc: services.UpstreamError) -> JSONResponse:
    # The provider failed this once; the breaker has counted it. Trying again later may well work.
    return _error(502, "upstream_failed", f"{exc.service} failed; please try again", True, dependency=exc.service)


@app.exception_handler(services.ServiceUnavailable)
async def service_unavailable(request: Request, exc: services.ServiceUnavailable) -> JSONResponse:
    # Our own breaker is open: say when it is worth trying again, as otel-reliability does for library breakers.
    message = f"{exc.service} is unavailable; retry in {exc.retry_after}s"
    headers = {"Retry-After": str(exc.retry_after)}
    return _error(503, "dependency_unavailable", message, True, headers=headers, dependency=exc.service)


@app.exception_handler(HTTPException)
async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    code = {404: "not_found", 409: "conflict", 400: "bad_request"}.get(exc.status_code, "error")
    return _error(exc.status_code, code, str(exc.detail), exc.status_code in (429, 503))


# --- users ----------------------------------------------------------------------------------------------------


class NewUser(BaseModel):
    email: str = Field(min_length=3, max_length=200)
    name: str = Field(min_length=1, max_length=200)


class NewEpisode(BaseModel):
    title: str = Field(min_length=1, max_length=200)


def _get(session: Session, model: type[Any], ident: int) -> Any:
    row = session.get(model, ident)
    if row is None:
        raise HTTPException(404, f"{model.__name__.lower()} {ident} not found")
    return row


@app.post("/api/users", status_code=201)
def create_user(body: NewUser) -> dict[str, Any]:
    def work(session: Session) -> dict[str, Any]:
        user = User(email=body.email, name=body.name)
        session.add(user)
        session.flush()
        return {"id": user.id, "email": user.email, "name": user.name}

    try:
        result: dict[str, Any] = otel_reliability.run_in_transaction(SessionLocal, work)
    except IntegrityError:  # a constraint violation is never retried: it would fail the same way again
        raise HTTPException(409, "a user with this email exists") from None
    return result


@app.get("/api/users/{user_id}")
def get_user(user_id: int) -> dict[str, Any]:
    with SessionLocal() as session:
        user = _get(session, User, user_id)
        return {"id": user.id, "email": user.email, "name": user.name}


@app.get("/api/users/{user_id}/stats")
def user_stats(user_id: int) -> dict[str, Any]:
    with SessionLocal() as session:
        _get(session, User, user_id)
        total = session.scalar(select(func.count()).where(Episode.user_id == user_id)) or 0
        published = session.scalar(
            select(func.count()).where(Episode.user_id == user_id, Episode.status == EpisodeStatus.PUBLISHED.value)
        )
    # Deliberate bug (the error-burst scenario): a user without episodes divides by zero -> 500.
    return {"episodes": total, "published_percent": round((published or 0) / total * 100, 1)}


# --- episodes -------------------------------------------------------------------------------------------------


@app.post("/api/users/{user_id}/episodes", status_code=201)
def create_episode(user_id: int, body: NewEpisode) -> dict[str, Any]:
    def work(session: Session) -> dict[str, Any]:
        _get(session, User, user_id)
        episode = Episode(user_id=user_id, title=body.title)
        session.add(episode)
        session.flush()
        return episode.to_dict()

    result: dict[str, Any] = otel_reliability.run_in_transaction(SessionLocal, work)
    return result


@app.post("/api/episodes/{episode_id}/play")
def play_episode(episode_id: int) -> dict[str, Any]:
    """Count a play: a read-modify-write that conflicts under load and is retried as a whole unit of work."""

    def work(session: Session) -> dict[str, Any]:
        episode = _get(session, Episode, episode_id)
        episode.plays = (episode.plays or 0) + 1
        return {"id": episode.id, "plays": episode.plays}

    result: dict[str, Any] = otel_reliability.run_in_transaction(SerializableSession, work)
    return result


@app.get("/api/episodes")
def list_episodes(status: EpisodeStatus | None = None, limit: int = Query(50, ge=1, le=500)) -> list[dict[str, Any]]:
    with SessionLocal() as session:
        query = select(Episode).order_by(Episode.id.desc()).limit(limit)
        if status is not None:
            query = query.where(Episode.status == status.value)
        return [e.to_dict() for e in session.scalars(query)]


@app.get("/api/episodes/{episode_id}")
def get_episode(episode_id: int) -> dict[str, Any]:
    with SessionLocal() as session:
        result: dict[str, Any] = _get(session, Episode, episode_id).to_dict()
        return result


@app.post("/api/episodes/{episode_id}/media", status_code=201)
async def upload_media(episode_id: int, file: Annotated[UploadFile, File()]) -> dict[str, Any]:
    """Spool the upload to a temp file (removed on success and on error), check it, store it in gcs."""
    digest = hashlib.sha256()
    size = 0
    with otel_reliability.temp_file(".upload") as path:
        with open(path, "wb") as out:
            while chunk := await file.read(64 * 1024):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        if size == 0:
            raise HTTPException(400, "empty upload")
        object_name = f"media/{episode_id}/{digest.hexdigest()[:16]}"
        services.upload(object_name, size)

    def work(session: Session) -> dict[str, Any]:
        episode = _get(session, Episode, episode_id)
        episode.media_object = object_name
        return episode.to_dict()

    result: dict[str, Any] = otel_reliability.run_in_transaction(SessionLocal, work)
    return {**result, "bytes": size}


@app.post("/api/episodes/{episode_id}/process", status_code=202)
def process_episode(episode_id: int) -> dict[str, Any]:
    """Start the background job; the episode is ``processing`` until it ends."""

    def work(session: Session) -> dict[str, Any]:
        episode = _get(session, Episode, episode_id)
        if episode.status == EpisodeStatus.PROCESSING.value:
            raise HTTPException(409, "episode is already processing")
        episode.status = EpisodeStatus.PROCESSING.value
        episode.error = None
        episode.updated_at = utcnow()
        return episode.to_dict()

    result: dict[str, Any] = otel_reliability.run_in_transaction(SessionLocal, work)
    jobs.submit(episode_id)
    return result


# Synchronous calls to one provider each, on the request path: what an outage of one service breaks.
@app.post("/api/episodes/{episode_id}/transcribe")
def transcribe(episode_id: int) -> dict[str, Any]:
    return {"episode": episode_id, "transcript": services.transcribe(episode_id)}


@app.post("/api/episodes/{episode_id}/summarize")
def summarize(episode_id: int) -> dict[str, Any]:
    return {"episode": episode_id, "summary": services.summarize(episode_id, "")}


@app.post("/api/episodes/{episode_id}/enhance")
def enhance(episode_id: int) -> dict[str, Any]:
    return {"episode": episode_id, "audio": services.enhance_audio(episode_id)}


@app.post("/api/episodes/{episode_id}/voice")
def voice(episode_id: int) -> dict[str, Any]:
    return {"episode": episode_id, "voice": services.synthesize_voice(episode_id)}


@app.post("/api/episodes/{episode_id}/publish")
def publish(episode_id: int) -> dict[str, Any]:
    return {"episode": episode_id, "stored": services.upload(f"episodes/{episode_id}/final.mp3", 1024)}


# The route each provider is reached by, for the load generator and the client example.
SERVICE_ROUTES = {
    "assemblyai": "transcribe",
    "gemini": "summarize",
    "auphonic": "enhance",
    "elevenlabs": "voice",
    "gcs": "publish",
}


# --- a report that holds its connection -----------------------------------------------------------------------


@app.get("/api/reports/usage")
def usage_report(hold_ms: int = Query(0, ge=0, le=30_000)) -> dict[str, Any]:
    """Counts per status. ``hold_ms`` simulates a slow report query: the connection stays checked out meanwhile,
    which is how a pool fills up in real life (slow queries, or a session held across an external call)."""
    with engine.connect() as connection:
        if hold_ms and is_postgres():
            connection.execute(text("SELECT pg_sleep(:s)"), {"s": hold_ms / 1000})
        elif hold_ms:
            time.sleep(hold_ms / 1000)
        rows = connection.execute(select(Episode.status, func.count()).group_by(Episode.status)).all()
    return {"episodes_by_status": {status: count for status, count in rows}}
