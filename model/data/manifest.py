"""Training sets as data: one manifest format for any dataset, a site's own footage included.

A manifest lists videos (a video file or a folder of frames each) with a weak, video-level label (normal or
anomalous), the anomaly's category, the source group the clip was cut from (clips of one group share a camera
and a recording, so cross-validation keeps them in one fold), its licence and its split (`train` or `test`),
plus dataset-level fields: name, description, the frame rate of frame folders, a default licence and the root
that relative paths are resolved against.

It is read and written as JSON (`DatasetManifest` as it is) or as CSV for users. CSV columns (a header row;
only `path` and `label` are required, empty cells take the defaults)::

    path      video file or frame folder, relative to the manifest's folder (or `root`) or absolute
    label     normal | anomalous (or 0 | 1)
    category  the anomaly's kind (required for anomalous videos, empty for normal ones)
    group     source group, e.g. the camera or recording (default: the video's own name)
    licence   the video's licence (default: the dataset's)
    split     train | test (default: train)
    name      the video's name in feature stores (default: the file name without its suffix)

Dataset-level fields may precede the header as `# key: value` lines (`name`, `description`, `fps`, `licence`,
`root`); the name defaults to the file's stem. Validation errors name the entry (line or index and path) and
the field.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from model.data.feature_store import safe_video_name
from model.extraction import VideoInput
from model.video.source import DEFAULT_FOLDER_FPS

FORMAT = "refinevad-dataset/1"
Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")
CSV_COLUMNS = ("path", "label", "category", "group", "licence", "split", "name")
CSV_HEADER_KEYS = ("name", "description", "fps", "licence", "root")
LABEL_WORDS = {"0": 0, "1": 1, "normal": 0, "anomalous": 1}


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file, the entry and the field."""


def default_name(path: str) -> str:
    """'fight/fi001.mp4' -> 'fi001'; 'normal/scene01' (a frame folder) -> 'scene01'."""
    p = Path(path)
    return p.stem if p.suffix else p.name


