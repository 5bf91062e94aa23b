"""A weakly labelled training set from operators' verdicts (`event_feedback`), for `refinevad train --from-feedback`.

What becomes training data, as video-level (weak) labels, one feature-store video per clip:

- a **confirmed** event's clip is anomalous, with the operator's category, else the event's dominant category
  (it must be one the base model knows: the fine-tuned head keeps the base model's categories);
- a **false alarm**'s clip is normal;
- **normal footage** the operator names (`normal_videos`: recordings known to be normal, e.g. the ones a camera
  was calibrated on through `POST /streams/{id}/scene/footage`), cut into pieces of about `normal_chunk_s`, each
  a normal video. The service keeps no such footage itself: uploads are deleted once learned, a scene model
  stores region descriptors rather than the backbone's features, and live frames are kept only in event clips.

Not used as normal: the pre-roll of an event clip (the seconds before the event opened). The detector opens an
event only after the scores have been high for a while and the anomaly may have begun before, so nothing says
that part is normal. A clip is therefore always one video with one label, pre- and post-roll included (the
weak label says "this clip contains an anomaly", which stays true).

The clip is what is trained on: it was re-encoded at up to `media_fps` (10 by default) and `media_max_width`, so
a camera served faster than that is trained at the clip's rate; raise `REFINEVAD_MEDIA_FPS` to the camera's
rate to train on exactly what it serves.

Events with a verdict but no usable clip (file analyses keep none; retention expires clips; a recording may
have failed) are skipped and reported. Raises `FeedbackDatasetError` (a `ValueError`) with what to do when
there is no feedback, a confirmed event has no category or one the base model does not know, or a class has
fewer than `min_per_class` examples.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from tqdm.auto import tqdm

from model.backbones.identity import BackboneIdentity
from model.data.feature_store import FeatureStore, VideoEntry
from model.video.source import VideoDecodeError
from service.event_media.store import EVENT_MEDIA, MediaRecord, MediaStore
from service.scene.store import FEEDBACK
from service.settings import ServiceSettings
from service.storage import EVENTS, Database

logger = logging.getLogger(__name__)

# One to train on and one held out to choose the epoch, per class, is the least training can work with; a
# handful per class is the least that says anything about a site.
DEFAULT_MIN_PER_CLASS = 4
DEFAULT_NORMAL_CHUNK_S = 20.0
FEATURES_DIR = "features"


class FeedbackDatasetError(ValueError):
    """The feedback cannot make a training set; the message says why and what to do."""


@dataclass(frozen=True)
class FeedbackItem:
    """One event with a verdict, as the database has it."""

    event_id: int
    verdict: str  # false_alarm | confirmed
    category: str | None  # the operator's
    stream_id: str | None  # None: the event row is gone
    source_kind: str | None
    dominant_category: str | None
    media: MediaRecord | None

    @property
    def name(self) -> str:
        return f"event-{self.event_id}"


@dataclass
class FeedbackSet:
    """What `build_feedback_store` wrote: the store, the videos of this build in it, and what was left out."""

    store: FeatureStore
    names: list[str]
    confirmed: int
    false_alarms: int
    normal_pieces: int
    categories: dict[str, int]
    skipped: dict[int, str] = field(default_factory=dict)  # event id -> why
    extracted: int = 0  # videos encoded in this build (the others were reused from the store)
    clip_fps: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        """JSON-ready counts, for checkpoint metadata and the command's report."""
        return {
            "confirmed_events": self.confirmed,
            "false_alarm_events": self.false_alarms,
            "normal_footage_pieces": self.normal_pieces,
            "categories": dict(self.categories),
            "skipped_events": {str(k): v for k, v in sorted(self.skipped.items())},
            "clip_fps": sorted(set(self.clip_fps)),
            "feature_store": str(self.store.root),
        }


def open_service_database(settings: ServiceSettings) -> Database:
    """The service's database (`database_url`, else the SQLite file in `data_dir`), refusing to create an empty
    SQLite file where there is none."""
    if settings.database_url is None and not settings.database_path.is_file():
        raise FeedbackDatasetError(
            f"no service database at {settings.database_path}: give the service's data directory (or set "
            "REFINEVAD_DATABASE_URL to its database)"
        )
    return Database(settings.database_target, busy_timeout_s=settings.db_busy_timeout_s)


