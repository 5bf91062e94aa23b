"""Benchmark evaluation: frame-level ground truth, ROC-AUC / AP / mAP@IoU, the per-method score folder."""

from model.evaluation.detection_map import IOU_THRESHOLDS, detection_map
from model.evaluation.ground_truth import (
    NORMAL,
    FrameGroundTruth,
    FrameLabels,
    VideoTruth,
    build_ground_truth,
    read_annotations,
)
from model.evaluation.metrics import compute_metrics
from model.evaluation.scores_folder import (
    ScoresFolder,
    read_scores_folder,
    write_category_names,
    write_video_scores,
)

__all__ = [
    "IOU_THRESHOLDS",
    "NORMAL",
    "FrameGroundTruth",
    "FrameLabels",
    "ScoresFolder",
    "VideoTruth",
    "build_ground_truth",
    "compute_metrics",
    "detection_map",
    "read_annotations",
    "read_scores_folder",
    "write_category_names",
    "write_video_scores",
]