class DatasetEntry(BaseModel):
    """One video of a manifest. `name`, `group` and `licence` are filled in when left out."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        min_length=1, description="video file or frame folder, relative to the root or absolute"
    )
    label: int = Field(ge=0, le=1, description="video-level label: 0 = normal, 1 = anomalous")
    category: str | None = Field(default=None, description="anomaly category; None for normal videos")
    group: str | None = Field(default=None, description="source group (camera, recording); default: name")
    licence: str | None = Field(default=None, description="the video's licence; default: the dataset's")
    split: Split = "train"
    name: str | None = Field(default=None, description="name in feature stores; default: file name stem")

    @field_validator("category", "group", "licence", "name", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("label", mode="before")
    @classmethod
    def _label_words(cls, value: Any) -> Any:
        if isinstance(value, str):
            word = value.strip().lower()
            if word not in LABEL_WORDS:
                raise ValueError(f"label must be normal or anomalous (or 0 or 1), got {value!r}")
            return LABEL_WORDS[word]
        return value

    @field_validator("split", mode="before")
    @classmethod
    def _split_default(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.strip().lower() or "train"
        return value

    @model_validator(mode="after")
    def _fill_and_check(self) -> DatasetEntry:
        if self.name is None:
            self.name = default_name(self.path)
        try:
            safe_video_name(self.name)
        except ValueError as exc:
            raise ValueError(f"name: {exc}") from None
        if self.group is None:
            self.group = self.name
        if self.label == 1 and not self.category:
            raise ValueError("category: an anomalous video needs its category")
        if self.label == 0 and self.category:
            raise ValueError(f"category: a normal video has no category (got {self.category!r})")
        return self


class DatasetManifest(BaseModel):
    """A training (and test) set: dataset-level fields and one `DatasetEntry` per video."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["refinevad-dataset/1"] = FORMAT
    name: str = Field(min_length=1)
    description: str = ""
    fps: float = Field(DEFAULT_FOLDER_FPS, gt=0, description="frame rate of frame folders (frames/s)")
    licence: str | None = Field(default=None, description="licence of entries that name none")
    root: str | None = Field(
        default=None,
        description="folder relative paths are resolved against (default: the manifest's folder)",
    )
    entries: list[DatasetEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> DatasetManifest:
        seen: dict[str, int] = {}
        for i, entry in enumerate(self.entries):
            if entry.name in seen:
                first = seen[entry.name]
                raise ValueError(
                    f"entries {first} ({self.entries[first].path}) and {i} ({entry.path}) are both named "
                    f"{entry.name!r}; give one of them another name"
                )
            seen[entry.name] = i
        for entry in self.entries:
            if entry.licence is None:
                entry.licence = self.licence
        return self

    # -- views ---------------------------------------------------------------------------------------------------
    @property
    def category_names(self) -> list[str]:
        """Every category of either split, sorted, so train and test stores index categories alike."""
        return sorted({e.category for e in self.entries if e.category})

    def split(self, split: Split) -> list[DatasetEntry]:
        return [e for e in self.entries if e.split == split]

    def resolve(self, entry: DatasetEntry) -> Path:
        """The entry's file or folder: absolute paths as they are, relative ones under `root`."""
        path = Path(entry.path).expanduser()
        return path if path.is_absolute() or self.root is None else Path(self.root) / path

    def missing(self) -> list[DatasetEntry]:
        """Entries whose file or folder does not exist."""
        return [e for e in self.entries if not self.resolve(e).exists()]

    def groups(self) -> dict[str, str]:
        """Video name -> source group, in manifest order."""
        return {e.name: e.group for e in self.entries}  # type: ignore[misc]  (filled by the validator)

    def extraction_inputs(self, split: Split) -> list[VideoInput]:
        """The split's videos as `extract_to_store` takes them (label, category, group, licence, folder fps)."""
        return [
            VideoInput(
                name=e.name,
                uri=str(self.resolve(e)),
                label=e.label,
                category=e.category,
                group=e.group,
                licence=e.licence,
                dataset=self.name,
                folder_fps=self.fps,
            )
            for e in self.split(split)
        ]


# -- reading and writing -------------------------------------------------------------------------------------------
def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def _entries(rows: Iterable[tuple[str, dict[str, Any]]], source: str) -> list[DatasetEntry]:
    """Validate rows one by one so every error names its entry; all bad entries are reported at once."""
    entries, problems = [], []
    for where, row in rows:
        try:
            entries.append(DatasetEntry.model_validate(row))
        except ValidationError as exc:
            path = row.get("path") if isinstance(row, dict) else None
            problems.append(f"{where}{f' ({path})' if path else ''}: {_describe(exc)}")
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ManifestError(f"{source}: {len(problems)} bad entries:\n  {shown}{more}")
    return entries


def _build(fields: dict[str, Any], entries: list[DatasetEntry], source: str, base: Path) -> DatasetManifest:
    try:
        manifest = DatasetManifest.model_validate({**fields, "entries": entries})
    except ValidationError as exc:
        raise ManifestError(f"{source}: {_describe(exc)}") from None
    # Relative paths in a file are relative to that file (or to its `root`, itself relative to the file).
    root = base if manifest.root is None else base / Path(manifest.root).expanduser()
    return manifest.model_copy(update={"root": str(root.resolve())})


def parse_json(text: str, source: str = "manifest", base: Path | None = None) -> DatasetManifest:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{source}: not JSON ({exc})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("entries"), list):
        raise ManifestError(f"{source}: expected a JSON object with an 'entries' list")
    rows = [(f"entry {i}", row) for i, row in enumerate(raw["entries"])]
    entries = _entries(rows, source)
    return _build({k: v for k, v in raw.items() if k != "entries"}, entries, source, base or Path.cwd())


