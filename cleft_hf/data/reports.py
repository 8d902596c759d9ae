"""Section extraction from free-text radiology reports (MIMIC-CXR layout: ``FINDINGS:`` / ``IMPRESSION:`` headings).

Heading names, their normalisation and the per-study special cases follow the official MIMIC-CXR parser,
``txt/section_parser.py`` and ``txt/create_section_files.py`` of https://github.com/MIT-LCP/mimic-cxr (MIT License,
Copyright (c) 2019 MIT Laboratory for Computational Physiology): its ``frequent_sections`` map (typos such as
``IMPRESSON`` included), its rules (a name containing impression / findings / history / comparison / addendum is
that section; a name describing the study -- ``CHEST, TWO VIEWS``, ``PA AND LATERAL VIEWS OF THE CHEST``,
``PORTABLE`` ... -- is findings), its removal of empty findings/impression sections, its ``last_paragraph`` (the
text after the last section's first blank line when a report has neither findings nor impression) and its
``custom_mimic_cxr_rules`` for individual MIMIC-CXR studies.

Rules of :func:`report_text`:

1. Headings are case-insensitive: a line starting with ``name:`` (then whitespace or end of line) is a heading when
   ``name`` is in the heading map (any case, anywhere); when it is upper case and matches the rules above; or when
   it is an unknown upper-case name at a paragraph start (first line, after a blank line) or alone on its line.
   Other ``word:`` at a wrapped line's start stays text. Ours beyond the official parser: a combined
   ``FINDINGS AND IMPRESSION`` section serves for both findings and impression (the official one calls it
   impression), a few more synonyms (IMPRESSIONS, CONCLUSIONS, SUMMARY, INDICATIONS).
2. The requested sections present are joined in the requested order (each text once); the source names them
   ("findings+impression", "impression", ...).
3. Otherwise, with ``fallback="last_section"``: the official ``last_paragraph``, else the last section that is not
   administrative (a report without headings is one section); source "fallback". The official last resort, the
   comparison section, is not used: it mostly names prior studies ("None.", "Chest radiograph from ___.").
   ``fallback="none"`` gives no text.
4. Whitespace is collapsed; a result without any letter means "no usable text": ("", "none").
"""

from __future__ import annotations

from collections.abc import Sequence
import re

FALLBACKS = ("last_section", "none")
COMBINED = "findings and impression"
FALLBACK, NO_TEXT, CUSTOM_RULE = "fallback", "none", "official_custom_rule"

_CANDIDATE = re.compile(r"^[ \t]*([A-Za-z][A-Za-z0-9 ()/,&'-]{0,60}?)[ \t]*:(?=\s|$)", re.MULTILINE)
_BLANK_LINE = re.compile(r"\n[ \t]*\n")

