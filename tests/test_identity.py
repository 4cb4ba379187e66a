"""Identity embeddings: dlib on real photos; FaceNet/ArcFace loaders on random weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from faceveil import faces, identity

DATA = Path(__file__).parent / "data"


def load(name: str) -> np.ndarray:
    return np.asarray(Image.open(DATA / name).convert("RGB"))


@pytest.fixture(scope="module")
def emb() -> dict[str, np.ndarray]:
    out = {n: identity.embed(load(f"{n}.jpg")) for n in ("obama", "obama2", "biden", "astronaut")}
    assert all(e is not None and e.shape == (128,) for e in out.values())
    return out


def aligned(name: str, size: int) -> np.ndarray:
    img = load(name)
    regions, _ = faces.find_faces(img, framing=faces.Framing.ffhq(), crop_size=size)
    r = max(regions, key=lambda r: r.box[2])
    return np.clip(np.rint(faces.extract(img, r.transform, size)), 0, 255).astype(np.uint8)


def test_a_face_is_itself(emb):
    again = identity.embed(load("obama.jpg"))
    assert identity.distance(again, emb["obama"]) < 1e-6
    assert identity.cosine(again, emb["obama"]) == pytest.approx(1.0)
    assert identity.same_person(again, emb["obama"])


def test_two_photos_of_one_person_match_and_different_people_do_not(emb):
    assert identity.same_person(emb["obama"], emb["obama2"])
    assert identity.distance(emb["obama"], emb["obama2"]) < 0.5
    for a, b in [("obama", "biden"), ("obama2", "biden"), ("obama", "astronaut"),
                 ("biden", "astronaut")]:
        assert identity.distance(emb[a], emb[b]) > 0.7, (a, b)
        assert not identity.same_person(emb[a], emb[b])
    assert identity.cosine(emb["obama"], emb["obama2"]) > identity.cosine(emb["obama"],
                                                                          emb["biden"])


@pytest.mark.parametrize("name", ["obama", "biden", "astronaut"])
def test_small_aligned_crops_keep_their_identity(emb, name):
    crop = aligned(f"{name}.jpg", 64)
    e = identity.embed(crop)
    assert e is not None
    assert identity.same_person(e, emb[name])
    others = [k for k in ("obama", "biden", "astronaut") if k != name]
    assert all(not identity.same_person(e, emb[k]) for k in others)


def test_box_selects_the_face(emb):
    img = load("group.jpg")
    dets = sorted(faces.detect(img), key=lambda d: d[0][0])
    first = identity.embed(img, box=dets[0][0])  # the large Obama portrait on the left
    assert identity.same_person(first, emb["obama"])
    biden = identity.embed(img, box=max(dets[1:], key=lambda d: d[0][2])[0])
    assert identity.same_person(biden, emb["biden"])


def test_synthetic_faces_embed_and_no_face_gives_none():
    strip = load("gan_faces.png") if (DATA / "gan_faces.png").exists() else None
    assert strip is not None
    for k in range(3):
        e = identity.embed(strip[:, 64 * k : 64 * k + 64])
        assert e is not None and np.isfinite(e).all()
    noise = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    assert identity.embed(noise) is None


def test_dlib_recognizer_follows_the_protocol(emb):
    rec = identity.DlibRecognizer()
    assert isinstance(rec, identity.Recognizer)
    assert rec.metric == "l2" and rec.threshold == 0.6
    assert identity.matches(rec, emb["obama"], emb["obama2"])
    assert not identity.matches(rec, emb["obama"], emb["biden"])


# --- optional recognizers, from weights files -------------------------------------------


@pytest.fixture(scope="module")
def facenet_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = identity.InceptionResnetV1()
    state = net.state_dict()
    # The published file also holds its VGGFace2 classifier (8631 classes); a small one
    # stands in for it here.
    state["logits.weight"] = torch.randn(10, 512)
    state["logits.bias"] = torch.zeros(10)
    path = tmp_path_factory.mktemp("w") / "20180402-114759-vggface2.pt"
    torch.save(state, path)
    return path


def test_facenet_state_dict_uses_facenet_pytorch_names():
    keys = set(identity.InceptionResnetV1().state_dict())
    for k in ("conv2d_1a.conv.weight", "conv2d_4b.bn.running_var",
              "repeat_1.4.branch2.2.conv.weight", "repeat_2.9.branch1.2.bn.bias",
              "mixed_6a.branch1.2.conv.weight", "mixed_7a.branch2.2.conv.weight",
              "repeat_3.0.conv2d.bias", "block8.conv2d.weight", "last_linear.weight",
              "last_bn.running_mean"):
        assert k in keys, k
    assert sum(v.numel() for k, v in identity.InceptionResnetV1().state_dict().items()
               if not k.endswith("num_batches_tracked")) == pytest.approx(23.5e6, rel=0.01)


def test_facenet_loads_a_weights_file_and_embeds(facenet_file):
    rec = identity.FaceNetRecognizer(facenet_file)
    assert isinstance(rec, identity.Recognizer) and rec.metric == "cosine"
    img = load("obama.jpg")
    a, b = rec.embed(img), rec.embed(img)
    assert a.shape == (512,) and np.linalg.norm(a) == pytest.approx(1.0, abs=1e-5)
    assert identity.cosine(a, b) == pytest.approx(1.0)


def test_arcface_loads_any_depth_and_embeds(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "backbone.pth"
    torch.save({"state_dict": identity.IResNet((1, 1, 1, 1)).state_dict()}, path)
    rec = identity.ArcFaceRecognizer(path)
    assert rec.name == "arcface-1x1x1x1"
    e = rec.embed(load("biden.jpg"))
    assert e.shape == (512,) and np.isfinite(e).all()


def test_wrong_or_missing_weights_are_reported(facenet_file, tmp_path):
    with pytest.raises(identity.WeightsError, match="ArcFace"):
        identity.ArcFaceRecognizer(facenet_file)
    with pytest.raises(identity.WeightsError, match="not found"):
        identity.FaceNetRecognizer(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(identity.WeightsError, match="cannot read"):
        identity.FaceNetRecognizer(bad)
    partial = tmp_path / "partial.pt"
    state = torch.load(facenet_file, weights_only=True)
    del state["last_linear.weight"]
    torch.save(state, partial)
    with pytest.raises(identity.WeightsError, match="missing: last_linear.weight"):
        identity.FaceNetRecognizer(partial)


def test_recognizers_lists_what_runs_and_notes_the_rest(facenet_file, tmp_path):
    recs, notes = identity.recognizers()
    assert [r.name for r in recs] == ["dlib-resnet-v1"] and len(notes) == 2
    recs, notes = identity.recognizers(facenet_weights=facenet_file,
                                       arcface_weights=tmp_path / "missing.pth")
    assert [r.name for r in recs] == ["dlib-resnet-v1", "facenet-vggface2"]
    assert len(notes) == 1 and notes[0].startswith("ArcFace")
