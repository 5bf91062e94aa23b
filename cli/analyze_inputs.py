"""What `refinevad analyze INPUT...` analyses: its arguments expanded into videos and frame folders, each with a
short unique name for its JSON file.

A file argument is one input whatever its name (decoding identifies video by its bytes). A folder that holds
images is one frame folder. Any other folder is a folder of recordings, searched recursively: every file with a
video suffix (or none: raw DVR exports) and every folder of images below it is an input, in natural name order
(2 before 10); other files (sidecars, notes) are skipped and counted. A folder that yields nothing is an input
that fails with that reason, so it shows in the summary instead of silently vanishing.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from model.video.source import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

# Suffixes taken as video inside a folder of recordings (a file named on the command line needs none).
VIDEO_SUFFIXES = frozenset(
    {
        ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg", ".flv",
        ".3gp", ".wmv", ".asf", ".mxf", ".ivf", ".nut", ".h264", ".264", ".h265", ".265", ".hevc", ".mjpeg",
    }
)  # fmt: skip
# The run's summary in --json-dir; no input's JSON may take its name.
SUMMARY_NAME = "summary"


@dataclass(frozen=True)
class AnalysisInput:
    """One video or frame folder to analyse. `uri` is what the engine opens; `error` is set when the argument
    yielded nothing to analyse (the input is reported as failed without being opened)."""

    uri: str
    name: str = ""
    error: str | None = None


def natural_key(path: Path) -> tuple:
    # 2.mp4 before 10.mp4, zero-padded names keep their order.
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", path.name)
    )


def holds_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() for p in folder.iterdir())


def _is_recording(path: Path) -> bool:
    return not path.name.startswith(".") and (path.suffix.lower() in VIDEO_SUFFIXES or not path.suffix)


def _walk(folder: Path, skipped: Counter[str]) -> list[Path]:
    """Frame folders and video files under `folder` (not itself a frame folder), depth first, natural order."""
    found: list[Path] = []
    for entry in sorted(folder.iterdir(), key=natural_key):
        if entry.is_dir() and not entry.name.startswith("."):
            found.extend([entry] if holds_images(entry) else _walk(entry, skipped))
        elif entry.is_file():
            if _is_recording(entry):
                found.append(entry)
            else:
                skipped[entry.suffix.lower() or entry.name] += 1
    return found


def expand(arguments: list[str]) -> list[AnalysisInput]:
    """The inputs the arguments name, each once (a path reached twice is analysed once), named uniquely."""
    paths: list[Path | str] = []
    failed: dict[int, str] = {}
    for raw in arguments:
        text = os.fspath(raw)
        if "://" in text and urlsplit(text).scheme.lower() != "file":
            paths.append(text)  # a URL: opened as it is
            continue
        path = Path(urlsplit(text).path if "://" in text else text)
        if not path.is_dir() or holds_images(path):
            paths.append(path)  # a file, a frame folder, or a missing path (fails when opened, saying so)
            continue
        skipped: Counter[str] = Counter()
        found = _walk(path, skipped)
        if skipped:
            what = ", ".join(f"{n} {kind}" for kind, n in sorted(skipped.items()))
            log.info("%s: skipped files that are not video by their name (%s)", path, what)
        if not found:
            failed[len(paths)] = (
                f"folder {path} holds no video files ({', '.join(sorted(VIDEO_SUFFIXES))}) and no frame folders"
            )
            paths.append(path)
        paths.extend(found)
    seen: set[str] = set()
    unique: list[tuple[Path | str, str | None]] = []
    for i, item in enumerate(paths):
        key = str(item.resolve()) if isinstance(item, Path) else item
        if key not in seen:
            seen.add(key)
            unique.append((item, failed.get(i)))
    names = unique_names([item for item, _ in unique], reserved={SUMMARY_NAME})
    return [
        AnalysisInput(uri=str(item), name=name, error=error)
        for (item, error), name in zip(unique, names, strict=True)
    ]


def _parts(item: Path | str) -> list[str]:
    if isinstance(item, Path):
        return [p for p in item.resolve().parts if p not in ("/", "\\")] or ["root"]
    split = urlsplit(item)
    return [split.hostname or "stream", *filter(None, split.path.split("/"))]


def unique_names(items: list[Path | str], reserved: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    """A file-name-safe name for each item: its last path part (a file keeps its suffix: clip.mp4), with as many
    parent folders joined by `__` as it takes to tell it from the others (frames/01 and other/01 give
    frames__01 and other__01) and from the `reserved` names."""
    parts = [_parts(item) for item in items]
    depth = [1] * len(items)

    def name(i: int) -> str:
        return "__".join(parts[i][-depth[i] :])

    while True:
        counts = Counter(name(i) for i in range(len(items)))
        clashing = [
            i
            for i in range(len(items))
            if (counts[name(i)] > 1 or name(i) in reserved) and depth[i] < len(parts[i])
        ]
        if not clashing:
            break
        for i in clashing:
            depth[i] += 1
    names = [re.sub(r"[^\w.\-]+", "_", name(i)) for i in range(len(items))]
    # Identical full paths were merged before; what still clashes differs only in unsafe characters.
    counts = Counter(names)
    for i, value in enumerate(names):
        if counts[value] > 1 or value in reserved:
            names[i] = f"{value}_{i + 1}"
    return names