# The official parser's normalize_section_names() map, verbatim (counts in MIMIC-CXR as comments there).
_OFFICIAL_NAMES = {
    "preamble": "preamble",
    "impression": "impression",
    "comparison": "comparison",
    "indication": "indication",
    "findings": "findings",
    "examination": "examination",
    "technique": "technique",
    "history": "history",
    "comparisons": "comparison",
    "clinical history": "history",
    "reason for examination": "indication",
    "notification": "notification",
    "reason for exam": "indication",
    "clinical information": "history",
    "exam": "examination",
    "clinical indication": "indication",
    "conclusion": "impression",
    "chest, two views": "findings",
    "recommendation(s)": "recommendations",
    "type of examination": "examination",
    "reference exam": "comparison",
    "patient history": "history",
    "addendum": "addendum",
    "comparison exam": "comparison",
    "date": "date",
    "comment": "comment",
    "findings and impression": "impression",
    "wet read": "wet read",
    "comparison film": "comparison",
    "recommendations": "recommendations",
    "findings/impression": "impression",
    "pfi": "history",
    "recommendation": "recommendations",
    "wetread": "wet read",
    "ndication": "impression",
    "impresson": "impression",
    "imprression": "impression",
    "imoression": "impression",
    "impressoin": "impression",
    "imprssion": "impression",
    "impresion": "impression",
    "imperssion": "impression",
    "mpression": "impression",
    "impession": "impression",
    "findings/ impression": "impression",
    "finding": "findings",
    "findins": "findings",
    "findindgs": "findings",
    "findgings": "findings",
    "findngs": "findings",
    "findnings": "findings",
    "finidngs": "findings",
    "idication": "indication",
    "reference findings": "findings",
    "comparision": "comparison",
    "comparsion": "comparison",
    "comparrison": "comparison",
    "comparisions": "comparison",
}
_OUR_NAMES = {
    "findings and impression": COMBINED,
    "findings/impression": COMBINED,
    "findings/ impression": COMBINED,
    "impression and findings": COMBINED,
    "findings and impressions": COMBINED,
    "impressions": "impression",
    "conclusions": "impression",
    "summary": "impression",
    "indications": "indication",
    "procedure": "procedure",
    "final report": "preamble",
    "note": "note",
}
HEADING_NAMES = {**_OFFICIAL_NAMES, **_OUR_NAMES}
_MAIN_SECTIONS = ("impression", "findings", "history", "comparison", "addendum")
_STUDY_DESCRIPTIONS = re.compile(
    "(chest|portable|pa and lateral|lateral and pa|ap and lateral|lateral and ap|frontal and|two views|frontal view|"
    "pa view|ap view|one view|lateral view|bone window|frontal upright|frontal semi-upright|ribs|pa and lat)"
)
ADMINISTRATIVE = (
    "preamble",
    "examination",
    "indication",
    "history",
    "technique",
    "comparison",
    "notification",
    "recommendations",
    "wet read",
    "addendum",
    "procedure",
    "date",
    "comment",
    "note",
)
_ADMIN_HEADING = re.compile(
    r"(?:^|\s)("
    + "|".join(
        sorted(
            (re.escape(k) for k, v in HEADING_NAMES.items() if v in ADMINISTRATIVE and len(k) > 3),
            key=len,
            reverse=True,
        )
    )
    + r")[ \t]*:",
    re.IGNORECASE,
)

# custom_mimic_cxr_rules() of the official parser: study -> the section holding its conclusion, or the character
# span of the conclusion ([0, 0]: the report has no findings at all).
CUSTOM_SECTION_NAMES = {
    "s50913680": "recommendations",
    "s59363654": "examination",
    "s59279892": "technique",
    "s59768032": "recommendations",
    "s57936451": "indication",
    "s50058765": "indication",
    "s53356173": "examination",
    "s53202765": "technique",
    "s50808053": "technique",
    "s51966317": "indication",
    "s50743547": "examination",
    "s56451190": "note",
    "s59067458": "recommendations",
    "s59215320": "examination",
    "s55124749": "indication",
    "s54365831": "indication",
    "s59087630": "recommendations",
    "s58157373": "recommendations",
    "s56482935": "recommendations",
    "s58375018": "recommendations",
    "s54654948": "indication",
    "s55157853": "examination",
    "s51491012": "history",
}
CUSTOM_INDICES = {
    "s50525523": (201, 349),
    "s57564132": (233, 554),
    "s59982525": (313, 717),
    "s53488209": (149, 475),
    "s54875119": (234, 988),
    "s50196495": (59, 399),
    "s56579911": (59, 218),
    "s52648681": (292, 631),
    "s59889364": (172, 453),
    "s53514462": (73, 377),
    "s59505494": (59, 450),
    "s53182247": (59, 412),
    "s51410602": (47, 320),
    "s56412866": (522, 822),
    "s54986978": (59, 306),
    "s59003148": (262, 505),
    "s57150433": (61, 394),
    "s56760320": (219, 457),
    "s59562049": (158, 348),
    "s52674888": (145, 296),
    "s55258338": (192, 568),
    "s59330497": (140, 655),
    "s52119491": (179, 454),
    "s58235663": (0, 0),
    "s50798377": (0, 0),
    "s54168089": (0, 0),
    "s53071062": (0, 0),
    "s56724958": (0, 0),
    "s54231141": (0, 0),
    "s53607029": (0, 0),
    "s52035334": (0, 0),
}


def normalise_heading(heading: str) -> tuple[str, str]:
    """(canonical name, how): how is "map" (exact heading name), "rule" (official substring rules) or "unknown"."""
    name = " ".join(heading.lower().split())
    if name in HEADING_NAMES:
        return HEADING_NAMES[name], "map"
    for main in _MAIN_SECTIONS:
        if main in name:
            return main, "rule"
    if _STUDY_DESCRIPTIONS.search(name):
        return "findings", "rule"
    return name, "unknown"


