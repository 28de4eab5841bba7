"""Episode processing: the long background job of the seed's app (transcribe, summarize, enhance, voice, upload).

Two views of the same job, both on purpose:

- ``track_operation("episode.process", key=...)`` marks it in flight *in this process*: ``operation_in_flight``,
  ``operation_oldest_age_seconds`` and, past ``OTEL_RELIABILITY_STUCK_THRESHOLD``, ``operation_stuck``.
- the episodes table itself (status ``processing`` + ``updated_at``) is watched by the stuck detector registered in
  ``main.py``, which also sees jobs whose process died, and whose cleanup endpoint marks them ``error``.

Jobs run on a small dedicated pool (a "worker"), not on the request threads, so a hung job never starves requests.
Every status change goes through ``run_in_transaction`` and is conditional on the row still being
``processing``: if an operator has marked a stuck job as error meanwhile, a late finish does not overwrite that.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor

from sqlalchemy import update
from sqlalchemy.orm import Session

import otel_reliability

from . import services
from .db import Episode, EpisodeStatus, SessionLocal, utcnow

_logger = logging.getLogger("example.jobs")
_worker = ThreadPoolExecutor(max_workers=4, thread_name_prefix="episode-worker")


def _finish(episode_id: int, status: EpisodeStatus, **fields: object) -> bool:
    def work(session: Session) -> bool:
        result = session.execute(
            update(Episode)
            .where(Episode.id == episode_id, Episode.status == EpisodeStatus.PROCESSING.value)
            .values(status=status.value, updated_at=utcnow(), **fields)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    changed: bool = otel_reliability.run_in_transaction(SessionLocal, work)
    return changed


def process_episode(episode_id: int) -> None:
    """Run every step; the episode ends ``published`` or ``error`` (unless someone else already ended it)."""
    with otel_reliability.track_operation("episode.process", key=str(episode_id)):
        try:
            transcript = services.transcribe(episode_id).get("path", "")
            summary = services.summarize(episode_id, str(transcript)).get("path", "")
            services.enhance_audio(episode_id)
            services.synthesize_voice(episode_id)
            services.upload(f"episodes/{episode_id}/final.mp3", 1024)
        except Exception as exc:  # any failure ends the job as error, with a reason a human can read
            _logger.warning("episode %s failed: %s", episode_id, exc)
            _finish(episode_id, EpisodeStatus.ERROR, error=f"{type(exc).__name__}: {exc}"[:500])
            return
        if not _finish(episode_id, EpisodeStatus.PUBLISHED, transcript=str(transcript), summary=str(summary)):
            _logger.warning("episode %s finished but was no longer processing (marked by cleanup?)", episode_id)


def submit(episode_id: int) -> Future[None]:
    return _worker.submit(process_episode, episode_id)
