"""`refinevad train --from-feedback`: a site's operator verdicts on real Ped2 event clips, stored as the service
stores them (events, event media, feedback in the data directory's SQLite), fine-tune the shipped model into a
checkpoint the engine serves."""

import json
import time

import numpy as np
import torch

from cli.main import main
from model.checkpoint import load_checkpoint_payload
from model.inference import DEFAULT_CHECKPOINT, AnalysisEngine
from service.event_media.store import MediaStore
from service.live.events import LiveEventStore
from service.model_service import engine_config
from service.scene.store import FeedbackStore
from service.settings import ServiceSettings
from service.storage import Database
from tests.footage import encode_ped2_clip

# (verdict, operator category, event's dominant category, Ped2 clip, frames): bikes in testing clips 02 and 04
# from their first frames; normal walkers in training clips.
EVENTS = [
    ("confirmed", "Biking", None, "testing/frames/02", 48),
    ("confirmed", None, "Biking", "testing/frames/04", 48),
    ("false_alarm", None, "Vehicle", "training/frames/03", 48),
]


def _service_data_dir(root, events=EVENTS, expired=()):
    """A data directory as the service leaves it: closed live events, their ready clips, the verdicts."""
    db = Database(root / "refinevad.sqlite3")
    live, media, feedback = LiveEventStore(db), MediaStore(db, root / "media"), FeedbackStore(db)
    ids = []
    for i, (verdict, category, dominant, clip, frames) in enumerate(events):
        now = time.time()
        event_id = live.open("cam1", 10.0 * i, now, 0.9, stream_name="Hall", dominant=dominant)
        live.close(
            event_id,
            end_s=10.0 * i + 2,
            ended_at=now + 2,
            peak=0.9,
            mean=0.7,
            dominant=dominant,
            categories={dominant: 0.8} if dominant else {},
            reason="scores_below_exit",
        )
        media.create(event_id, "cam1")
        if i in expired:
            media.finish_clip(event_id, "expired")
        else:
            encoded = encode_ped2_clip(root / f"encode-{event_id}.mp4", clip, max_frames=frames)
            partial = media.partial_clip_path(event_id)
            encoded.replace(partial)
            assert media.save_clip(event_id, partial, "mp4v")
        feedback.put(event_id, verdict, category, 0)
        ids.append(event_id)
    db.close()
    return ids


def _train(data_dir, out, *extra):
    return main(
        [
            "train",
            "--from-feedback",
            str(data_dir),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--no-progress",
            *extra,
        ]
    )