def read_feedback(db: Database, media: MediaStore | None, cameras: Sequence[str] = ()) -> list[FeedbackItem]:
    """Every verdict (of events of `cameras`, when given) with its event and media rows, oldest verdict first."""
    if "event_feedback" not in db.table_names():
        return []
    statement = (
        sa.select(
            FEEDBACK.c.event_id,
            FEEDBACK.c.verdict,
            FEEDBACK.c.category,
            EVENTS.c.source_id,
            EVENTS.c.source_kind,
            EVENTS.c.dominant_category,
        )
        .select_from(FEEDBACK.outerjoin(EVENTS, EVENTS.c.id == FEEDBACK.c.event_id))
        .order_by(FEEDBACK.c.created_at, FEEDBACK.c.event_id)
    )
    if cameras:
        statement = statement.where(EVENTS.c.source_id.in_(list(cameras)))
    rows = db.query(statement)
    records = media.of_events([int(r.event_id) for r in rows]) if media is not None else {}
    return [
        FeedbackItem(
            event_id=int(r.event_id),
            verdict=r.verdict,
            category=r.category,
            stream_id=r.source_id,
            source_kind=r.source_kind,
            dominant_category=r.dominant_category,
            media=records.get(int(r.event_id)),
        )
        for r in rows
    ]


def missing_clip_reason(item: FeedbackItem) -> str | None:
    """Why an event has no clip to train on, or None when its clip is ready."""
    if item.stream_id is None:
        return "the event was deleted"
    if item.media is None:
        if item.source_kind == "job":
            return "an event of an analysed file (file analyses keep no clip)"
        return "no clip was recorded (event media off)"
    if item.media.clip_status != "ready" or item.media.clip_bytes <= 0:
        return f"its clip is {item.media.clip_status}"
    return None


@contextlib.contextmanager
def clip_file(media: MediaStore, record: MediaRecord, scratch: Path) -> Iterator[Path | None]:
    """The clip as a file: the media file (a single node), else the parts stored in the shared database (a
    cluster) copied to a temporary file in `scratch`, removed afterwards. None when neither holds the clip."""
    path = media.clip_path(record.event_id)
    if path.is_file():
        yield path
        return
    fd, name = tempfile.mkstemp(dir=scratch, prefix=f".clip-{record.event_id}.", suffix=".mp4")
    copy = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            for part in media.read_clip(record.event_id, 0, record.clip_bytes):
                handle.write(part)
        yield copy if copy.stat().st_size == record.clip_bytes else None
    finally:
        copy.unlink(missing_ok=True)


def _label(item: FeedbackItem, category_names: Sequence[str]) -> tuple[int, str | None]:
    if item.verdict == "false_alarm":
        return 0, None
    category = item.category or item.dominant_category
    if category is None:
        raise FeedbackDatasetError(
            f"confirmed event {item.event_id} has no category (the operator gave none and the event has no "
            f'dominant category): give one with POST /events/{item.event_id}/feedback {{"verdict": "confirmed", '
            f'"category": ...}} (one of {list(category_names)})'
        )
    if category not in category_names:
        raise FeedbackDatasetError(
            f"confirmed event {item.event_id} has category {category!r}, which the base model does not know "
            f"(it knows {list(category_names)}); the fine-tuned head keeps the base model's categories: give "
            "the event one of them, or fine-tune a base model that has this category"
        )
    return 1, category


def _check_counts(anomalous: int, normal: int, minimum: int, skipped: dict[int, str], total: int) -> None:
    if anomalous >= minimum and normal >= minimum:
        return
    reasons = Counter(skipped.values())
    left_out = (
        f"; {len(skipped)} of {total} events with a verdict have no usable clip ("
        + ", ".join(f"{n}: {why}" for why, n in reasons.most_common())
        + ")"
        if skipped
        else ""
    )
    raise FeedbackDatasetError(
        f"too few examples to fine-tune: {anomalous} anomalous (confirmed events) and {normal} normal (false "
        f"alarms and normal footage pieces), at least {minimum} of each are needed{left_out}. Confirm or mark "
        "more events, or add recordings known to be normal (--normal)"
    )


