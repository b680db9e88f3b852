"""TTML in the IMSC 1.1 text profile, written with ElementTree: pysubs2's TTML writer declares no language, frame
rate, content profile, root extent or region, which IMSC 1.1 deliveries (Netflix) require."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from narration.schema import Cue
from narration.subtitles.formats.ass import AssStyle
from narration.subtitles.formats.base import SubtitleDocument, clock_timestamp
from narration.subtitles.profile import SubtitleProfile, get_profile

TTML_NAMESPACES = {
    "": "http://www.w3.org/ns/ttml",
    "ttp": "http://www.w3.org/ns/ttml#parameter",
    "tts": "http://www.w3.org/ns/ttml#styling",
    "ttm": "http://www.w3.org/ns/ttml#metadata",
}
IMSC_TEXT_PROFILE = "http://www.w3.org/ns/ttml/profile/imsc1.1/text"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_XML_ID = "{http://www.w3.org/XML/1998/namespace}id"


def _tt(name: str, prefix: str = "") -> str:
    return f"{{{TTML_NAMESPACES[prefix]}}}{name}"


def _ttml_clock(ms: int) -> str:
    return clock_timestamp(max(ms, 0))


def to_ttml(cues: list[Cue], language: str = "en", profile: SubtitleProfile | None = None,
            style: AssStyle | None = None) -> str:
    """A TTML document in the IMSC 1.1 text profile: ``xml:lang``, the profile's frame rate (with the 1000/1001
    multiplier for 23.976 and 29.97), media time base, a bottom region, and one ``<p>`` per cue with ``<br/>``
    between its lines. Times are the cues' own (snapped to frames by segmentation)."""
    profile = profile or get_profile()
    style = style or AssStyle()
    rate = profile.rate
    multiplier = rate / round(rate)
    for prefix, uri in TTML_NAMESPACES.items():
        ET.register_namespace(prefix, uri)
    root = ET.Element(_tt("tt"), {
        _XML_LANG: language,
        _tt("timeBase", "ttp"): "media",
        _tt("frameRate", "ttp"): str(round(rate)),
        _tt("contentProfiles", "ttp"): IMSC_TEXT_PROFILE,
        _tt("extent", "tts"): f"{style.play_res_x}px {style.play_res_y}px",
    })
    if multiplier != 1:
        root.set(_tt("frameRateMultiplier", "ttp"), f"{multiplier.numerator} {multiplier.denominator}")
    head = ET.SubElement(root, _tt("head"))
    styling = ET.SubElement(head, _tt("styling"))
    ET.SubElement(styling, _tt("style"), {
        _XML_ID: "default", _tt("fontFamily", "tts"): "proportionalSansSerif", _tt("fontSize", "tts"): "100%",
        _tt("textAlign", "tts"): "center", _tt("color", "tts"): style.base_color.lower(),
        _tt("textOutline", "tts"): f"{style.outline_color.lower()} 5%" if style.outline else "none",
    })
    layout = ET.SubElement(head, _tt("layout"))
    ET.SubElement(layout, _tt("region"), {
        _XML_ID: "bottom", _tt("origin", "tts"): "10% 10%", _tt("extent", "tts"): "80% 80%",
        _tt("displayAlign", "tts"): "after",
    })
    body = ET.SubElement(root, _tt("body"), {"style": "default", "region": "bottom"})
    div = ET.SubElement(body, _tt("div"))
    for cue in cues:
        paragraph = ET.SubElement(div, _tt("p"), {_XML_ID: f"cue{cue.index}", "begin": _ttml_clock(cue.start_ms),
                                                  "end": _ttml_clock(cue.end_ms)})
        paragraph.text = cue.lines[0] if cue.lines else ""
        for line in cue.lines[1:]:
            ET.SubElement(paragraph, _tt("br")).tail = line
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def write(document: SubtitleDocument) -> str:
    return to_ttml(document.cues, document.language, document.profile)
