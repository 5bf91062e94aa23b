"""Service configuration: environment variables (prefix `REFINEVAD_`) over an optional YAML file over defaults.

The YAML file is named by `REFINEVAD_CONFIG` (the `--config` option of `refinevad serve` sets it), its keys are the
field names below without the prefix. List-valued settings (`api_keys`, `cors_origins`, `allowed_schemes`) are
comma-separated in the environment and YAML lists in the file.

Later parts of the service add their own fields here; keep every field defaulted so the service starts with no
configuration at all.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from model.backbones.registry import BackboneName
from service.publishers.broker_address import BrokerAddress
from service.storage import database_url

logger = logging.getLogger(__name__)

ENV_PREFIX = "REFINEVAD_"
CONFIG_ENV = f"{ENV_PREFIX}CONFIG"

CommaList = Annotated[list[str], NoDecode]


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class ServiceSettings(BaseSettings):
    # hide_input_in_errors: a rejected value may be a URL with a password in it; errors name the setting instead.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", validate_default=True, hide_input_in_errors=True
    )

    config: Path | None = Field(default=None, description="YAML file the settings were read from")

    # Where the service keeps its state.
    data_dir: Path = Field(default=Path("data"), description="SQLite database and upload spool")
    upload_spool_dir: Path | None = Field(
        default=None,
        description="where uploads are spooled while their jobs run; None = DATA_DIR/uploads (a process cleans "
        "its spool at start-up, so processes sharing a data directory need one each)",
    )
    database_url: SecretStr | None = Field(
        default=None,
        description=(
            "postgresql://USER:PASSWORD@HOST:PORT/DB for a shared PostgreSQL store (required by a cluster); "
            "None = embedded SQLite in data_dir"
        ),
    )
    db_busy_timeout_s: float = Field(
        default=5.0, gt=0, le=60, description="a write waits this long for a database locked elsewhere"
    )

    # Network.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    cors_origins: CommaList = Field(
        default_factory=list, description="allowed CORS origins; empty = CORS off"
    )

    # Security.
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="accepted API keys; empty = the service runs open"
    )
    allowed_schemes: CommaList = Field(
        default_factory=lambda: ["rtsp", "rtsps", "http", "https"],
        description="source URL schemes streams may use; add `file` to allow replay of local files",
    )

    # Model.
    model_checkpoint: Path | None = Field(
        default=None,
        description="a checkpoint file or a shipped model (default, ped2_motion); None = the shipped default",
    )
    backbone: BackboneName | None = Field(default=None, description="None = the checkpoint's")
    clip_arch: str | None = None
    clip_pretrained: str | None = None
    clip_checkpoint: Path | None = None
    cache_dir: Path | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    motion_threads: int | None = Field(
        default=None, ge=1, le=64, description="threads of the motion descriptor; None = min(4, CPU count)"
    )
    torch_threads: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="torch CPU threads; None = torch's default (1 is often faster for the small head on 2-4 cores)",
    )
    head_backend: str = Field(
        default="torch",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="how the head runs: torch (eager, the reference), torchscript, onnx, onnx-tensorrt, cuda-graph "
        "(the eager head replayed as CUDA graphs), or a "
        "plugin's backend; anything but torch serves only if it matches the eager head at start-up",
    )
    accel_shift_kernels: CommaList = Field(
        default_factory=lambda: ["triton"],
        description="MoTAR shift kernels to try in order; one serves only if it matches the tensor ops at "
        "start-up; empty = always the tensor ops",
    )
    accel_head_atol: float = Field(
        default=2e-3,
        ge=0,
        le=1,
        description="largest head score/probability difference an exported head may show",
    )
    accel_backbone_rtol: float = Field(
        default=3e-2,
        ge=0,
        le=1,
        description="largest relative error of a reduced-precision (fp16/bf16) or runtime backbone's features "
        "vs eager fp32",
    )
    accel_backbone_runtimes: CommaList = Field(
        default_factory=lambda: ["onnxruntime"],
        description="backbone runtimes to try in order (onnxruntime: the EfficientNet-Lite0 appearance network "
        "in ONNX Runtime on CPUs); one serves only if its features match the eager fp32 backbone at start-up; "
        "empty = always eager PyTorch",
    )
    accel_plugins: CommaList = Field(
        default_factory=list,
        description="Python modules imported at model load that register shift kernels or head backends",
    )
    event_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    scene_check: Literal["withhold_events", "report", "off"] = Field(
        default="withhold_events",
        description="footage unlike the model's training footage (model.scene_familiarity): withhold_events = "
        "flag it and raise no events from it; report = flag only; off = no check",
    )

    # Per-camera scene models (model.scene).
    scene_models: bool = Field(
        default=True, description="each live camera learns its own normal and its snippets get a scene_score"
    )
    scene_learn_s: float = Field(
        default=300.0,
        gt=0,
        description="seconds of a camera's footage (live or uploaded as normal) learned before its scene is "
        "calibrated: 5 minutes see a view's ordinary activity several times over and still calibrate a new "
        "camera within its first hour",
    )
    scene_max_mb: float = Field(
        default=64.0,
        gt=0,
        description="bound of one camera's memory bank in MB (bottom-k sampling beyond it)",
    )
    scene_check_min_snippets: int = Field(
        default=8,
        ge=1,
        description="snippets a stream's scene-familiarity check needs before its scores may open events "
        "(offline alike): 12.8 s at 10 fps with 16-frame snippets",
    )

    # File analysis.
    max_upload_mb: float = Field(default=512.0, gt=0)
    upload_idle_timeout_s: float = Field(
        default=30.0, gt=0, description="an upload that sends nothing for this long is cut off (408)"
    )
    upload_min_rate_kib_s: float = Field(
        default=16.0,
        ge=0,
        description="an upload averaging fewer KiB/s than this after the grace period is cut off (408); 0 = off",
    )
    upload_rate_grace_s: float = Field(
        default=30.0, ge=0, description="time an upload has before its average rate is checked"
    )
    upload_max_duration_s: float = Field(
        default=3600.0, gt=0, description="an upload still arriving after this long is cut off (408)"
    )
    request_head_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="a connection that does not send a full request head in time is closed",
    )
    max_json_kb: int = Field(default=64, ge=1, le=65536, description="largest JSON request body")
    json_body_max_s: float = Field(
        default=60.0,
        gt=0,
        description="a JSON (non-upload) request body still arriving after this long from its first byte is cut "
        "off (408), however it drips",
    )
    sync_max_seconds: float = Field(
        default=30.0, ge=0, description="videos up to this duration are answered synchronously"
    )
    max_video_pixels: int = Field(default=3840 * 2160, gt=0, description="largest frame (width x height)")
    max_video_frames: int = Field(default=30 * 60 * 60 * 2, gt=0, description="longest video, in frames")
    job_workers: int = Field(default=1, ge=1, le=16, description="videos analysed at the same time")
    job_max_attempts: int = Field(
        default=2, ge=1, description="a job interrupted by a crash this many times is failed, not resumed"
    )
    job_lease_s: float = Field(
        default=30.0,
        ge=1,
        le=3600,
        description="a running job's lease, renewed every third of it by the process driving it; in a cluster, "
        "another replica takes a job over this long after its replica died",
    )
    job_poll_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="cluster mode: each replica looks in the shared store for queued jobs and expired leases "
        "this often",
    )

    # Live streams (service/live).
    allowed_hosts: CommaList = Field(
        default_factory=list, description="hosts stream URLs may name; empty = any host"
    )
    live_window: int = Field(default=32, ge=2, le=1024, description="W: snippets the head sees per stream")
    live_max_streams: int = Field(default=64, ge=1, description="streams that may be registered at once")
    live_reconnect_initial_s: float = Field(
        default=0.5, gt=0, description="first delay before reopening a source that answers but failed to open"
    )
    live_reconnect_max_s: float = Field(
        default=30.0,
        gt=0,
        description="cap of that backoff (a source that does not answer is probed instead)",
    )
    live_probe_interval_s: float = Field(
        default=0.5, gt=0, le=60, description="reachability check of a source that is down, this often"
    )
    live_probe_timeout_s: float = Field(
        default=2.0, gt=0, le=60, description="one reachability check's limit (at most the open timeout)"
    )
    live_open_timeout_s: float = Field(default=10.0, gt=0, description="connecting to a camera")
    live_open_concurrency: int = Field(
        default=4,
        ge=1,
        le=64,
        description="cameras the PyAV decoder opens at the same time (OpenCV opens one at a time): cameras "
        "registered together come up in parallel, a reconnecting fleet a few at a time",
    )
    live_ffmpeg_options: str = Field(
        default="analyzeduration;500000",
        description="FFmpeg options of camera streams, for either live decoder (OpenCV's "
        "OPENCV_FFMPEG_CAPTURE_OPTIONS format, key;value|key;value), used when that variable is not set; the "
        "default probes a new stream for 0.5 s instead of FFmpeg's 5 s ceiling; empty = FFmpeg's defaults",
    )
    live_decoder: Literal["pyav", "opencv"] = Field(
        default="pyav",
        description="decoder of network cameras (rtsp://, http(s)://): `pyav` reports damaged frames (FFmpeg's "
        "corrupt flag) and frames lost in transport (timestamp gaps), which make their snippets `degraded` and "
        "count in the stream's `decode_errors`, and uses RTSP over TCP unless LIVE_FFMPEG_OPTIONS sets "
        "`rtsp_transport`; `opencv` reports none. Files and folders are not affected",
    )
    live_read_timeout_s: float = Field(default=10.0, gt=0, description="no frame for this long = dropped")
    live_stall_after_s: float = Field(
        default=2.0,
        gt=0,
        description="no frame for this long shows `stalled` (at least 3 frame intervals, at most half the read "
        "timeout)",
    )
    live_client_queue: int = Field(
        default=256, ge=1, description="messages a WebSocket client may fall behind before it is dropped"
    )
    live_replay: int = Field(default=1024, ge=0, description="recent messages per stream kept for resume")
    live_send_timeout_s: float = Field(
        default=10.0, gt=0, description="a WebSocket send stuck this long drops the client"
    )
    live_webhook_url: SecretStr | None = Field(
        default=None, description="POSTed every live event start and end (retried with backoff)"
    )
    live_webhook_attempts: int = Field(default=5, ge=1, le=20)

    # Cluster mode (service/cluster): a Ray cluster runs the live workers and the file jobs.
    cluster_address: str | None = Field(
        default=None,
        description="Ray cluster to join (`HOST:PORT` of the head's `ray start --head --port`); None = single node",
    )
    cluster_live_workers: int = Field(
        default=2, ge=1, le=1024, description="live workers (Ray actors), each running a share of the streams"
    )
    cluster_live_gpus: float | None = Field(
        default=None,
        ge=0,
        description=(
            "GPUs a live worker reserves; None = 0.6 when the cluster has GPUs (over half a GPU: Ray places at "
            "most one live worker per GPU, so workers land on distinct GPUs and machines), else 0"
        ),
    )
    cluster_job_gpus: float | None = Field(
        default=None,
        ge=0,
        description="GPUs a file job reserves; None = 0.4 when the cluster has GPUs (fits beside a live worker), else 0",
    )
    cluster_job_retries: int = Field(
        default=3, ge=0, le=100, description="times Ray re-runs a job whose node died"
    )
    cluster_sync_s: float = Field(
        default=2.0, gt=0, le=60, description="live workers re-read their share of the streams this often"
    )
    cluster_metrics_timeout_s: float = Field(
        default=1.0,
        gt=0,
        le=10,
        description=(
            "GET /metrics waits this long for the live workers' metrics; one that has not answered is left out of "
            "that scrape and counted (refinevad_cluster_worker_metrics_missed)"
        ),
    )

    @model_validator(mode="after")
    def _cluster_needs_a_shared_store(self) -> ServiceSettings:
        if self.cluster_address and self.database_url is None:
            raise ValueError(
                "cluster mode needs a database every machine can reach: set REFINEVAD_DATABASE_URL to a "
                "postgresql:// URL (the embedded SQLite is for one machine)"
            )
        return self

    # Event media (service/event_media): snapshots and clips of live events.
    media_enabled: bool = Field(default=True, description="record a snapshot and a clip of every live event")
    media_ring_mb: float = Field(
        default=48.0,
        gt=0,
        le=4096,
        description="recent frames kept in memory per stream (bounds the pre-roll)",
    )
    media_fps: float = Field(default=10.0, gt=0, le=60, description="highest frame rate of clips")
    media_max_width: int = Field(default=640, ge=64, le=7680, description="widest clip and snapshot, pixels")
    media_pre_roll_s: float = Field(default=3.0, ge=0, le=60, description="clip seconds before an event")
    media_post_roll_s: float = Field(default=3.0, ge=0, le=60, description="clip seconds after an event")
    media_max_clip_s: float = Field(default=300.0, gt=0, description="longest clip; longer events are cut")
    media_retain_days: float = Field(default=10.0, gt=0, description="snapshots and clips older are removed")
    media_max_total_mb: float = Field(
        default=2048.0, gt=0, description="all snapshots and clips together; the oldest go first"
    )
    media_retention_interval_s: float = Field(default=60.0, gt=0, description="how often retention runs")

    # MQTT (service/publishers/mqtt.py), off unless a broker URL is set.
    mqtt_url: SecretStr | None = Field(
        default=None, description="mqtt://user:pass@host:1883 or mqtts:// (TLS); unset = MQTT off"
    )
    mqtt_topic_prefix: str = Field(default="refinevad", min_length=1, max_length=100, pattern=r"^[^#+]+$")
    mqtt_client_id: str | None = Field(default=None, max_length=100, description="None = refinevad-<random>")
    mqtt_score_interval_s: float = Field(
        default=1.0, ge=0, description="at most one score message per stream this often"
    )
    mqtt_tls_ca: Path | None = Field(default=None, description="CA file for mqtts:// (None = system CAs)")
    public_url: str | None = Field(
        default=None,
        description="base URL clients reach the service at (links in MQTT messages); None = paths only",
    )

    @field_validator(
        "api_keys",
        "cors_origins",
        "allowed_schemes",
        "allowed_hosts",
        "accel_shift_kernels",
        "accel_backbone_runtimes",
        "accel_plugins",
        mode="before",
    )
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_broker_url(cls, value: SecretStr | None) -> SecretStr | None:
        """Checked here so a bad broker URL stops the start with a clear message (the password masked)."""
        if value is None or not value.get_secret_value().strip():
            return None
        url = value.get_secret_value().strip()
        BrokerAddress.parse(url)  # InvalidMqttUrl is a ValueError: pydantic reports it under `mqtt_url`
        return SecretStr(url)

    @field_validator("api_keys")
    @classmethod
    def _no_blank_keys(cls, value: list[SecretStr]) -> list[SecretStr]:
        return [key for key in value if key.get_secret_value().strip()]

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().strip():
            database_url(value.get_secret_value())  # ValueError naming what is supported
            return value
        return None

    @field_validator("allowed_schemes")
    @classmethod
    def _lower_schemes(cls, value: list[str]) -> list[str]:
        return [scheme.lower() for scheme in value]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_ENV)
        if config_file:
            path = Path(config_file)
            if not path.is_file():
                raise ValueError(f"configuration file {path} (from {CONFIG_ENV}) does not exist")
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def database_path(self) -> Path:
        return self.data_dir / "refinevad.sqlite3"

    @property
    def database_target(self) -> str | Path:
        """What `service.storage.Database` opens: the configured URL, else the embedded SQLite file."""
        return self.database_url.get_secret_value() if self.database_url else self.database_path

    @property
    def upload_dir(self) -> Path:
        return self.upload_spool_dir or self.data_dir / "uploads"

    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"

    def api_key_values(self) -> list[bytes]:
        return [key.get_secret_value().encode() for key in self.api_keys]

    def masked(self) -> dict[str, Any]:
        """The settings as JSON-ready values with secrets replaced, for logs."""
        data = self.model_dump(mode="json")
        data["api_keys"] = ["***"] * len(self.api_keys)
        return data


def load_settings(config_file: Path | None = None, **overrides: Any) -> ServiceSettings:
    """Read the settings; `config_file` takes the place of `REFINEVAD_CONFIG` for this process."""
    if config_file is not None:
        os.environ[CONFIG_ENV] = str(config_file)
    return ServiceSettings(**overrides)


def log_settings(settings: ServiceSettings) -> None:
    for name, value in settings.masked().items():
        logger.info("setting %s = %s", name, value)
    if not settings.api_keys:
        logger.warning(
            "NO API KEYS CONFIGURED: the service is OPEN to anyone who can reach %s:%s. "
            "Set %sAPI_KEYS to require a key.",
            settings.host,
            settings.port,
            ENV_PREFIX,
        )