def test_feedback_fine_tunes_a_checkpoint_the_engine_serves(tmp_path, capsys):
    data_dir = tmp_path / "data"
    ids = _service_data_dir(data_dir, [*EVENTS, ("false_alarm", None, None, "training/frames/05", 48)], {3})
    normal = encode_ped2_clip(tmp_path / "calibration.mp4", "training/frames/06", max_frames=64)
    out = tmp_path / "site"
    code = _train(
        data_dir,
        out,
        "--epochs",
        "2",
        "--min-per-class",
        "2",
        "--normal",
        str(normal),
        "--normal-chunk-s",
        "3.2",
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    best = out / "best.pt"
    assert summary["best_checkpoint"] == str(best) and summary["members"] == 5  # the shipped seed ensemble
    assert (out / "members" / "4" / "best.pt").is_file() and not (out / "members" / "4" / "last.pt").exists()
    feedback = summary["feedback"]
    assert feedback["confirmed_events"] == 2 and feedback["false_alarm_events"] == 1
    assert feedback["normal_footage_pieces"] == 2  # 64 frames = 4 snippets, pieces of 3.2 s = 2 snippets
    assert feedback["categories"] == {"Biking": 2}
    assert feedback["skipped_events"] == {str(ids[3]): "its clip is expired"}

    metadata = load_checkpoint_payload(best)["metadata"]
    assert metadata["trained_from"] == "operator_feedback" and metadata["trained"] is True
    assert metadata["feedback"]["confirmed_events"] == 2 and metadata["feedback"]["false_alarm_events"] == 1
    assert metadata["fine_tuned_from"]["checkpoint"] == "default.pt"
    assert metadata["ensemble"]["members"] == 5 and metadata["train_config"]["epochs"] == 2
    # The scene check of the result describes this site's clips.
    assert len(metadata["scene_familiarity"]["training_clip_distances"]) == 5

    # As the service builds its engine with REFINEVAD_MODEL_CHECKPOINT=OUT/best.pt.
    settings = ServiceSettings(data_dir=data_dir, model_checkpoint=best, device="cpu")
    engine = AnalysisEngine.from_config(engine_config(settings))
    assert engine.identity.checkpoint == "best.pt"
    assert engine.identity.trained and engine.identity.ensemble_members == 5
    assert engine.category_names == ["Biking", "Skateboarding", "Vehicle"]
    features = torch.from_numpy(np.load(out / "features" / "features" / f"event-{ids[0]}.npy"))
    scores = engine.run_head(features).scores
    assert scores.shape == (len(features),) and bool(torch.isfinite(scores).all())
    # Fine-tuned from the base model's weights: the heads moved, their input standardisation is the base's.
    base = load_checkpoint_payload(DEFAULT_CHECKPOINT)["state_dict"]
    tuned = load_checkpoint_payload(best)["state_dict"]
    for member in range(5):
        scorer, norm = f"members.{member}.core.scorer.weight", f"members.{member}.input_norm.mean"
        assert not torch.allclose(base[scorer].float(), tuned[scorer].float())
        assert torch.equal(base[norm].float(), tuned[norm].float())


def test_no_feedback_is_a_clear_error(tmp_path, caplog):
    _service_data_dir(tmp_path / "data", [])
    assert _train(tmp_path / "data", tmp_path / "out") == 2
    assert "no operator feedback" in caplog.text and "POST /events/{id}/feedback" in caplog.text
    assert _train(tmp_path / "nowhere", tmp_path / "out") == 2
    assert "no service database at" in caplog.text


def test_too_few_examples_of_a_class_say_how_many_and_why(tmp_path, caplog):
    _service_data_dir(tmp_path / "data", EVENTS, expired={1})
    assert _train(tmp_path / "data", tmp_path / "out") == 2
    text = caplog.text
    assert "too few examples to fine-tune: 1 anomalous (confirmed events) and 1 normal" in text
    assert "at least 4 of each" in text and "1: its clip is expired" in text
    assert not (tmp_path / "out" / "best.pt").exists()


def test_every_clip_missing_is_a_clear_error(tmp_path, caplog):
    _service_data_dir(tmp_path / "data", EVENTS, expired={0, 1, 2})
    assert _train(tmp_path / "data", tmp_path / "out", "--min-per-class", "2") == 2
    assert "0 anomalous (confirmed events) and 0 normal" in caplog.text
    assert "3 of 3 events with a verdict have no usable clip (3: its clip is expired)" in caplog.text


def test_a_category_the_base_model_does_not_know_is_refused(tmp_path, caplog):
    _service_data_dir(tmp_path / "data", [("confirmed", None, "Fighting", "testing/frames/02", 32)])
    assert _train(tmp_path / "data", tmp_path / "out") == 2
    assert "category 'Fighting', which the base model does not know" in caplog.text
    assert "['Biking', 'Skateboarding', 'Vehicle']" in caplog.text


def test_arguments_that_do_not_apply_are_refused(tmp_path, caplog):
    assert _train(tmp_path, tmp_path / "out", "--features", str(tmp_path)) == 2
    assert "leave out --features and --list" in caplog.text
    assert _train(tmp_path, tmp_path / "out", "--min-per-class", "1") == 2
    assert "--min-per-class must be at least 2" in caplog.text
    assert main(["train", "--out", str(tmp_path / "out")]) == 2
    assert "--from-feedback DATA_DIR" in caplog.text


def test_missing_normal_footage_is_named(tmp_path, caplog):
    _service_data_dir(tmp_path / "data", EVENTS[:1])
    missing = tmp_path / "normal.mp4"
    assert _train(tmp_path / "data", tmp_path / "out", "--normal", str(missing)) == 2
    assert f"normal footage {missing} does not exist" in caplog.text
