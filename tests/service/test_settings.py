"""Service settings: defaults, environment, YAML file, precedence and secret masking."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import CONFIG_ENV, ServiceSettings, load_settings, log_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("REFINEVAD_"):
            monkeypatch.delenv(key)


def test_defaults_need_no_configuration() -> None:
    settings = ServiceSettings()
    assert settings.api_keys == [] and settings.cors_origins == []
    assert settings.data_dir == Path("data")
    assert settings.database_path == Path("data/refinevad.sqlite3")
    assert settings.backbone is None and settings.model_checkpoint is None
    assert settings.device == "auto"
    assert "file" not in settings.allowed_schemes
    assert settings.max_upload_bytes == 512 * 1024 * 1024


def test_environment_lists_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFINEVAD_API_KEYS", " k1, k2 ,,")
    monkeypatch.setenv("REFINEVAD_CORS_ORIGINS", "http://a.example,http://b.example")
    monkeypatch.setenv("REFINEVAD_ALLOWED_SCHEMES", "RTSP,file")
    monkeypatch.setenv("REFINEVAD_SYNC_MAX_SECONDS", "12.5")
    monkeypatch.setenv("REFINEVAD_BACKBONE", "clip")
    settings = ServiceSettings()
    assert settings.api_key_values() == [b"k1", b"k2"]
    assert settings.cors_origins == ["http://a.example", "http://b.example"]
    assert settings.allowed_schemes == ["rtsp", "file"]
    assert settings.sync_max_seconds == 12.5
    assert settings.backbone == "clip"


def test_live_decoder_is_pyav_unless_set_to_opencv(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServiceSettings().live_decoder == "pyav"
    monkeypatch.setenv("REFINEVAD_LIVE_DECODER", "opencv")
    assert ServiceSettings().live_decoder == "opencv"
    monkeypatch.setenv("REFINEVAD_LIVE_DECODER", "gstreamer")
    with pytest.raises(ValidationError, match="live_decoder"):
        ServiceSettings()


def test_yaml_file_under_environment_under_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "refinevad.yaml"
    config.write_text("port: 9001\nhost: 0.0.0.0\napi_keys: [from-file]\nmax_upload_mb: 3\n")
    monkeypatch.setenv("REFINEVAD_PORT", "9002")
    settings = load_settings(config, host="127.0.0.2")
    assert settings.config == config
    assert settings.port == 9002  # environment over file
    assert settings.host == "127.0.0.2"  # command line over both
    assert settings.api_key_values() == [b"from-file"]
    assert settings.max_upload_mb == 3


def test_invalid_values_and_missing_file_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFINEVAD_BACKBONE", "resnet")
    with pytest.raises(ValidationError, match="backbone"):
        ServiceSettings()
    monkeypatch.delenv("REFINEVAD_BACKBONE")
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "missing.yaml"))
    with pytest.raises(ValueError, match="does not exist"):
        ServiceSettings()
    monkeypatch.delenv(CONFIG_ENV)
    (tmp_path / "typo.yaml").write_text("prot: 1\n")
    monkeypatch.setenv(CONFIG_ENV, str(tmp_path / "typo.yaml"))
    with pytest.raises(ValidationError, match="prot"):
        ServiceSettings()


def test_secrets_are_masked_in_the_start_up_log(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("REFINEVAD_API_KEYS", "super-secret-1,super-secret-2")
    settings = ServiceSettings()
    masked = settings.masked()
    assert masked["api_keys"] == ["***", "***"]
    assert "super-secret" not in json.dumps(masked)
    with caplog.at_level(logging.INFO, logger="service.settings"):
        log_settings(settings)
    assert "super-secret" not in caplog.text
    assert "api_keys" in caplog.text and "OPEN" not in caplog.text


def test_running_open_is_announced_loudly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="service.settings"):
        log_settings(ServiceSettings())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "NO API KEYS" in warnings[0].getMessage()


def test_acceleration_settings_reach_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.model_service import engine_config

    assert ServiceSettings().accel_shift_kernels == ["triton"]
    monkeypatch.setenv("REFINEVAD_ACCEL_SHIFT_KERNELS", "")
    monkeypatch.setenv("REFINEVAD_ACCEL_PLUGINS", "site_kernels, more.kernels")
    monkeypatch.setenv("REFINEVAD_ACCEL_HEAD_ATOL", "0.01")
    monkeypatch.setenv("REFINEVAD_HEAD_BACKEND", "onnx-tensorrt")
    policy = engine_config(ServiceSettings()).acceleration
    assert policy.shift_kernels == [] and policy.plugins == ["site_kernels", "more.kernels"]
    assert policy.head_atol == 0.01 and policy.backbone_rtol == 0.03
    assert engine_config(ServiceSettings()).head_backend == "onnx-tensorrt"
    for bad in ("onnx tensorrt", "../x"):
        monkeypatch.setenv("REFINEVAD_HEAD_BACKEND", bad)
        with pytest.raises(ValidationError, match="head_backend"):
            ServiceSettings()
    monkeypatch.setenv("REFINEVAD_HEAD_BACKEND", "torch")
    monkeypatch.setenv("REFINEVAD_ACCEL_HEAD_ATOL", "-1")
    with pytest.raises(ValidationError, match="accel_head_atol"):
        ServiceSettings()


def test_database_url_selects_postgresql_and_never_echoes_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert ServiceSettings().database_target == Path("data/refinevad.sqlite3")
    monkeypatch.setenv("REFINEVAD_DATABASE_URL", "postgresql://svc:hunter2@db.example:5432/refinevad")
    settings = ServiceSettings()
    assert settings.database_target == "postgresql://svc:hunter2@db.example:5432/refinevad"
    assert "hunter2" not in json.dumps(settings.masked())
    monkeypatch.setenv("REFINEVAD_DATABASE_URL", "mysql://svc:hunter2@db.example/refinevad")
    with pytest.raises(ValidationError) as info:
        ServiceSettings()
    assert "postgresql://USER:PASSWORD@HOST:PORT/DB" in str(info.value)
    assert "hunter2" not in str(info.value)
    monkeypatch.setenv("REFINEVAD_DATABASE_URL", " ")
    assert ServiceSettings().database_target == Path("data/refinevad.sqlite3")


def test_a_bad_mqtt_url_is_refused_without_its_password() -> None:
    assert ServiceSettings(mqtt_url="mqtts://user:pw@broker.example").masked()["mqtt_url"] == "**********"
    assert ServiceSettings(mqtt_url="").mqtt_url is None  # empty = MQTT off
    for bad in (
        "http://user:topsecret@broker",
        "mqtt://user:topsecret@broker:99999",
        "mqtt://user:topsecret@",
    ):
        with pytest.raises(ValueError) as info:
            ServiceSettings(mqtt_url=bad)
        assert "mqtt_url" in str(info.value) and "topsecret" not in str(info.value)