def _clean(text: str) -> str:
    text = " ".join(text.replace("FINAL REPORT", " ").split())
    return text if re.search(r"[A-Za-z]", text) else ""


def _is_heading(report: str, match: re.Match) -> str | None:
    """Canonical section name when the candidate ``match`` is a heading (rule 1), else None."""
    raw = match.group(1)
    name, how = normalise_heading(raw)
    if how == "map":
        return name
    upper = raw == raw.upper()
    before = report[: match.start()].rstrip(" \t")
    paragraph_start = not before.strip() or bool(re.search(r"\n[ \t]*\n$", before))
    alone = not report[match.end() :].split("\n", 1)[0].strip()
    if upper and (how == "rule" or paragraph_start or alone):
        return name
    return None


def split_sections(report: str) -> list[tuple[str, str]]:
    """(canonical heading, raw text) pairs in report order; text before the first heading is "preamble" (a
    report without headings is one "preamble" section). Empty findings/impression sections are removed."""
    starts = [(m, name) for m in _CANDIDATE.finditer(report) if (name := _is_heading(report, m)) is not None]
    sections = [("preamble", report[: starts[0][0].start()] if starts else report)]
    for index, (match, name) in enumerate(starts):
        end = starts[index + 1][0].start() if index + 1 < len(starts) else len(report)
        sections.append((name, report[match.end() : end]))
    return [(n, t) for n, t in sections if n not in ("findings", "impression", COMBINED) or t.strip()]


def extract_sections(report: str) -> dict[str, str]:
    """Canonical section name -> cleaned text (a repeated heading's texts are joined)."""
    found: dict[str, str] = {}
    for name, text in split_sections(report):
        cleaned = _clean(text)
        if cleaned:
            found[name] = f"{found[name]} {cleaned}" if name in found else cleaned
    return found


def administrative_headings(text: str) -> list[str]:
    """Administrative headings (EXAMINATION:, INDICATION: ...) found inside ``text``: a fallback text holding them
    is probably a whole unparsed report."""
    return sorted({m.group(1).upper() for m in _ADMIN_HEADING.finditer(text)})


def _custom_rule(report: str, study: str | None) -> str | None:
    if study in CUSTOM_INDICES:
        start, end = CUSTOM_INDICES[study]
        return _clean(report[start:end])
    if study in CUSTOM_SECTION_NAMES:
        texts = [text for name, text in split_sections(report) if name == CUSTOM_SECTION_NAMES[study]]
        return _clean(texts[-1]) if texts else None
    return None


def report_text(
    report: str,
    sections: Sequence[str] = ("findings", "impression"),
    fallback: str = "last_section",
    study: str | None = None,
) -> tuple[str, str]:
    """(text, source) for one report. source: the "+"-joined requested sections found (e.g.
    "findings+impression", "impression"), "fallback", "official_custom_rule" (``study``, e.g. "s50525523", is one
    of the official parser's special cases) or "none" (text is then "")."""
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
    custom = _custom_rule(report, study)
    if custom is not None:
        return (custom, CUSTOM_RULE) if custom else ("", NO_TEXT)
    found = extract_sections(report)
    parts: list[str] = []
    names: list[str] = []
    for wanted in sections:
        name = normalise_heading(wanted)[0]
        if name in found:
            key = name
        elif name in ("findings", "impression") and COMBINED in found:
            key, name = COMBINED, "findings+impression"
        else:
            continue
        if found[key] not in parts:
            parts.append(found[key])
            names.append(name)
    if parts:
        return " ".join(parts), "+".join(names)
    if fallback == "last_section":
        split = split_sections(report)
        paragraphs = _BLANK_LINE.split(split[-1][1].strip(), maxsplit=1) if len(split) > 1 else []
        if not {"findings", "impression", COMBINED} & {n for n, _ in split} and len(paragraphs) == 2:
            cleaned = _clean(paragraphs[1])  # the official "last_paragraph"
            if cleaned:
                return cleaned, FALLBACK
        for name, text in reversed(split):
            cleaned = _clean(text)
            if cleaned and (name not in ADMINISTRATIVE or (name == "preamble" and len(split) == 1)):
                return cleaned, FALLBACK
    return "", NO_TEXT