def parse_csv(
    text: str, source: str = "manifest", base: Path | None = None, name: str | None = None
) -> DatasetManifest:
    lines = text.splitlines()
    fields: dict[str, Any] = {"name": name or "manifest"}
    body_start = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if not line.lstrip().startswith("#"):
            break
        key, sep, value = line.lstrip()[1:].partition(":")
        key = key.strip().lower()
        if not sep or key not in CSV_HEADER_KEYS:
            raise ManifestError(
                f"{source} line {number}: a comment line before the header must be '# key: value' with key "
                f"one of {', '.join(CSV_HEADER_KEYS)}"
            )
        fields[key] = value.strip()
        body_start = number
    body = "\n".join(lines[body_start:])
    reader = csv.DictReader(io.StringIO(body))
    columns = [c.strip() for c in reader.fieldnames or []]
    unknown = [c for c in columns if c not in CSV_COLUMNS]
    missing = [c for c in ("path", "label") if c not in columns]
    if missing or unknown:
        problem = f"missing column(s) {', '.join(missing)}" if missing else ""
        if unknown:
            problem += ("; " if problem else "") + f"unknown column(s) {', '.join(unknown)}"
        raise ManifestError(f"{source}: {problem} (the columns are {', '.join(CSV_COLUMNS)})")
    reader.fieldnames = columns
    rows = []
    for row in reader:
        if None in row:
            raise ManifestError(f"{source} line {body_start + reader.line_num}: more cells than columns")
        cells = {k: v for k, v in row.items() if v is not None}
        if not any(v.strip() for v in cells.values()):
            continue  # a blank row, as spreadsheets leave them
        rows.append((f"line {body_start + reader.line_num}", cells))
    return _build(fields, _entries(rows, source), source, base or Path.cwd())


def read_manifest(path: str | os.PathLike[str]) -> DatasetManifest:
    """A manifest from `FILE.json` or `FILE.csv`; relative paths resolve against its folder. Raises
    `ManifestError` naming the entry and field of each problem, `FileNotFoundError` when there is no file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no manifest at {path}")
    text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's BOM is not part of the first column's name
    base = path.resolve().parent
    if path.suffix.lower() == ".json":
        return parse_json(text, str(path), base)
    if path.suffix.lower() == ".csv":
        return parse_csv(text, str(path), base, name=path.stem)
    raise ManifestError(f"{path}: a manifest is a .json or .csv file")


def manifest_csv(manifest: DatasetManifest) -> str:
    """The manifest as CSV text: dataset-level `# key: value` lines, then one row per entry."""
    out = io.StringIO()
    for key in CSV_HEADER_KEYS:
        value = getattr(manifest, key)
        if value not in (None, ""):
            out.write(f"# {key}: {' '.join(str(value).split())}\n")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for e in manifest.entries:
        label = "anomalous" if e.label else "normal"
        writer.writerow([e.path, label, e.category or "", e.group, e.licence or "", e.split, e.name])
    return out.getvalue()


def write_manifest(manifest: DatasetManifest, path: str | os.PathLike[str]) -> Path:
    """Write as JSON or CSV by the file's suffix."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        path.write_text(manifest.model_dump_json(indent=1))
    elif path.suffix.lower() == ".csv":
        path.write_text(manifest_csv(manifest))
    else:
        raise ManifestError(f"{path}: a manifest is written as .json or .csv")
    return path


def check_mix(manifests: Sequence[DatasetManifest]) -> None:
    """Manifests extracted into one store must not share video names. Raises `ManifestError`."""
    owner: dict[str, str] = {}
    clashes = []
    for manifest in manifests:
        for entry in manifest.entries:
            name = entry.name or ""
            if name in owner:
                clashes.append(f"{name!r} ({owner[name]} and {manifest.name})")
            owner.setdefault(name, manifest.name)
    if clashes:
        raise ManifestError(
            f"several datasets name videos alike: {', '.join(clashes[:10])}; rename them in a manifest"
        )
