"""The label every anonymized photo and clip carries by default: an XMP packet saying,
in the IPTC vocabulary newsrooms and AI-content rules read, that the picture is a
composite with faces made by a trained model. Nothing secret goes in it: the model's
public name and the number of faces, which the public record shows anyway. A clip
carries the same words as container tags (:func:`clip_tags`)."""

from __future__ import annotations

from xml.sax.saxutils import escape

from .. import __version__
from .records import Record

XMP_KEYWORD = "XML:com.adobe.xmp"
DIGITAL_SOURCE_TYPE = ("http://cv.iptc.org/newscodes/digitalsourcetype/"
                       "compositeWithTrainedAlgorithmicMedia")


def model_name(reference: dict) -> str:
    """The model as the public record names it (a preset, a hub id, or a folder's name)."""
    name = reference.get("preset") or reference.get("hub")
    if name:
        return str(name)
    return str(reference.get("path", "a local model")).replace("\\", "/").rsplit("/", 1)[-1]


def description(faces: int | None, created_by: str | None, reference: dict) -> str:
    """The label's one line: how many faces (a clip's are counted only at its end, after
    its header is written, so ``None`` there) were replaced, by what, with which model."""
    what = (f"{faces} face{'s' if faces != 1 else ''} in this image" if faces is not None
            else "Faces in this clip")
    return (f"{what} replaced with synthetic faces by {created_by or 'faceveil'} "
            f"(model {model_name(reference)}); the originals can be restored only with "
            "the key.")


def clip_tags(reference: dict, container: str) -> dict[str, str]:
    """The label as a clip's container tags (``container``: the muxer, "matroska" or
    "mp4"). Matroska keeps any tag name: the description, the IPTC term and the XMP
    packet itself. The MP4 muxer keeps only the tags it knows (and no XMP box), so there
    the description and a comment naming the IPTC term."""
    text = description(None, f"faceveil {__version__}", reference)
    if container == "matroska":
        return {"DESCRIPTION": text, "DIGITAL_SOURCE_TYPE": DIGITAL_SOURCE_TYPE,
                "XMP": _packet(text)}
    return {"description": text, "comment": f"IPTC digital source type: {DIGITAL_SOURCE_TYPE}"}


def xmp_packet(record: Record) -> str:
    """The XMP packet of an anonymized photo: IPTC Digital Source Type
    ``compositeWithTrainedAlgorithmicMedia`` and a one-line description."""
    return _packet(description(len(record.faces), record.created_by,
                               record.model.get("reference", {})))


def _packet(text: str) -> str:
    text = escape(text)
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        '    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"\n'
        '    xmlns:dc="http://purl.org/dc/elements/1.1/">\n'
        f'   <Iptc4xmpExt:DigitalSourceType>{DIGITAL_SOURCE_TYPE}'
        '</Iptc4xmpExt:DigitalSourceType>\n'
        '   <dc:description><rdf:Alt><rdf:li xml:lang="x-default">'
        f'{text}</rdf:li></rdf:Alt></dc:description>\n'
        '  </rdf:Description>\n'
        ' </rdf:RDF>\n'
        '</x:xmpmeta>\n'
        '<?xpacket end="r"?>')