def _normal_pieces(
    features: np.ndarray, fps: float, frames_per_snippet: int, chunk_s: float
) -> list[np.ndarray]:
    """Consecutive pieces of about `chunk_s` seconds (the last one takes the remainder if it is short)."""
    per_piece = max(1, round(chunk_s * fps / frames_per_snippet))
    count = max(1, len(features) // per_piece)
    return [features[i * per_piece : (i + 1) * per_piece if i < count - 1 else None] for i in range(count)]


@dataclass
class FeedbackPlan:
    """The verdicts that will be trained on, checked before anything is decoded."""

    usable: list[FeedbackItem]  # events with a ready clip
    labels: dict[int, tuple[int, str | None]]  # event id -> (video label, category)
    skipped: dict[int, str]  # event id -> why it has no clip
    total: int  # events with a verdict
    normal_videos: list[Path]
    min_per_class: int


def plan_feedback(
    db: Database,
    media: MediaStore | None,
    category_names: Sequence[str],
    *,
    cameras: Sequence[str] = (),
    normal_videos: Sequence[Path] = (),
    min_per_class: int = DEFAULT_MIN_PER_CLASS,
) -> FeedbackPlan:
    """Read the verdicts (of `cameras`' events, when given) and label them for a base model of
    `category_names`. Raises `FeedbackDatasetError` for no feedback, a confirmed event without a known category,
    missing or clashing normal recordings, or too few examples of a class (normal recordings count as enough
    normal examples here: their pieces are counted once decoded)."""
    if min_per_class < 2:
        raise ValueError(
            f"min_per_class must be at least 2 (one to train on, one held out), not {min_per_class}"
        )
    items = read_feedback(db, media, cameras)
    where = f" for camera {', '.join(cameras)}" if cameras else ""
    if not items:
        raise FeedbackDatasetError(
            f"no operator feedback{where} in {db.describe()}: mark events with POST /events/{{id}}/feedback "
            '({"verdict": "confirmed" | "false_alarm"}) first'
        )
    skipped = {item.event_id: why for item in items if (why := missing_clip_reason(item)) is not None}
    usable = [item for item in items if item.event_id not in skipped]
    labels = {item.event_id: _label(item, category_names) for item in usable}
    for video in normal_videos:
        if not video.exists():
            raise FeedbackDatasetError(f"normal footage {video} does not exist")
    stems = Counter(v.stem if v.suffix else v.name for v in normal_videos)
    if clashes := sorted(stem for stem, n in stems.items() if n > 1):
        raise FeedbackDatasetError(f"several normal recordings are named {', '.join(clashes)}; rename them")
    anomalous = sum(labels[i.event_id][0] for i in usable)
    normal_known = len(usable) - anomalous if not normal_videos else min_per_class
    _check_counts(anomalous, normal_known, min_per_class, skipped, len(items))
    return FeedbackPlan(usable, labels, skipped, len(items), list(normal_videos), min_per_class)


def build_feedback_store(
    plan: FeedbackPlan,
    media: MediaStore | None,
    encode: Callable[[Path], tuple[np.ndarray, int, float]],
    out: Path,
    backbone: BackboneIdentity,
    frames_per_snippet: int,
    sampled_frames_per_snippet: int,
    category_names: Sequence[str],
    *,
    normal_chunk_s: float = DEFAULT_NORMAL_CHUNK_S,
    progress: bool = True,
) -> FeedbackSet:
    """Write the planned videos' snippet features to the feature store `out` and return this build's videos.

    `encode(path)` -> (features [T, D] float32, decoded frames, fps) of a video, raising `VideoDecodeError` for
    one that cannot be decoded; `backbone` and the snippet geometry describe what it computes. Videos already in
    `out` from the same clip (same event and clip size) or recording are reused, with their labels updated to
    today's verdicts; videos of events no longer in the feedback stay in the store but are not in `names`. A
    clip that turns out missing or undecodable is skipped. Raises `FeedbackDatasetError` when a class then has
    fewer than `plan.min_per_class` examples or a normal recording cannot be decoded, `ValueError` when `out`
    holds features of another backbone.
    """
    usable, labels, skipped = plan.usable, plan.labels, dict(plan.skipped)
    normal_videos, min_per_class = plan.normal_videos, plan.min_per_class
    store = FeatureStore.create_or_open(
        out, backbone, frames_per_snippet, sampled_frames_per_snippet, list(category_names)
    )
    result = FeedbackSet(store, [], 0, 0, 0, {}, skipped)
    scratch = out / ".scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    bar = tqdm(
        total=len(usable) + len(normal_videos), desc="extracting clips", unit="clip", disable=not progress
    )
    try:
        for item in usable:
            assert media is not None and item.media is not None
            label, category = labels[item.event_id]
            entry = VideoEntry(
                name=item.name,
                label=label,
                category=category,
                num_frames=0,
                fps=1.0,
                num_snippets=0,
                source=f"event {item.event_id} of {item.stream_id}: clip of {item.media.clip_bytes} bytes",
            )
            bar.set_postfix(event=item.event_id)
            if item.name in store and store.entry(item.name).source == entry.source:
                old = store.entry(item.name)
                store.add(
                    entry.model_copy(update={"num_frames": old.num_frames, "fps": old.fps}),
                    store.load(item.name),
                )
                result.clip_fps.append(old.fps)
            else:
                with clip_file(media, item.media, scratch) as path:
                    if path is None:
                        skipped[item.event_id] = "its clip file is missing"
                        bar.update()
                        continue
                    try:
                        features, frames, fps = encode(path)
                    except VideoDecodeError as exc:
                        reason = str(exc).replace(f"{path}: ", "").replace(str(path), "the clip")
                        skipped[item.event_id] = f"its clip cannot be decoded ({reason})"
                        bar.update()
                        continue
                store.add(entry.model_copy(update={"num_frames": frames, "fps": fps}), features)
                result.clip_fps.append(fps)
                result.extracted += 1
            result.names.append(item.name)
            if label:
                result.confirmed += 1
                result.categories[category] = result.categories.get(category, 0) + 1
            else:
                result.false_alarms += 1
            bar.update()
        for video in normal_videos:
            bar.set_postfix(normal=video.name)
            result.names.extend(_add_normal(store, video, encode, frames_per_snippet, normal_chunk_s, result))
            bar.update()
    finally:
        bar.close()
        with contextlib.suppress(OSError):
            scratch.rmdir()
    for event_id, why in skipped.items():
        logger.warning("event %d left out: %s", event_id, why)
    _check_counts(
        result.confirmed, result.false_alarms + result.normal_pieces, min_per_class, skipped, plan.total
    )
    return result


