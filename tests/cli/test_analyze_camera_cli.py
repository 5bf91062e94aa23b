"""`refinevad analyze --camera`: a file scored with a camera's stored scene model, as `POST /analyze?camera=`."""

import json

import numpy as np

from cli.main import main
from model.scene import SceneDescriptor, SceneModel, SceneSettings
from service.scene.store import SceneStore
from service.storage import Database
from tests.footage import encode_ped2_clip, ped2_frame_files


def _store_camera(data_dir, stream_id: str) -> None:
    import cv2

    frames = np.stack([cv2.imread(str(f))[..., ::-1] for f in ped2_frame_files("training/frames/01", 96)])
    regions = SceneDescriptor().describe(frames.reshape(6, 16, *frames.shape[1:]))
    model = SceneModel(SceneSettings(learn_s=5.0))
    model.learn(regions, 9.6)
    db = Database(data_dir / "refinevad.sqlite3")
    SceneStore(db).save(stream_id, model.state, model.to_bytes())
    db.close()


def test_analyze_with_a_camera_reports_scene_and_fused_scores(tmp_path, capsys, caplog) -> None:
    _store_camera(tmp_path, "cam1")
    video = encode_ped2_clip(tmp_path / "clip.mp4", "testing/frames/02", max_frames=64)
    args = ["analyze", str(video), "--device", "cpu", "--json", "-", "--data-dir", str(tmp_path)]
    assert main([*args, "--camera", "cam1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["camera"] == "cam1" and result["camera_scene"]["state"] == "calibrated"
    snippets = result["snippets"]
    assert snippets and all(s["scene_score"] is not None and s["head_score"] is not None for s in snippets)
    # A camera with no stored scene model is a clear error, not a silent plain analysis.
    assert main([*args, "--camera", "nobody"]) == 2
    assert "no scene model stored for 'nobody'" in caplog.text
