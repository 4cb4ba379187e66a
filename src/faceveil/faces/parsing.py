"""Facial masks from a face parser: BiSeNet trained on CelebAMask-HQ (19 classes).

The network is the one of face-parsing.PyTorch (whose released weights are
``79999_iter.pth``), defined here in plain torch with the same module names, so that
file loads as it is: a ResNet18 context path with attention refinement at 1/16 and
1/32, the 1/8 ResNet features in place of a separate spatial path (as in that release),
a feature fusion module and three output heads. A ResNet34 trunk (the paper authors'
variant) loads too: the number of blocks per stage is read from the weights.

The mask keeps the classes METHOD.md lists: skin, brows, eyes, eyeglasses, ears, nose,
mouth, lips and neck; hair, hat, clothes, jewellery and background stay out.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..identity import WeightsError, blocks_per_stage, load_into, load_state_dict

CLASSES = (
    "background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear",
    "ear_r", "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat",
)
FACE_CLASSES = ("skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear",
                "nose", "mouth", "u_lip", "l_lip", "neck")
INPUT_SIZE = 512
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class ConvBNReLU(nn.Module):
    """Convolution (no bias), batch norm, ReLU."""

    def __init__(self, cin: int, cout: int, ks: int = 3, stride: int = 1,
                 padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, ks, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convolutions) with a projected shortcut when needed."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if cin != cout or stride != 1:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    """ResNet trunk returning the 1/8, 1/16 and 1/32 feature maps (128, 256, 512 ch)."""

    def __init__(self, blocks: Sequence[int] = (2, 2, 2, 2)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for i, (n, cout) in enumerate(zip(blocks, (64, 128, 256, 512), strict=True)):
            stride = 1 if i == 0 else 2
            layer = [BasicBlock(cin, cout, stride)] + [BasicBlock(cout, cout)
                                                       for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
            cin = cout

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)
        feat8 = self.layer2(self.layer1(x))
        feat16 = self.layer3(feat8)
        return feat8, feat16, self.layer4(feat16)


def _global_pool(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=(2, 3), keepdim=True)


class AttentionRefinementModule(nn.Module):
    """Features reweighted per channel by their own global context."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, cout)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        return feat * torch.sigmoid(self.bn_atten(self.conv_atten(_global_pool(feat))))


