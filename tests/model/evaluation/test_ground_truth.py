import json

import numpy as np
import pytest

from model.evaluation.ground_truth import (
    NORMAL,
    FrameLabels,
    VideoTruth,
    build_ground_truth,
    parse_annotation_line,
    read_annotations,
    read_xd_annotations,
    runs_of_ones,
)
from tests.shared_data import PED2_ROOT, UCF_CRIME_ROOT

UCF = UCF_CRIME_ROOT
PED2_LABELS = PED2_ROOT / "test_frame_labels.json"
needs_ucf = pytest.mark.skipif(
    not (UCF / "test_annotations.txt").is_file(), reason="UCF-Crime annotations absent"
)


@needs_ucf
def test_real_ucf_crime_ground_truth_matches_the_standard_vector():
    truth = read_annotations(UCF / "test_annotations.txt")
    assert len(truth) == 290
    assert sum(t.is_anomalous for t in truth) == 140
    assert len({t.category for t in truth if t.is_anomalous}) == 13
    gt = build_ground_truth(truth)  # reference rule: T_i = ceil(N_i / 16), L_i = min(16 T_i, N_i) = N_i
    assert gt.labels.size == 1_111_808
    assert int(gt.labels.sum()) == 84_182
    assert int(gt.labels[gt.frame_mask(~gt.anomalous_video_mask)].sum()) == 0
    # The annotation file's first video: Arson022, 8640 frames, anomalous on [3500, 4000).
    first = gt.labels[: gt.offsets[1]]
    assert (
        first.size == 8640
        and first.sum() == 500
        and first[3500] == 1
        and first[3499] == 0
        and first[4000] == 0
    )


@needs_ucf
def test_official_temporal_annotation_has_same_intervals():
    with_counts = {t.name: t for t in read_annotations(UCF / "test_annotations.txt")}
    official = read_annotations(UCF / "Temporal_Anomaly_Annotation.txt")
    assert len(official) == 290
    for t in official:
        assert t.num_frames is None
        assert t.intervals == with_counts[t.name].intervals
        assert t.category == with_counts[t.name].category


def test_parse_both_line_formats():
    a = parse_annotation_line("Arson/Arson022_x264.mp4 8640 Arson 3500 4000 -1 -1")
    assert a == VideoTruth("Arson022_x264", "Arson", ((3500, 4000),), 8640)
    b = parse_annotation_line("Abuse028_x264  Abuse  165  240  300  310")
    assert b == VideoTruth("Abuse028_x264", "Abuse", ((165, 240), (300, 310)), None)
    n = parse_annotation_line(
        "Testing_Normal_Videos_Anomaly/Normal_Videos_872_x264.mp4 530 Normal -1 -1 -1 -1"
    )
    assert n.category == NORMAL and not n.is_anomalous and n.intervals == ()
    with pytest.raises(ValueError):
        parse_annotation_line("x 10 Cat 1 2 3")


def test_length_rule_uses_own_snippet_count_and_clips_to_frame_count():
    video = VideoTruth("v", "Cat", ((30, 90),), num_frames=50)
    assert video.reference_snippets() == 4
    assert video.length(4) == 50  # 64 snippet frames cut to the 50 real ones
    assert video.length(2) == 32  # a release one snippet shorter: ground truth built at its own length
    assert video.frame_labels(50).sum() == 20  # [30, 90) clipped to [30, 50)
    assert video.frame_labels(32).sum() == 2
    no_count = VideoTruth("w", "Cat", ((0, 5),))
    assert no_count.length(3) == 48


def test_build_ground_truth_with_own_snippet_counts():
    truth = [VideoTruth("a", "Cat", ((10, 20),), 40), VideoTruth("b", NORMAL, (), 100)]
    gt = build_ground_truth(truth, {"a": 3, "b": 2})
    assert gt.offsets.tolist() == [0, 40, 72]
    assert gt.labels[10:20].all() and gt.labels.sum() == 10
    assert gt.anomalous_video_mask.tolist() == [True, False]
    with pytest.raises(KeyError):
        build_ground_truth(truth, {"a": 3})


def test_runs_of_ones():
    assert runs_of_ones(np.array([0, 1, 1, 0, 1])) == [(1, 3), (4, 5)]
    assert runs_of_ones(np.array([1, 1])) == [(0, 2)]
    assert runs_of_ones(np.zeros(3)) == []


def test_frame_labels_to_truth(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text(json.dumps({"description": "x", "frames": {"01": [0, 1, 1, 0], "02": [0, 0, 0]}}))
    labels = FrameLabels.load(path, categories={"01": "Biking"})
    truth = labels.to_truth()
    assert truth[0] == VideoTruth("01", "Biking", ((1, 3),), 4)
    assert truth[1] == VideoTruth("02", NORMAL, (), 3)
    gt = build_ground_truth(truth)
    assert gt.labels.tolist() == [0, 1, 1, 0, 0, 0, 0]
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"x": [1, 0]}))
    assert FrameLabels.load(plain).to_truth()[0].category == "Anomaly"


@pytest.mark.skipif(not PED2_LABELS.is_file(), reason="Ped2 labels absent")
def test_ped2_frame_labels_round_trip():
    labels = FrameLabels.load(PED2_LABELS)
    truth = labels.to_truth()
    assert len(truth) == 12
    gt = build_ground_truth(truth)
    assert gt.labels.size == sum(len(v) for v in labels.frames.values())
    assert int(gt.labels.sum()) == sum(sum(v) for v in labels.frames.values())


def test_xd_violence_annotations(tmp_path):
    path = tmp_path / "annotations.txt"
    path.write_text("Fight.Club__#00-01_label_B1-0-0 10 40 100 120\nBomb_label_G-B2-0.mp4 0 16\n")
    names = ["Fight.Club__#00-01_label_B1-0-0", "Calm.Movie_label_A", "Bomb_label_G-B2-0"]
    fight, calm, bomb = read_xd_annotations(path, names)
    assert (
        fight.category == "Fighting"
        and fight.intervals == ((10, 40), (100, 120))
        and fight.num_frames is None
    )
    assert calm.category == NORMAL and calm.intervals == ()
    assert bomb.category == "Explosion" and bomb.intervals == ((0, 16),)
    with pytest.raises(ValueError, match="not in the test set"):
        read_xd_annotations(path, names[:2])
    with pytest.raises(ValueError, match="no interval"):
        read_xd_annotations(path, [*names, "Other_label_B4-0-0"])
