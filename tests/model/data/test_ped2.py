from __future__ import annotations

import numpy as np
import pytest

from model.data.ped2 import Ped2Dataset, clip_name
from tests.footage import PED2_ROOT


@pytest.fixture(scope="module")
def ped2() -> Ped2Dataset:
    return Ped2Dataset(PED2_ROOT)


def test_split_lists_clips_with_labels_and_categories(ped2: Ped2Dataset) -> None:
    train, test = ped2.split("train"), ped2.split("test")
    assert (len(train), len(test)) == (18, 10)
    assert sum(c.label for c in train) == 6 and sum(c.label for c in test) == 6
    assert ped2.category_names == ["Biking", "Skateboarding", "Vehicle"]
    cart = ped2.clips["testing_04"]
    assert (cart.split, cart.label, cart.category, cart.folder) == (
        "train",
        1,
        "Vehicle",
        "testing/frames/04",
    )
    assert ped2.clips["training_13"].split == "test" and ped2.clips["training_13"].category is None
    assert ped2.fps == 10.0
    assert not {c.name for c in train} & {c.name for c in test}


def test_frame_labels_of_test_clips(ped2: Ped2Dataset) -> None:
    skate = ped2.frame_labels("testing_12")
    assert skate.dtype == np.uint8 and len(skate) == ped2.frame_count("testing_12") == 180
    assert 0 < skate.sum() < len(skate)
    normal = ped2.frame_labels("training_14")
    assert len(normal) == ped2.frame_count("training_14") and not normal.any()
    with pytest.raises(ValueError, match="video-level"):
        ped2.frame_labels("testing_01")  # a training-split clip: frame labels must not be used


def test_clip_names() -> None:
    assert clip_name("testing/frames/07") == "testing_07"
    with pytest.raises(ValueError):
        clip_name("frames/07")
