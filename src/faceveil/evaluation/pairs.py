"""Verification pairs for ``faceveil eval``, and the persons they imply.

Pairs come from a pairs file (``--pairs``: LFW's ``pairs.txt`` or a generic one) or from
the images' names (``--pairs-by-name``, :func:`name_pairs`): ``PERSON_VARIANT.ext``,
e.g. the Face Research Lab London Set's ``001_neutral.jpg`` and ``001_smiling.jpg``.
A genuine pair ``(a, b)`` is scored with the anonymized ``a`` against the original
``b``: with names, the anonymized neutral photo against the same person's smiling one,
the protocol of Labarbarie et al. The persons (:func:`persons`) group the images for
the two-sample test's leave-one-person-out rule.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from ..errors import InputError

Pair = tuple[str, str, bool]


def read_pairs(path: str | os.PathLike, data_dir: Path) -> list[tuple[str, str, bool]]:
    """Verification pairs as ``(image_a, image_b, same_person)``, paths relative to DATA.

    Two formats, one pair a line (blank lines and ``#`` comments ignored):

    * LFW's ``pairs.txt``: ``name n1 n2`` (same person) or ``name1 n1 name2 n2``
      (different people), image ``name/name_0001.jpg``; header lines holding only
      numbers (``10 300``) are skipped;
    * generic: ``path_a path_b 1`` (same) or ``path_a path_b 0`` (different).
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise InputError(f"cannot read pairs file {str(p)!r}: {e.strerror}") from None

    def lfw(name: str, n: str) -> str:
        return f"{name}/{name}_{int(n):04d}.jpg"

    pairs = []
    for number, line in enumerate(lines, 1):
        tokens = line.split("#", 1)[0].split()
        if not tokens or all(t.isdigit() for t in tokens):
            continue
        if len(tokens) == 3 and tokens[1].isdigit() and tokens[2].isdigit():
            pairs.append((lfw(tokens[0], tokens[1]), lfw(tokens[0], tokens[2]), True))
        elif len(tokens) == 4 and tokens[1].isdigit() and tokens[3].isdigit():
            pairs.append((lfw(tokens[0], tokens[1]), lfw(tokens[2], tokens[3]), False))
        elif len(tokens) == 3 and tokens[2] in ("0", "1"):
            pairs.append((tokens[0], tokens[1], tokens[2] == "1"))
        else:
            raise InputError(f"{str(p)!r} line {number}: not a pair ({line.strip()!r}); "
                             "expected LFW's 'name n1 n2' / 'name1 n1 name2 n2' or "
                             "'path_a path_b 0|1'")
    if not pairs:
        raise InputError(f"{str(p)!r} holds no pairs")
    return pairs


def person_of(name: str) -> str | None:
    """The person a relative image path names by the ``PERSON_VARIANT.ext`` convention:
    the path without its extension, cut at the file name's last ``_`` (``001_neutral.jpg``
    -> ``001``; ``lfw/Ann/Ann_0002.jpg`` -> ``lfw/Ann/Ann``); None without one."""
    path = PurePosixPath(name)
    stem = path.stem
    if "_" not in stem or stem.rindex("_") == 0:
        return None
    return str(path.with_name(stem[: stem.rindex("_")]))


def name_pairs(names: Sequence[str]) -> list[Pair]:
    """Verification pairs from image names (``PERSON_VARIANT.ext``, :func:`person_of`).

    A person's images are taken in sorted order: the first is the probe (its anonymized
    version is verified) and each later one a genuine partner (its original is the
    reference): ``001_neutral`` against ``001_smiling``. Impostor pairs: every person's
    probe against every other person's partners (51 persons of 2 images: 51 genuine and
    2,550 impostor pairs, enough for FAR = 1e-3). Images of persons with one image are
    left out.
    """
    people: dict[str, list[str]] = {}
    for n in sorted(names):
        p = person_of(n)
        if p is not None:
            people.setdefault(p, []).append(n)
    people = {p: v for p, v in people.items() if len(v) > 1}
    if not people:
        raise InputError("no two images share a person by name (PERSON_VARIANT.ext, e.g. "
                         "001_neutral.jpg and 001_smiling.jpg): nothing to pair")
    genuine = [(v[0], w, True) for v in people.values() for w in v[1:]]
    impostor = [(v[0], w, False) for p, v in people.items() for q, u in people.items()
                if q != p for w in u[1:]]
    return genuine + impostor


def persons(names: Sequence[str], pairs: Sequence[Pair] | None) -> dict[str, str]:
    """A person label per image: images joined by a genuine pair are one person (the
    first of them in sorted order names it); every other image is a person of its own."""
    parent = {n: n for n in names}

    def root(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for a, b, same in pairs or ():
        if same and a in parent and b in parent:
            ra, rb = sorted((root(a), root(b)))
            parent[rb] = ra
    return {n: root(n) for n in names}
