"""`refinevad train`, `evaluate` and `evaluate-scores` on synthetic features, through the real CLI entry point."""

import json

import numpy as np
import pytest

from cli.main import main
from model.backbones.identity import BackboneIdentity
from model.data.feature_store import FeatureStore, VideoEntry
from model.data.synthetic import SyntheticGenerator, SyntheticSpec

MODEL = json.dumps({"transformer_ff": 64, "proj_dim": 64, "emb_dim": 16, "classifier_hidden": 32})
TRAIN = json.dumps({"threads": 1, "val_fraction": 0.2})


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    gen = SyntheticGenerator(SyntheticSpec(dim=16))
    gen.write_store(root / "train", 16, 16, seed=1, prefix="train")
    _, labels = gen.write_store(root / "test", 6, 6, seed=2, prefix="test")
    (root / "labels.json").write_text(labels.model_dump_json())
    return root


def run_json(argv, capsys):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_train_evaluate_and_evaluate_scores_agree(stores, tmp_path, capsys):
    out = tmp_path / "run"
    summary = run_json(
        [
            "train",
            "--features",
            str(stores / "train"),
            "--out",
            str(out),
            "--epochs",
            "3",
            "--batch-size",
            "8",
            "--model-config",
            MODEL,
            "--train-config",
            TRAIN,
            "--no-progress",
        ],
        capsys,
    )
    assert summary["epochs_run"] == 3 and (out / "best.pt").is_file()
    metrics = run_json(
        [
            "evaluate",
            str(out / "best.pt"),
            "--features",
            str(stores / "test"),
            "--frame-labels",
            str(stores / "labels.json"),
            "--scores-out",
            str(tmp_path / "scores"),
            "--json",
        ],
        capsys,
    )
    assert metrics["num_videos"] == 12 and 0 <= metrics["auc"] <= 1
    assert set(metrics["map_iou"]) == {"0.1", "0.2", "0.3", "0.4", "0.5", "avg"}
    again = run_json(
        [
            "evaluate-scores",
            "--scores",
            str(tmp_path / "scores"),
            "--frame-labels",
            str(stores / "labels.json"),
            "--json",
        ],
        capsys,
    )
    for key in ("auc", "ano_auc", "ap", "ap_trapz", "map_iou", "num_frames"):
        assert again[key] == pytest.approx(metrics[key], abs=1e-6)
    # Resume after completion trains nothing more but reports the same best epoch.
    resumed = run_json(
        [
            "train",
            "--features",
            str(stores / "train"),
            "--out",
            str(out),
            "--epochs",
            "3",
            "--batch-size",
            "8",
            "--model-config",
            MODEL,
            "--train-config",
            TRAIN,
            "--no-progress",
            "--resume",
        ],
        capsys,
    )
    assert resumed["best_epoch"] == summary["best_epoch"] and resumed["epochs_run"] == 3


def test_evaluate_refuses_another_backbone(stores, tmp_path, capsys):
    out = tmp_path / "run"
    main(
        [
            "train",
            "--features",
            str(stores / "train"),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--model-config",
            MODEL,
            "--train-config",
            TRAIN,
            "--no-progress",
        ]
    )
    capsys.readouterr()
    other = FeatureStore.create_or_open(
        tmp_path / "other",
        BackboneIdentity(name="open_clip", architecture="ViT-B-16", weights="openai", dim=16),
    )
    other.add(VideoEntry(name="v", label=0, num_frames=32, fps=30, num_snippets=2), np.zeros((2, 16)))
    with pytest.raises(ValueError, match="backbone mismatch"):
        main(["evaluate", str(out / "best.pt"), "--features", str(tmp_path / "other"), "--json"])


