"""The public CLIP-feature releases (VadCLIP style): CSV lists of `path,label`, one `.npy` [snippets, D] per video
and crop.

* Paths are the releaser's absolute paths (`/home/<someone>/.../UCFClipFeatures/Abuse/Abuse001_x264__0.npy`);
  they are remapped to a local root by replacing the list's common folder (or a given prefix).
* A file stem `<video>__<k>` is crop k (0..9) of `<video>`; the UCF-Crime test list uses crop 5 only.
* Labels: UCF-Crime uses `Normal` or one of its 13 category names. XD-Violence uses codes: `A` = normal, `B1`
  fighting, `B2` shooting, `B4` riot, `B5` abuse, `B6` car accident, `G` explosion; a multi-label video joins codes
  with `-` (`B2-G-0`, `0` = no further label) and its first code is its primary category.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from model.config import UCF_CRIME_CATEGORIES

log = logging.getLogger(__name__)

UCF_NORMAL = "Normal"
XD_NORMAL = "A"
XD_VIOLENCE_CODES: dict[str, str] = {
    "B1": "Fighting",
    "B2": "Shooting",
    "B4": "Riot",
    "B5": "Abuse",
    "B6": "CarAccident",
    "G": "Explosion",
}
XD_VIOLENCE_CATEGORIES: tuple[str, ...] = tuple(XD_VIOLENCE_CODES.values())

ReleaseDataset = Literal["auto", "ucf-crime", "xd-violence"]
_CROP = re.compile(r"^(?P<video>.+)__(?P<crop>\d+)$")


@dataclass(frozen=True)
class ParsedLabel:
    label: int  # 1 = anomalous
    category: str | None  # primary category; None for normal videos
    categories: tuple[str, ...] = ()  # all categories of a multi-label video


def parse_ucf_label(text: str) -> ParsedLabel:
    text = text.strip()
    if text == UCF_NORMAL:
        return ParsedLabel(0, None)
    if text not in UCF_CRIME_CATEGORIES:
        raise ValueError(
            f"unknown UCF-Crime label {text!r} (expected Normal or one of {list(UCF_CRIME_CATEGORIES)})"
        )
    return ParsedLabel(1, text, (text,))


def parse_xd_label(text: str) -> ParsedLabel:
    codes = [c for c in text.strip().split("-") if c and c != "0"]
    if not codes:
        raise ValueError(f"empty XD-Violence label {text!r}")
    if codes == [XD_NORMAL]:
        return ParsedLabel(0, None)
    unknown = [c for c in codes if c not in XD_VIOLENCE_CODES]
    if unknown:
        raise ValueError(f"unknown XD-Violence code(s) {unknown} in label {text!r}")
    names = tuple(dict.fromkeys(XD_VIOLENCE_CODES[c] for c in codes))
    return ParsedLabel(1, names[0], names)


def detect_dataset(labels: Sequence[str]) -> Literal["ucf-crime", "xd-violence"]:
    values = {label.strip() for label in labels}
    if values <= {UCF_NORMAL, *UCF_CRIME_CATEGORIES}:
        return "ucf-crime"
    codes = {c for value in values for c in value.split("-") if c and c != "0"}
    if codes <= {XD_NORMAL, *XD_VIOLENCE_CODES}:
        return "xd-violence"
    raise ValueError(f"labels match neither UCF-Crime nor XD-Violence: {sorted(values)[:8]}")


def category_names_for(dataset: Literal["ucf-crime", "xd-violence"]) -> list[str]:
    return list(UCF_CRIME_CATEGORIES if dataset == "ucf-crime" else XD_VIOLENCE_CATEGORIES)


def split_crop(stem: str) -> tuple[str, int]:
    """`Abuse001_x264__3` -> (`Abuse001_x264`, 3); a stem without a crop suffix is crop 0."""
    match = _CROP.match(stem)
    return (match["video"], int(match["crop"])) if match else (stem, 0)


@dataclass(frozen=True)
class ReleaseVideo:
    name: str
    label: int
    category: str | None
    categories: tuple[str, ...]
    crops: tuple[Path, ...]  # local paths, ordered by crop index
    crop_ids: tuple[int, ...]


@dataclass(frozen=True)
class ReleaseList:
    dataset: Literal["ucf-crime", "xd-violence"]
    category_names: list[str]
    videos: list[ReleaseVideo]
    release_prefix: str


def _release_prefix(paths: Sequence[str]) -> str:
    parents = [str(PurePosixPath(p).parent) for p in paths]
    return os.path.commonpath(parents) if parents else ""


def remap(path: str, release_prefix: str, local_root: Path) -> Path:
    """Releaser's absolute path -> the same relative path under `local_root` (or the bare file name there, for a
    flat local copy)."""
    posix = PurePosixPath(path.replace("\\", "/"))
    try:
        relative = posix.relative_to(release_prefix) if release_prefix else PurePosixPath(posix.name)
    except ValueError:
        relative = PurePosixPath(posix.name)
    nested = local_root.joinpath(*relative.parts)
    if nested.is_file():
        return nested
    flat = local_root / posix.name
    return flat if flat.is_file() else nested


def read_release_list(
    list_path: str | os.PathLike[str],
    local_root: str | os.PathLike[str],
    dataset: ReleaseDataset = "auto",
    release_prefix: str | None = None,
    crops: Sequence[int] | None = None,
    check_files: bool = True,
) -> ReleaseList:
    """Read a `path,label` list, group crops per video (list order kept) and map paths under `local_root`."""
    with open(list_path, newline="") as handle:
        rows = [(row["path"], row["label"]) for row in csv.DictReader(handle)]
    if not rows:
        raise ValueError(f"{list_path}: empty feature list (expected a `path,label` header and rows)")
    kind = detect_dataset([label for _, label in rows]) if dataset == "auto" else dataset
    parse = parse_ucf_label if kind == "ucf-crime" else parse_xd_label
    prefix = _release_prefix([p for p, _ in rows]) if release_prefix is None else release_prefix.rstrip("/")
    root = Path(local_root)
    grouped: dict[str, list[tuple[int, Path]]] = {}
    labels: dict[str, ParsedLabel] = {}
    wanted = set(crops) if crops is not None else None
    for path, label in rows:
        video, crop = split_crop(PurePosixPath(path.replace("\\", "/")).stem)
        parsed = parse(label)
        if labels.setdefault(video, parsed) != parsed:
            raise ValueError(f"{list_path}: video {video} has conflicting labels")
        if wanted is None or crop in wanted:
            grouped.setdefault(video, []).append((crop, remap(path, prefix, root)))
    videos = []
    for video, items in grouped.items():
        items.sort()
        parsed = labels[video]
        videos.append(
            ReleaseVideo(
                video,
                parsed.label,
                parsed.category,
                parsed.categories,
                tuple(p for _, p in items),
                tuple(c for c, _ in items),
            )
        )
    if check_files:
        missing = [p for v in videos for p in v.crops if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} feature files of {list_path} are not under {root} "
                f"(first: {missing[0]}; the list's release prefix is {prefix!r})"
            )
    log.info("%s: %d videos (%s), release prefix %r -> %s", list_path, len(videos), kind, prefix, root)
    return ReleaseList(kind, category_names_for(kind), videos, prefix)
