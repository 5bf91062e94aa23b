"""Scene models in the database: one row per camera, so a scene survives restarts and, in a cluster, whichever
worker runs the stream reads the same one (the database is the state every replica shares)."""

from __future__ import annotations

import io
import time

import numpy as np
import sqlalchemy as sa
from alembic.operations import Operations

from service.storage import Database, apply_migrations


def _scene_columns() -> list[sa.Column]:
    return [
        sa.Column("stream_id", sa.Text, primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    ]


SCENES = sa.Table("scene_models", sa.MetaData(), *_scene_columns())


def _scene_models_v1(op: Operations) -> None:
    op.create_table("scene_models", *_scene_columns())


SCENE_MIGRATIONS = (("scene_models_v1", (_scene_models_v1,)),)


class SceneStore:
    """`SceneModel.to_bytes()` blobs by stream id. Writes raise `StorageError` subclasses as `Database` does."""

    def __init__(self, db: Database) -> None:
        self.db = db
        apply_migrations(db, SCENE_MIGRATIONS)

    def load(self, stream_id: str) -> bytes | None:
        rows = self.db.query(sa.select(SCENES.c.data).where(SCENES.c.stream_id == stream_id))
        return bytes(rows[0][0]) if rows else None

    def updated_at(self, stream_id: str) -> float | None:
        """When the camera's scene was last saved (epoch seconds), without reading it; None when it has none."""
        rows = self.db.query(sa.select(SCENES.c.updated_at).where(SCENES.c.stream_id == stream_id))
        return float(rows[0][0]) if rows else None

    def save(self, stream_id: str, state: str, data: bytes) -> None:
        with self.db.transaction() as conn:
            conn.execute(sa.delete(SCENES).where(SCENES.c.stream_id == stream_id))
            conn.execute(
                sa.insert(SCENES).values(stream_id=stream_id, state=state, data=data, updated_at=time.time())
            )

    def delete(self, stream_id: str) -> bool:
        with self.db.transaction() as conn:
            return conn.execute(sa.delete(SCENES).where(SCENES.c.stream_id == stream_id)).rowcount > 0

    def states(self) -> dict[str, str]:
        """Every stored camera's scene state, for metrics."""
        return {row[0]: row[1] for row in self.db.query(sa.select(SCENES.c.stream_id, SCENES.c.state))}


def _event_region_columns() -> list[sa.Column]:
    return [
        sa.Column("event_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("stream_id", sa.Text, nullable=False, index=True),
        sa.Column("snippets", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
    ]


EVENT_REGIONS = sa.Table("event_scene_regions", sa.MetaData(), *_event_region_columns())


def _event_scene_regions_v1(op: Operations) -> None:
    op.create_table("event_scene_regions", *_event_region_columns())


EVENT_REGION_MIGRATIONS = (("event_scene_regions_v1", (_event_scene_regions_v1,)),)


class EventRegionStore:
    """A closed live event's scene descriptors (`[S, R, d]` float32, `np.save` format), by event id: what an
    operator's later false alarm teaches the camera, whichever worker or restart it comes after."""

    def __init__(self, db: Database) -> None:
        self.db = db
        apply_migrations(db, EVENT_REGION_MIGRATIONS)

    def put(self, event_id: int, stream_id: str, regions: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(regions, dtype=np.float32), allow_pickle=False)
        row = {
            "event_id": event_id,
            "stream_id": stream_id,
            "snippets": len(regions),
            "data": buffer.getvalue(),
            "created_at": time.time(),
        }
        with self.db.transaction() as conn:
            conn.execute(sa.delete(EVENT_REGIONS).where(EVENT_REGIONS.c.event_id == event_id))
            conn.execute(sa.insert(EVENT_REGIONS).values(**row))

    def get(self, event_id: int) -> np.ndarray | None:
        rows = self.db.query(sa.select(EVENT_REGIONS.c.data).where(EVENT_REGIONS.c.event_id == event_id))
        return np.load(io.BytesIO(bytes(rows[0][0])), allow_pickle=False) if rows else None

    def delete(self, event_id: int) -> None:
        with self.db.transaction() as conn:
            conn.execute(sa.delete(EVENT_REGIONS).where(EVENT_REGIONS.c.event_id == event_id))

    def delete_for_stream(self, stream_id: str) -> None:
        with self.db.transaction() as conn:
            conn.execute(sa.delete(EVENT_REGIONS).where(EVENT_REGIONS.c.stream_id == stream_id))


def _feedback_columns() -> list[sa.Column]:
    return [
        sa.Column("event_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("verdict", sa.Text, nullable=False),
        sa.Column("category", sa.Text),
        sa.Column("learned_snippets", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.Double, nullable=False),
    ]


FEEDBACK = sa.Table("event_feedback", sa.MetaData(), *_feedback_columns())


def _event_feedback_v1(op: Operations) -> None:
    op.create_table("event_feedback", *_feedback_columns())


FEEDBACK_MIGRATIONS = (("event_feedback_v1", (_event_feedback_v1,)),)


class FeedbackStore:
    """Operators' verdicts on events (`false_alarm` or `confirmed`, with an optional category), one per event:
    a new verdict replaces the previous one."""

    def __init__(self, db: Database) -> None:
        self.db = db
        apply_migrations(db, FEEDBACK_MIGRATIONS)

    def put(self, event_id: int, verdict: str, category: str | None, learned_snippets: int) -> dict:
        row = {
            "event_id": event_id,
            "verdict": verdict,
            "category": category,
            "learned_snippets": learned_snippets,
            "created_at": time.time(),
        }
        with self.db.transaction() as conn:
            conn.execute(sa.delete(FEEDBACK).where(FEEDBACK.c.event_id == event_id))
            conn.execute(sa.insert(FEEDBACK).values(**row))
        return row

    def of_events(self, event_ids: list[int]) -> dict[int, dict]:
        if not event_ids:
            return {}
        rows = self.db.query(sa.select(FEEDBACK).where(FEEDBACK.c.event_id.in_(event_ids)))
        return {row.event_id: dict(row._mapping) for row in rows}