class ContextPath(nn.Module):
    """ResNet features with attention refinement, fused top-down to 1/8 and 1/16."""

    def __init__(self, blocks: Sequence[int] = (2, 2, 2, 2)) -> None:
        super().__init__()
        self.resnet = ResNet(blocks)
        self.arm16 = AttentionRefinementModule(256, 128)
        self.arm32 = AttentionRefinementModule(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128)
        self.conv_head16 = ConvBNReLU(128, 128)
        self.conv_avg = ConvBNReLU(512, 128, ks=1, padding=0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feat8, feat16, feat32 = self.resnet(x)
        avg = self.conv_avg(_global_pool(feat32))
        feat32_sum = self.arm32(feat32) + avg  # broadcasting = nearest upsampling of 1x1
        feat32_up = self.conv_head32(F.interpolate(feat32_sum, feat16.shape[2:], mode="nearest"))
        feat16_sum = self.arm16(feat16) + feat32_up
        feat16_up = self.conv_head16(F.interpolate(feat16_sum, feat8.shape[2:], mode="nearest"))
        return feat8, feat16_up, feat32_up


class FeatureFusionModule(nn.Module):
    """Concatenated spatial and context features, with channel attention added back."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.convblk = ConvBNReLU(cin, cout, ks=1, padding=0)
        self.conv1 = nn.Conv2d(cout, cout // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(cout // 4, cout, 1, bias=False)

    def forward(self, fsp: torch.Tensor, fcp: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([fsp, fcp], dim=1))
        atten = torch.sigmoid(self.conv2(F.relu(self.conv1(_global_pool(feat)))))
        return feat * atten + feat


class BiSeNetOutput(nn.Module):
    """3x3 conv-BN-ReLU then a 1x1 classifier."""

    def __init__(self, cin: int, mid: int, n_classes: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, mid)
        self.conv_out = nn.Conv2d(mid, n_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """The face parser; ``forward`` returns class logits at the input's resolution.

    ``conv_out16`` and ``conv_out32`` are training-time auxiliary heads; they are kept so
    the published weights load strictly, and are not evaluated.
    """

    def __init__(self, n_classes: int = 19, blocks: Sequence[int] = (2, 2, 2, 2)) -> None:
        super().__init__()
        self.cp = ContextPath(blocks)
        self.ffm = FeatureFusionModule(256, 256)
        self.conv_out = BiSeNetOutput(256, 256, n_classes)
        self.conv_out16 = BiSeNetOutput(128, 64, n_classes)
        self.conv_out32 = BiSeNetOutput(128, 64, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat8, feat_cp8, _ = self.cp(x)
        out = self.conv_out(self.ffm(feat8, feat_cp8))
        return F.interpolate(out, x.shape[2:], mode="bilinear", align_corners=True)


def load_parser(weights_file: str | Path, device: str = "cpu") -> BiSeNet:
    """A BiSeNet face parser with the weights of ``weights_file`` (e.g. ``79999_iter.pth``),
    in eval mode.

    Raises:
        WeightsError: the file is missing, unreadable, or not BiSeNet face-parser weights.
    """
    state = load_state_dict(weights_file)
    blocks = blocks_per_stage(state, "cp.resnet.", "BiSeNet face-parser")
    head = state.get("conv_out.conv_out.weight")
    if head is None:
        raise WeightsError("not BiSeNet face-parser weights (no conv_out.conv_out)")
    if head.shape[0] != len(CLASSES):
        raise WeightsError(f"{weights_file}: a {head.shape[0]}-class parser; the CelebAMask-HQ "
                           f"labels need {len(CLASSES)}")
    net = BiSeNet(len(CLASSES), blocks)
    return load_into(net, state, "BiSeNet face-parser").to(torch.device(device))


@torch.no_grad()
def parse_labels(parser: nn.Module, crop: np.ndarray, size: int | None = None) -> np.ndarray:
    """Per-pixel CelebAMask-HQ class indices of a face crop, ``(size, size)`` uint8.

    The crop (``SxSx3``, [0, 255]) is resized to 512 px and normalized with the ImageNet
    statistics, as the parser was trained; the logits are resized to ``size`` (default
    ``S``). Parse a sharp crop (e.g. extracted at 512 px) and ask for the model's size,
    rather than parse an upsampled 64 px crop.
    """
    x = torch.as_tensor(np.asarray(crop, dtype=np.float32)).permute(2, 0, 1)[None] / 255.0
    h, w = (size, size) if size else x.shape[2:]
    x = F.interpolate(x, (INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False,
                      antialias=True)
    x = (x - torch.tensor(_MEAN).view(1, 3, 1, 1)) / torch.tensor(_STD).view(1, 3, 1, 1)
    device = next(parser.parameters()).device
    logits = parser(x.to(device)).float().cpu()
    # Averaging logits over each output pixel's area, then the arg-max, keeps thin parts
    # (brows, lips) that nearest-neighbour label resizing would drop or alias.
    logits = F.interpolate(logits, (h, w), mode="area" if h <= INPUT_SIZE else "bilinear")
    return logits[0].argmax(0).numpy().astype(np.uint8)


def parse_mask(parser: nn.Module, crop: np.ndarray, keep: Sequence[str] = FACE_CLASSES,
               size: int | None = None) -> np.ndarray:
    """Hard facial mask of a face crop from the parser: ``(size, size)`` float32 (default:
    the crop's size), 1 where the pixel's class is one of ``keep`` (by default
    METHOD.md's list, hair excluded)."""
    unknown = set(keep) - set(CLASSES)
    if unknown:
        raise ValueError(f"unknown face-parsing classes: {sorted(unknown)}")
    keep_idx = np.array([CLASSES.index(c) for c in keep])
    return np.isin(parse_labels(parser, crop, size), keep_idx).astype(np.float32)


@functools.lru_cache(maxsize=2)
def parser_for(weights_file: str) -> BiSeNet:
    """:func:`load_parser` once per process per weights file, with a user-facing error
    (:class:`~faceveil.errors.InputError`) for weights that cannot be used."""
    from ..errors import InputError

    try:
        return load_parser(weights_file)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot use face-parser weights {weights_file!r}: {e}") from None
