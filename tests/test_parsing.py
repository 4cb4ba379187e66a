"""BiSeNet face parser: loading published-style weights files and building masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from faceveil.faces import parsing
from faceveil.identity import WeightsError


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("parser") / "79999_iter.pth"
    torch.save(parsing.BiSeNet().state_dict(), path)
    return path


def test_state_dict_follows_the_published_naming():
    state = parsing.BiSeNet().state_dict()
    for k in ("cp.resnet.conv1.weight", "cp.resnet.layer4.1.bn2.running_var",
              "cp.resnet.layer2.0.downsample.0.weight", "cp.arm16.conv.conv.weight",
              "cp.arm32.conv_atten.weight", "cp.arm32.bn_atten.bias", "cp.conv_head32.bn.weight",
              "cp.conv_avg.conv.weight", "ffm.convblk.conv.weight", "ffm.conv1.weight",
              "ffm.conv2.weight", "conv_out.conv.conv.weight", "conv_out.conv_out.weight",
              "conv_out16.conv_out.weight", "conv_out32.conv.bn.running_mean"):
        assert k in state, k
    assert not any(k.startswith("sp.") for k in state)  # the release has no spatial path
    assert "cp.resnet.layer1.0.downsample.0.weight" not in state
    assert state["conv_out.conv_out.weight"].shape == (19, 256, 1, 1)
    # 79999_iter.pth holds 13.3 M parameters.
    n = sum(v.numel() for k, v in state.items() if not k.endswith("num_batches_tracked"))
    assert n == pytest.approx(13.3e6, rel=0.01)


def test_load_parser_from_a_random_weights_file(weights_file):
    net = parsing.load_parser(weights_file)
    assert not net.training
    ref = parsing.BiSeNet()
    ref.load_state_dict(torch.load(weights_file, weights_only=True))
    ref.eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(net(x), ref(x))
    crop = np.random.default_rng(0).random((48, 48, 3)).astype(np.float32) * 255
    labels = parsing.parse_labels(net, crop)
    assert labels.shape == (48, 48) and labels.dtype == np.uint8 and labels.max() < 19
    mask = parsing.parse_mask(net, crop)
    assert mask.shape == (48, 48) and mask.dtype == np.float32
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert np.array_equal(mask, np.isin(labels, [1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14]))


def test_loader_accepts_wrapped_and_old_checkpoints(weights_file, tmp_path):
    state = torch.load(weights_file, weights_only=True)
    old = {f"module.{k}": v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": old}, path)
    net = parsing.load_parser(path)
    assert torch.equal(net.state_dict()["ffm.convblk.conv.weight"],
                       state["ffm.convblk.conv.weight"])


def test_loader_reads_a_resnet34_trunk(tmp_path):
    path = tmp_path / "r34.pth"
    torch.save(parsing.BiSeNet(blocks=(3, 4, 6, 3)).state_dict(), path)
    net = parsing.load_parser(path)
    assert len(net.cp.resnet.layer3) == 6


def test_loader_rejects_other_weights(tmp_path, weights_file):
    other = tmp_path / "other.pth"
    torch.save(nn.Linear(3, 4).state_dict(), other)
    with pytest.raises(WeightsError, match="not BiSeNet"):
        parsing.load_parser(other)
    state = torch.load(weights_file, weights_only=True)
    state["conv_out.conv_out.weight"] = torch.zeros(11, 256, 1, 1)
    torch.save(state, tmp_path / "11.pth")
    with pytest.raises(WeightsError, match="11-class"):
        parsing.load_parser(tmp_path / "11.pth")
    del state["ffm.conv1.weight"]
    state["conv_out.conv_out.weight"] = torch.zeros(19, 256, 1, 1)
    torch.save(state, tmp_path / "cut.pth")
    with pytest.raises(WeightsError, match="missing: ffm.conv1.weight"):
        parsing.load_parser(tmp_path / "cut.pth")


class Painter(nn.Module):
    """A stand-in parser that labels horizontal bands of its input with given classes."""

    def __init__(self, bands: list[str]) -> None:
        super().__init__()
        self.bands = [parsing.CLASSES.index(b) for b in bands]
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        out = torch.zeros(n, len(parsing.CLASSES), h, w)
        for i, c in enumerate(self.bands):
            out[:, c, i * h // len(self.bands) : (i + 1) * h // len(self.bands)] = 1.0
        return out


def test_mask_keeps_the_face_classes_and_leaves_hair_and_background():
    bands = ["hair", "skin", "l_eye", "nose", "u_lip", "neck", "cloth", "background"]
    crop = np.zeros((64, 64, 3), np.float32)
    mask = parsing.parse_mask(Painter(bands), crop)
    rows = mask.mean(axis=1)
    expect = np.repeat([0, 1, 1, 1, 1, 1, 0, 0], 8).astype(np.float32)
    assert np.array_equal(rows, expect)
    # A sharp 256 px crop parsed for a 32 px model: same bands at the model's size.
    small = parsing.parse_mask(Painter(bands), np.zeros((256, 256, 3), np.float32), size=32)
    assert np.array_equal(small.mean(axis=1), np.repeat(expect[::8], 4))
    hat = parsing.parse_mask(Painter(["hat", "eye_g", "ear_r", "r_ear"]), crop)
    assert np.array_equal(hat.mean(axis=1), np.repeat([0, 1, 0, 1], 16).astype(np.float32))
    with pytest.raises(ValueError):
        parsing.parse_mask(Painter(["skin"]), crop, keep=("beard",))
