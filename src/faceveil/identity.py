"""Face identity for measuring anonymization: embeddings and comparisons.

The default recognizer is dlib's 128-D ResNet (``dlib_face_recognition_resnet_model_v1``
from ``face_recognition_models``): two faces are the same person when the L2 distance
of their embeddings is at most 0.6 (dlib's threshold, 99.38% on LFW).

FaceNet (InceptionResnetV1, the VGGFace2 weights ``20180402-114759-vggface2.pt`` of
facenet-pytorch) and ArcFace (insightface's iresnet50/100 ``backbone.pth``) plug in
through :class:`Recognizer` when the user supplies their weights files; both networks
are defined here in plain torch, so no package pinning an old torch is needed. Without
their weights they are reported as unavailable by :func:`recognizers`, not an error.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image
from torch import nn

from . import faces

Box = tuple[int, int, int, int]

DLIB_THRESHOLD = 0.6
# Below this side an image is taken for a small aligned crop and upsampled before looking
# for its face; dlib's detector and landmarks need faces of about 80 px.
_SMALL = 160
_UPSAMPLED = 192


@runtime_checkable
class Recognizer(Protocol):
    """A face recognizer: embeds a face and says how embeddings compare.

    ``metric`` is ``"l2"`` (same person when the distance is at most ``threshold``) or
    ``"cosine"`` (same person when the cosine similarity is at least ``threshold``).
    """

    name: str
    threshold: float
    metric: str

    def embed(self, image: np.ndarray, box: Box | None = None) -> np.ndarray | None:
        """The embedding of the face in ``box`` (or the largest face), None if none."""
        ...


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """L2 distance between two embeddings."""
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity between two embeddings."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def same_person(a: np.ndarray, b: np.ndarray, threshold: float = DLIB_THRESHOLD) -> bool:
    """dlib's rule: the same person when the L2 distance is at most ``threshold``."""
    return distance(a, b) <= threshold


