"""The label every anonymized photo carries by default: an XMP packet saying, in the
IPTC vocabulary newsrooms and AI-content rules read, that the picture is a composite
with faces made by a trained model. Nothing secret goes in it: the model's public name
and the number of faces, which the public record shows anyway."""

from __future__ import annotations

from xml.sax.saxutils import escape

from .records import Record

XMP_KEYWORD = "XML:com.adobe.xmp"
DIGITAL_SOURCE_TYPE = ("http://cv.iptc.org/newscodes/digitalsourcetype/"
                       "compositeWithTrainedAlgorithmicMedia")


def model_name(record: Record) -> str:
    """The model as the public record names it (a preset, a hub id, or a folder's name)."""
    ref = record.model.get("reference", {})
    name = ref.get("preset") or ref.get("hub") or str(ref.get("path", "a local model"))
    return str(name).replace("\\", "/").rsplit("/", 1)[-1] if "path" in ref and not (
        ref.get("preset") or ref.get("hub")) else str(name)


def xmp_packet(record: Record) -> str:
    """The XMP packet of an anonymized photo: IPTC Digital Source Type
    ``compositeWithTrainedAlgorithmicMedia`` and a one-line description."""
    n = len(record.faces)
    text = escape(f"{n} face{'s' if n != 1 else ''} in this image replaced with synthetic "
                  f"faces by {record.created_by or 'faceveil'} (model {model_name(record)}); "
                  "the originals can be restored only with the key.")
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
