from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from skimage import data
from timm.data import ImageNetInfo

from model.backbones.efficientnet import (
    FEATURE_CHANNELS,
    LAYER_CHANNELS,
    EfficientNetLite0Backbone,
    _timm_state_dict,
    architecture_string,
    build_classifier,
    packaged_weights_path,
    parse_architecture,
    pool_feature_map,
    sampled_frame_indices,
)
from model.backbones.identity import BackboneIdentity
from model.backbones.registry import BackboneConfig, config_for_identity, load_backbone
from model.backbones.two_stream import TwoStreamBackbone
from model.checkpoint import file_sha256

WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


@pytest.fixture(scope="module")
def classifier() -> torch.nn.Module:
    return build_classifier()[0]


def _imagenet_input(image: np.ndarray) -> torch.Tensor:
    """The classic ImageNet evaluation view (shorter side 256, centre 224 crop), TF's [-1, 1] scaling."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    h, w = x.shape[-2:]
    scale = 256 / min(h, w)
    x = F.interpolate(x, size=(round(h * scale), round(w * scale)), mode="bicubic", antialias=True)
    x = x.clamp(0, 255)
    top, left = (x.shape[-2] - 224) // 2, (x.shape[-1] - 224) // 2
    return x[..., top : top + 224, left : left + 224] / 127.5 - 1.0


@pytest.mark.parametrize(
    ("photo", "accepted"),
    [
        ("chelsea", {"tabby, tabby cat", "tiger cat", "Egyptian cat"}),
        ("coffee", {"espresso", "cup", "coffee mug"}),
        ("rocket", {"missile", "projectile, missile", "space shuttle"}),
    ],
)
def test_packaged_weights_classify_real_photographs(classifier, photo: str, accepted: set[str]) -> None:
    """The mapped weights are the real ImageNet model: photographs that scikit-image ships land in their class."""
    with torch.no_grad():
        probs = classifier(_imagenet_input(getattr(data, photo)())).softmax(-1)[0]
    info = ImageNetInfo()
    top1 = info.index_to_description(int(probs.argmax()))
    assert top1 in accepted, f"{photo}: top-1 {top1!r} ({float(probs.max()):.2f})"


def test_random_weights_do_not_classify_the_photographs() -> None:
    """The classification test can fail: the same network without the packaged weights gets the cat wrong."""
    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    with torch.no_grad():
        probs = model(_imagenet_input(data.chelsea())).softmax(-1)[0]
    cats = {"tabby, tabby cat", "tiger cat", "Egyptian cat"}
    assert ImageNetInfo().index_to_description(int(probs.argmax())) not in cats


def test_every_tensor_maps_one_to_one() -> None:
    source = torch.load(packaged_weights_path(), map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    mapped = _timm_state_dict(source, model)
    assert len(source) == len(mapped) == len(model.state_dict()) == 296
    # Renaming only: the values are the package's own tensors.
    assert torch.equal(mapped["blocks.0.0.conv_dw.weight"], source["_blocks.0._depthwise_conv.weight"])
    assert torch.equal(mapped["blocks.6.0.conv_pwl.weight"], source["_blocks.15._project_conv.weight"])
    broken = dict(source)
    broken.pop("_blocks.3._bn2.bias")
    with pytest.raises(ValueError, match="missing"):
        _timm_state_dict(broken, model)
    with pytest.raises(ValueError, match="unexpected"):
        _timm_state_dict(source | {"_blocks.3._se_reduce.weight": torch.zeros(1)}, model)


def test_identity_records_weights_hash_and_options() -> None:
    assert file_sha256(packaged_weights_path()) == WEIGHTS_SHA256
    backbone = EfficientNetLite0Backbone(size=96, frames=2, pooling="max")
    ident = backbone.identity
    assert ident.name == "efficientnet_lite0" and ident.weights == f"sha256:{WEIGHTS_SHA256}"
    assert parse_architecture(ident.architecture) == {
        "size": 96,
        "frames": 2,
        "pooling": "max",
        "layer": "blocks",
    }
    assert config_for_identity(ident).appearance_pooling == "max"
    with pytest.raises(ValueError, match="malformed"):
        parse_architecture("tf_efficientnet_lite0/size=big/frames=2/pool=max")
    with pytest.raises(ValueError, match="no registered backbone"):
        config_for_identity(BackboneIdentity(name="i3d", architecture="x", weights="y", dim=1024))


def test_pooling_shapes_and_meaning() -> None:
    fmap = torch.zeros(2, FEATURE_CHANNELS, 8, 12)
    fmap[0, 0, 1, 1] = 6.0  # one small bright object (one cell of 96)
    avg, mx, gem = (pool_feature_map(fmap, p) for p in ("avg", "max", "gem"))
    grid = pool_feature_map(fmap, "grid2")
    assert avg.shape == mx.shape == gem.shape == (2, FEATURE_CHANNELS) and grid.shape == (
        2,
        4 * FEATURE_CHANNELS,
    )
    # GeM sits between the mean and the max: a small object stands out more than under average pooling.
    assert float(avg[0, 0]) < float(gem[0, 0]) < float(mx[0, 0]) == 6.0
    assert float(grid[0, 0]) > 0 and float(grid[0, FEATURE_CHANNELS]) == 0  # top-left cell only
    with pytest.raises(ValueError, match="unknown pooling"):
        pool_feature_map(fmap, "median")


def test_snippets_keep_aspect_and_subsample_frames() -> None:
    backbone = EfficientNetLite0Backbone(size=64, frames=3, pooling="avg", layer="head")
    frames = np.random.default_rng(0).integers(0, 255, (2, 16, 48, 96, 3), dtype=np.uint8)
    x = backbone.preprocess(torch.from_numpy(frames[0, :1]))
    assert tuple(x.shape) == (1, 3, 64, 128) and float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    assert sampled_frame_indices(16, 3).tolist() == [0, 8, 15] and sampled_frame_indices(2, 4).tolist() == [
        0,
        1,
    ]
    out = backbone.encode_snippets(frames)
    assert out.shape == (2, FEATURE_CHANNELS) and out.dtype == torch.float32
    # Only the sampled frames count: changing an unsampled frame changes nothing.
    other = frames.copy()
    other[:, 3] = 0
    assert torch.allclose(backbone.encode_snippets(other), out)
    # A snippet's feature depends on its own frames only (batching is safe).
    assert torch.allclose(backbone.encode_snippets(frames[1:]), out[1:], atol=1e-5)


def test_two_stream_concatenates_appearance_and_motion() -> None:
    backbone = load_backbone(
        BackboneConfig(name="two_stream", appearance_size=64, appearance_frames=2), "cpu"
    )
    assert isinstance(backbone, TwoStreamBackbone)
    frames = np.random.default_rng(1).integers(0, 255, (3, 16, 60, 80, 3), dtype=np.uint8)
    out = backbone.encode_snippets(frames)
    assert out.shape == (3, backbone.dim) and backbone.dim == LAYER_CHANNELS["blocks"] + backbone.motion.dim
    blocks = backbone.blocks
    assert torch.allclose(out[:, blocks["appearance"]], backbone.appearance.encode_snippets(frames))
    assert torch.allclose(out[:, blocks["motion"]], backbone.motion.encode_snippets(frames))
    rebuilt = config_for_identity(backbone.identity)
    assert (rebuilt.name, rebuilt.appearance_size, rebuilt.appearance_frames) == ("two_stream", 64, 2)
    assert architecture_string(64, 2, "max", "blocks") in backbone.identity.architecture
    with pytest.raises(ValueError, match="text_captions needs the clip backbone"):
        load_backbone(BackboneConfig(name="two_stream", text_captions="c.json"), "cpu")


def test_blocks_layer_is_the_last_stage_before_the_head_conv() -> None:
    backbone = EfficientNetLite0Backbone(size=64, frames=1, pooling="avg", layer="blocks")
    frames = torch.from_numpy(np.random.default_rng(2).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8))
    net = backbone.network
    with torch.no_grad():
        expected = net.blocks(net.bn1(net.conv_stem(backbone.preprocess(frames)))).mean(dim=(2, 3))
        head_map = net.bn2(net.conv_head(net.blocks(net.bn1(net.conv_stem(backbone.preprocess(frames))))))
    assert backbone.dim == 320 and torch.allclose(backbone.encode_frames(frames), expected, atol=1e-5)
    # timm's own forward_features ends at the head conv: the 'head' layer is exactly that map.
    assert torch.allclose(net.forward_features(backbone.preprocess(frames)), head_map, atol=1e-5)