def matches(recognizer: Recognizer, a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two embeddings of ``recognizer`` are the same person by its own rule."""
    if recognizer.metric == "l2":
        return distance(a, b) <= recognizer.threshold
    return cosine(a, b) >= recognizer.threshold


def _prepare(image: np.ndarray, box: Box | None) -> tuple[np.ndarray, Box | None, float]:
    """The image to work on (small crops upsampled), the face box in it (None when a large
    image has no face), and the upsampling factor."""
    img = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError("expected an HxWx3 uint8 RGB image")
    h, w = img.shape[:2]
    scale = 1.0
    small = max(h, w) < _SMALL
    if small:
        scale = _UPSAMPLED / max(h, w)
        img = np.asarray(Image.fromarray(img).resize(
            (round(w * scale), round(h * scale)), Image.Resampling.BICUBIC))
    if box is not None:
        return img, tuple(int(round(v * scale)) for v in box), scale
    dets = faces.detect(img, detector="hog", upsample=1)
    if dets:
        return img, max((d[0] for d in dets), key=lambda b: b[2] * b[3]), scale
    if small:  # an aligned crop: the face is the frame
        return img, (0, 0, img.shape[1], img.shape[0]), scale
    return img, None, scale


class DlibRecognizer:
    """dlib's ResNet face descriptor (128-D), L2 threshold 0.6.

    Args:
        num_jitters: how many jittered copies are averaged (0 or 1: none; dlib's
            examples use up to 100 for a little more accuracy at that many times the cost).
    """

    name = "dlib-resnet-v1"
    threshold = DLIB_THRESHOLD
    metric = "l2"

    def __init__(self, num_jitters: int = 0) -> None:
        self.num_jitters = int(num_jitters)

    def embed(self, image: np.ndarray, box: Box | None = None) -> np.ndarray | None:
        """The 128-D descriptor of the face in ``box``, or of the largest face found.

        Small inputs (aligned crops under 160 px, e.g. 64x64) are upsampled to 192 px
        first, and when no face is detected in them the whole frame is taken as the face.
        Returns None when a larger image has no face.
        """
        import dlib

        img, face_box, _ = _prepare(image, box)
        if face_box is None:
            return None
        x, y, w, h = face_box
        shape = faces.dlib_model("shape5")(img, dlib.rectangle(x, y, x + w - 1, y + h - 1))
        desc = faces.dlib_model("recognition").compute_face_descriptor(
            img, shape, self.num_jitters)
        return np.asarray(desc, dtype=np.float64)


_DEFAULT = DlibRecognizer()


def embed(image: np.ndarray, box: Box | None = None) -> np.ndarray | None:
    """dlib's 128-D embedding of a face (see :meth:`DlibRecognizer.embed`)."""
    return _DEFAULT.embed(image, box)


# ---------------------------------------------------------------------------
# Weights files
# ---------------------------------------------------------------------------


class WeightsError(ValueError):
    """A weights file is missing, unreadable, or not of the expected network."""


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A plain state dict from a ``torch.save`` file, unwrapped from common containers
    (``{"state_dict": ...}``, ``{"model": ...}``) and DataParallel's ``module.`` prefix.
    Only tensors are loaded (``weights_only``), so no code in the file runs."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"weights file not found: {p}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        raise WeightsError(f"cannot read {p} as torch weights: {e}") from None
    for key in ("state_dict", "model", "net", "params"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{p} does not hold a state dict")
    return {re.sub(r"^module\.", "", k): v for k, v in obj.items()}


def load_into(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> nn.Module:
    """Load ``state`` strictly, with an error that names what does not fit."""
    own = model.state_dict()
    # Checkpoints from before PyTorch 0.4.1 have no BatchNorm batch counters.
    state = {**{k: v for k, v in own.items() if k.endswith("num_batches_tracked")}, **state}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected),
                            ("wrong shape", wrong)):
            if keys:
                parts.append(f"{label}: {', '.join(keys[:3])}" + (" ..." if len(keys) > 3 else ""))
        raise WeightsError(f"not {what} weights ({'; '.join(parts)})")
    model.load_state_dict(state)
    return model.eval().requires_grad_(False)


# ---------------------------------------------------------------------------
# FaceNet: InceptionResnetV1 (module names as in facenet-pytorch's state dicts)
# ---------------------------------------------------------------------------


class BasicConv2d(nn.Module):
    """Convolution without bias, batch norm (TensorFlow's eps 0.001), ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001, momentum=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


def _chain(*layers: nn.Module) -> nn.Sequential:
    return nn.Sequential(*layers)


class _Residual(nn.Module):
    """Inception-ResNet block: branches concatenated, projected by ``conv2d``, scaled and
    added to the input."""

    branches: Sequence[str] = ()

    def __init__(self, scale: float, relu: bool = True) -> None:
        super().__init__()
        self.scale = scale
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat([getattr(self, b)(x) for b in self.branches], 1)
        out = self.conv2d(out) * self.scale + x
        return torch.relu(out) if self.relu else out


class Block35(_Residual):
    """35x35 block (Inception-ResNet-A), 256 channels."""

    branches = ("branch0", "branch1", "branch2")

    def __init__(self, scale: float = 0.17) -> None:
        super().__init__(scale)
        self.branch0 = BasicConv2d(256, 32, 1)
        self.branch1 = _chain(BasicConv2d(256, 32, 1), BasicConv2d(32, 32, 3, padding=1))
        self.branch2 = _chain(BasicConv2d(256, 32, 1), BasicConv2d(32, 32, 3, padding=1),
                              BasicConv2d(32, 32, 3, padding=1))
        self.conv2d = nn.Conv2d(96, 256, 1)


class Block17(_Residual):
    """17x17 block (Inception-ResNet-B), 896 channels."""

    branches = ("branch0", "branch1")

    def __init__(self, scale: float = 0.10) -> None:
        super().__init__(scale)
        self.branch0 = BasicConv2d(896, 128, 1)
        self.branch1 = _chain(BasicConv2d(896, 128, 1),
                              BasicConv2d(128, 128, (1, 7), padding=(0, 3)),
                              BasicConv2d(128, 128, (7, 1), padding=(3, 0)))
        self.conv2d = nn.Conv2d(256, 896, 1)


class Block8(_Residual):
    """8x8 block (Inception-ResNet-C), 1792 channels."""

    branches = ("branch0", "branch1")

    def __init__(self, scale: float = 0.20, relu: bool = True) -> None:
        super().__init__(scale, relu)
        self.branch0 = BasicConv2d(1792, 192, 1)
        self.branch1 = _chain(BasicConv2d(1792, 192, 1),
                              BasicConv2d(192, 192, (1, 3), padding=(0, 1)),
                              BasicConv2d(192, 192, (3, 1), padding=(1, 0)))
        self.conv2d = nn.Conv2d(384, 1792, 1)


class _Concat(nn.Module):
    branches: Sequence[str] = ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([getattr(self, b)(x) for b in self.branches], 1)


class Mixed6a(_Concat):
    """Reduction 35 -> 17: 256 -> 896 channels."""

    branches = ("branch0", "branch1", "branch2")

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = BasicConv2d(256, 384, 3, stride=2)
        self.branch1 = _chain(BasicConv2d(256, 192, 1), BasicConv2d(192, 192, 3, padding=1),
                              BasicConv2d(192, 256, 3, stride=2))
        self.branch2 = nn.MaxPool2d(3, stride=2)


class Mixed7a(_Concat):
    """Reduction 17 -> 8: 896 -> 1792 channels."""

    branches = ("branch0", "branch1", "branch2", "branch3")

    def __init__(self) -> None:
        super().__init__()
        self.branch0 = _chain(BasicConv2d(896, 256, 1), BasicConv2d(256, 384, 3, stride=2))
        self.branch1 = _chain(BasicConv2d(896, 256, 1), BasicConv2d(256, 256, 3, stride=2))
        self.branch2 = _chain(BasicConv2d(896, 256, 1), BasicConv2d(256, 256, 3, padding=1),
                              BasicConv2d(256, 256, 3, stride=2))
        self.branch3 = nn.MaxPool2d(3, stride=2)


class InceptionResnetV1(nn.Module):
    """FaceNet's InceptionResnetV1: a 160x160 face in [-1, 1] to a unit 512-D embedding.

    Module names follow facenet-pytorch, so its ``20180402-114759-vggface2.pt`` (and
    ``20180408-102900-casia-webface.pt``) state dicts load; their classifier
    (``logits.*``) is not part of the embedding and is dropped by the loader.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv2d_1a = BasicConv2d(3, 32, 3, stride=2)
        self.conv2d_2a = BasicConv2d(32, 32, 3)
        self.conv2d_2b = BasicConv2d(32, 64, 3, padding=1)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = BasicConv2d(64, 80, 1)
        self.conv2d_4a = BasicConv2d(80, 192, 3)
        self.conv2d_4b = BasicConv2d(192, 256, 3, stride=2)
        self.repeat_1 = nn.Sequential(*[Block35(0.17) for _ in range(5)])
        self.mixed_6a = Mixed6a()
        self.repeat_2 = nn.Sequential(*[Block17(0.10) for _ in range(10)])
        self.mixed_7a = Mixed7a()
        self.repeat_3 = nn.Sequential(*[Block8(0.20) for _ in range(5)])
        self.block8 = Block8(1.0, relu=False)
        self.last_linear = nn.Linear(1792, 512, bias=False)
        self.last_bn = nn.BatchNorm1d(512, eps=0.001, momentum=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in ("conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b",
                     "conv2d_4a", "conv2d_4b", "repeat_1", "mixed_6a", "repeat_2",
                     "mixed_7a", "repeat_3", "block8"):
            x = getattr(self, name)(x)
        x = self.last_bn(self.last_linear(x.mean(dim=(2, 3))))
        return nn.functional.normalize(x, dim=1)


def _square_crop(image: np.ndarray, box: Box, size: int, margin: float) -> np.ndarray:
    """The box, grown by ``margin`` of its side and made square, resampled to ``size``."""
    x, y, w, h = box
    side = max(w, h) * (1 + margin)
    s = size / side
    cx, cy = x + w / 2, y + h / 2
    # Photo (x, y) -> crop pixels, pixel centres on pixel centres.
    t = np.array([[s, 0.0, (side / 2 - cx) * s - 0.5 + 0.5 * s],
                  [0.0, s, (side / 2 - cy) * s - 0.5 + 0.5 * s]])
    return faces.extract(image, t, size)


class FaceNetRecognizer:
    """FaceNet (InceptionResnetV1) embeddings from a user-supplied weights file.

    Faces are cut square around dlib's face box grown by 20% (close to the MTCNN crops
    the weights were trained on) at 160 px. ``threshold`` (cosine 0.4, i.e. L2 1.1 on
    unit vectors) is the customary operating point, not calibrated here.
    """

    metric = "cosine"
    threshold = 0.4

    def __init__(self, weights_file: str | Path, device: str = "cpu",
                 name: str = "facenet-vggface2") -> None:
        state = load_state_dict(weights_file)
        state = {k: v for k, v in state.items() if not k.startswith("logits.")}
        self.name = name
        self.device = torch.device(device)
        self.net = load_into(InceptionResnetV1(), state, "FaceNet InceptionResnetV1").to(
            self.device)

    @torch.no_grad()
    def embed(self, image: np.ndarray, box: Box | None = None) -> np.ndarray | None:
        """The unit 512-D embedding of the face in ``box`` or of the largest face."""
        img, face_box, _ = _prepare(image, box)
        if face_box is None:
            return None
        crop = _square_crop(img, face_box, 160, 0.2)
        x = torch.from_numpy(crop).permute(2, 0, 1)[None].to(self.device)
        return self.net((x - 127.5) / 128.0)[0].cpu().numpy().astype(np.float64)


# ---------------------------------------------------------------------------
# ArcFace: insightface's IResNet (module names as in arcface_torch's backbone.pth)
# ---------------------------------------------------------------------------

# Where ArcFace models expect the 5 points in their 112x112 crop (insightface's template).
ARCFACE_POINTS5 = np.array([
    [38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
    [70.7299, 92.2041],
])


class IBasicBlock(nn.Module):
    """IResNet's pre-activation block: BN, 3x3, BN, PReLU, 3x3 (strided), BN, + shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(cout, eps=1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """ArcFace's IResNet: a 112x112 face in [-1, 1] to a 512-D embedding.

    ``layers`` is ``(3, 4, 14, 3)`` for iresnet50 and ``(3, 13, 30, 3)`` for iresnet100.
    """

    def __init__(self, layers: Sequence[int] = (3, 4, 14, 3)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        cin = 64
        for i, (n, cout) in enumerate(zip(layers, (64, 128, 256, 512), strict=True)):
            blocks = [IBasicBlock(cin, cout, 2)] + [IBasicBlock(cout, cout, 1)
                                                     for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = cout
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.fc = nn.Linear(512 * 7 * 7, 512)
        self.features = nn.BatchNorm1d(512, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.features(self.fc(torch.flatten(self.bn2(x), 1)))


def blocks_per_stage(state: dict[str, torch.Tensor], prefix: str, what: str) -> tuple[int, ...]:
    """How many residual blocks each of the 4 ResNet stages ``{prefix}layer1..4`` has in a
    state dict, which tells ResNet depths apart (18: 2,2,2,2; 34 and 50: 3,4,6,3 or
    3,4,14,3; ...)."""
    counts = []
    for i in range(1, 5):
        pattern = re.compile(rf"{re.escape(prefix)}layer{i}\.(\d+)\.")
        idx = {int(m.group(1)) for k in state if (m := pattern.match(k))}
        if not idx:
            raise WeightsError(f"not {what} weights (no {prefix}layer{i} blocks)")
        counts.append(max(idx) + 1)
    return tuple(counts)


class ArcFaceRecognizer:
    """ArcFace (IResNet, depth read from the weights) from a user-supplied weights file.

    Faces are aligned by a similarity of dlib's 5 derived points onto insightface's
    112x112 template. ``threshold`` (cosine 0.3) is a customary operating point, not
    calibrated here.
    """

    metric = "cosine"
    threshold = 0.3

    def __init__(self, weights_file: str | Path, device: str = "cpu",
                 name: str | None = None) -> None:
        state = load_state_dict(weights_file)
        layers = blocks_per_stage(state, "", "ArcFace IResNet")
        depth = {(3, 4, 14, 3): "r50", (3, 13, 30, 3): "r100", (2, 2, 2, 2): "r18",
                 (3, 4, 6, 3): "r34"}.get(layers, "x".join(map(str, layers)))
        self.name = name or f"arcface-{depth}"
        self.device = torch.device(device)
        self.net = load_into(IResNet(layers), state, "ArcFace IResNet").to(self.device)

    @torch.no_grad()
    def embed(self, image: np.ndarray, box: Box | None = None) -> np.ndarray | None:
        """The 512-D embedding of the face in ``box`` or of the largest face."""
        img, face_box, _ = _prepare(image, box)
        if face_box is None:
            return None
        lm = faces.landmarks68(img, face_box)
        t = faces.similarity_transform(faces.points5_of(lm), ARCFACE_POINTS5)
        crop = faces.extract(img, t, 112)
        x = torch.from_numpy(crop).permute(2, 0, 1)[None].to(self.device)
        return self.net((x / 255.0 - 0.5) / 0.5)[0].cpu().numpy().astype(np.float64)


def recognizers(
    facenet_weights: str | Path | None = None, arcface_weights: str | Path | None = None,
    device: str = "cpu",
) -> tuple[list[Recognizer], list[str]]:
    """The recognizers that can run, and a note for each one that cannot (no weights
    given, or weights that do not load). dlib's is always there."""
    found: list[Recognizer] = [_DEFAULT]
    notes: list[str] = []
    for label, cls, path in (("FaceNet", FaceNetRecognizer, facenet_weights),
                             ("ArcFace", ArcFaceRecognizer, arcface_weights)):
        if path is None:
            notes.append(f"{label}: no weights file given, not measured")
            continue
        try:
            found.append(cls(path, device=device))
        except WeightsError as e:
            notes.append(f"{label}: {e}")
    return found, notes