def _add_normal(
    store: FeatureStore,
    video: Path,
    encode: Callable[[Path], tuple[np.ndarray, int, float]],
    frames_per_snippet: int,
    chunk_s: float,
    result: FeedbackSet,
) -> list[str]:
    stem = video.stem if video.suffix else video.name
    source = f"normal footage {video.resolve()} ({video.stat().st_size} bytes)"
    prefix = f"normal-{stem}-"
    kept = sorted(e.name for e in store if e.name.startswith(prefix) and e.source == source)
    if kept:
        result.normal_pieces += len(kept)
        result.clip_fps.append(store.entry(kept[0]).fps)
        return kept
    try:
        features, frames, fps = encode(video)
    except VideoDecodeError as exc:
        raise FeedbackDatasetError(f"normal footage {video} cannot be decoded: {exc}") from None
    result.extracted += 1
    result.clip_fps.append(fps)
    names = []
    for k, piece in enumerate(_normal_pieces(features, fps, frames_per_snippet, chunk_s)):
        entry = VideoEntry(
            name=f"{prefix}{k:03d}",
            label=0,
            num_frames=len(piece) * frames_per_snippet,
            fps=fps,
            num_snippets=len(piece),
            source=source,
        )
        store.add(entry, piece)
        names.append(entry.name)
    result.normal_pieces += len(names)
    logger.info("normal footage %s: %d frames at %.3g fps, %d pieces", video, frames, fps, len(names))
    return names


def open_media(db: Database, settings: ServiceSettings) -> MediaStore | None:
    """The service's media store, or None when it never recorded any (no `event_media` table)."""
    if EVENT_MEDIA.name not in db.table_names():
        return None
    return MediaStore(db, settings.media_dir, shared=bool(settings.cluster_address))
