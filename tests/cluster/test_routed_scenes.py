"""An API replica's scene registry (`RoutedScenes`) while no live worker is up for the stream: it works on the
stored copy in the shared database and keeps none of it in memory, so the worker that runs the stream next loads
what it wrote. (With a worker up, every call goes to it: `test_cluster.py` checks that end to end.)"""

from __future__ import annotations

from pathlib import Path

from model.scene import SceneSettings
from service.cluster.scenes import RoutedScenes
from service.scene.registry import SceneRegistry
from service.scene.store import SceneStore
from service.storage import Database
from tests.model.scene.test_scene_model import SNIPPET_S, footage


def test_without_a_worker_the_stored_copy_is_changed_and_not_kept(tmp_path: Path) -> None:
    store = SceneStore(Database(tmp_path / "db.sqlite3"))
    settings = SceneSettings(learn_s=8 * SNIPPET_S)
    replica = RoutedScenes(store, settings, lambda stream_id: None)
    normal = footage(10, seed=1)

    learned = replica.learn("cam", normal[:5], 5 * SNIPPET_S)
    assert learned.state == "learning" and learned.snippets_learned == 5
    assert replica._cameras == {}  # nothing kept: it would go stale beside the worker's copy
    # The worker that runs the stream next (here: a plain registry on the same database) loads it.
    worker = SceneRegistry(store, settings)
    assert worker.status("cam").snippets_learned == 5

    listed = replica.stored_status("cam")
    assert listed.snippets_learned == 5
    worker.learn("cam", normal[5:], 5 * SNIPPET_S)  # the worker saves: the listing follows
    assert replica.stored_status("cam").state == "calibrated"
    assert replica.status("cam").snippets_learned == 10

    assert replica.forget("cam")
    assert replica.status("cam").state == "none" and replica.stored_status("cam").state == "none"
    assert replica._cameras == {}