def test_public_release_list_train_and_evaluate(tmp_path, capsys):
    """A VadCLIP-style release: CSV of absolute foreign paths, crops __0/__1, UCF-Crime labels."""
    spec = SyntheticSpec(dim=16, category_names=["Abuse", "Arson", "Fighting"])
    gen = SyntheticGenerator(spec)
    feats = tmp_path / "UCFClipFeatures"
    rows = ["path,label"]
    for split, n, seed in (("train", 12, 1), ("test", 4, 2)):
        lines = ["path,label"]
        for video in gen.videos(n, n, seed=seed, prefix=split):
            folder = video.category or "Testing_Normal_Videos_Anomaly"
            crops = (0, 1) if split == "train" else (5,)
            for k in crops:
                path = feats / folder / f"{video.name}__{k}.npy"
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(path, video.features + 0.01 * k)
                lines.append(
                    f"/home/releaser/UCFClipFeatures/{folder}/{video.name}__{k}.npy,{video.category or 'Normal'}"
                )
            if split == "test":
                frames = 16 * len(video.snippet_labels) - 5
                on = np.flatnonzero(video.snippet_labels)
                interval = f"{16 * on[0]} {16 * (on[-1] + 1)}" if on.size else "-1 -1"
                rows.append(
                    f"{folder}/{video.name}.mp4 {frames} {video.category or 'Normal'} {interval} -1 -1"
                )
        (tmp_path / f"{split}.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "annotations.txt").write_text("\n".join(rows[1:]) + "\n")
    out = tmp_path / "run"
    summary = run_json(
        [
            "train",
            "--list",
            str(tmp_path / "train.csv"),
            "--root",
            str(feats),
            "--out",
            str(out),
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--model-config",
            MODEL,
            "--train-config",
            TRAIN,
            "--no-progress",
        ],
        capsys,
    )
    assert summary["epochs_run"] == 2
    metrics = run_json(
        [
            "evaluate",
            str(out / "best.pt"),
            "--list",
            str(tmp_path / "test.csv"),
            "--root",
            str(feats),
            "--annotations",
            str(tmp_path / "annotations.txt"),
            "--exclude-normal",
            "--json",
        ],
        capsys,
    )
    assert metrics["num_videos"] == 8
    assert metrics["map_iou_classes"].startswith("anomaly categories only")
    assert metrics["num_frames"] == sum(int(r.split()[1]) for r in rows[1:])


def test_ablate_cli_writes_table(stores, tmp_path, capsys):
    assert (
        main(
            [
                "ablate",
                "--features",
                str(stores / "train"),
                "--test-features",
                str(stores / "test"),
                "--frame-labels",
                str(stores / "labels.json"),
                "--out",
                str(tmp_path / "ablation"),
                "--variants",
                "base,+motar",
                "--seeds",
                "1",
                "--epochs",
                "1",
                "--model-config",
                MODEL,
                "--train-config",
                json.dumps({"threads": 1, "val_fraction": 0.2, "batch_size": 8}),
                "--no-progress",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "| base |" in table and "| +motar |" in table
    assert (tmp_path / "ablation" / "ablation.md").read_text() == table.rstrip("\n") + "\n"


def test_evaluate_scores_xd_violence(tmp_path, capsys):
    from model.evaluation.scores_folder import write_video_scores

    names = {
        "Fight_label_B1-0-0": [0.1, 0.9, 0.9, 0.1],
        "Calm_label_A": [0.2, 0.2],
        "Crash_label_B6-0-0": [0.8, 0.3],
    }
    for name, scores in names.items():
        write_video_scores(tmp_path / "scores", name, np.array(scores))
    (tmp_path / "ann.txt").write_text("Fight_label_B1-0-0 16 48\nCrash_label_B6-0-0 0 16\n")
    metrics = run_json(
        [
            "evaluate-scores",
            "--scores",
            str(tmp_path / "scores"),
            "--xd-annotations",
            str(tmp_path / "ann.txt"),
            "--json",
        ],
        capsys,
    )
    assert metrics["num_videos"] == 3 and metrics["num_frames"] == 16 * 8
    assert metrics["ap"] == pytest.approx(1.0) and metrics["auc"] == pytest.approx(1.0)
