"""Section extraction from free-text radiology reports (MIMIC-CXR style ``FINDINGS:`` / ``IMPRESSION:`` headings).

Rules (documented behaviour of :func:`report_text`):

1. Headings are upper-case words at the start of a line followed by a colon (``FINDINGS:``, ``IMPRESSION:``,
   ``FINDINGS AND IMPRESSION:``...). Synonyms are normalised: IMPRESSIONS/CONCLUSION(S)/SUMMARY -> impression,
   FINDING -> findings; a combined FINDINGS AND IMPRESSION (or FINDINGS/IMPRESSION) section serves for both.
2. The requested sections present are joined in the requested order (each text once).
3. If none of them is present and ``fallback="last_section"``, the last section that is not administrative
   (examination, indication, history, technique, comparison, notification, recommendation...) is used; a report
   without any heading counts as one section. With ``fallback="none"`` there is no text.
4. Whitespace is collapsed; a result without any letter means "no usable text" (an empty string).
"""

from __future__ import annotations

import re
from typing import Sequence

_HEADING = re.compile(r"^[ \t]*([A-Z][A-Z0-9 ()/&,'-]{1,60}?)[ \t]*:", re.MULTILINE)
_SYNONYMS = {
    "finding": "findings",
    "findings": "findings",
    "impression": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "conclusions": "impression",
    "summary": "impression",
    "findings and impression": "findings and impression",
    "findings/impression": "findings and impression",
    "impression and findings": "findings and impression",
    "findings and impressions": "findings and impression",
}
_COMBINED = "findings and impression"
_ADMINISTRATIVE = (
    "examination", "exam", "indication", "history", "clinical history", "reason for exam", "reason for examination",
    "technique", "comparison", "comparisons", "notification", "recommendation", "recommendations",
    "recommendation(s)", "wet read", "addendum", "procedure", "type of examination", "final report",
)
FALLBACKS = ("last_section", "none")


def _normalise_heading(heading: str) -> str:
    name = " ".join(heading.lower().split())
    return _SYNONYMS.get(name, name)


def _clean(text: str) -> str:
    text = " ".join(text.replace("FINAL REPORT", " ").split())
    return text if re.search(r"[A-Za-z]", text) else ""


def split_sections(report: str) -> list[tuple[str, str]]:
    """(normalised heading, text) pairs in report order; text before the first heading gets heading ""."""
    sections: list[tuple[str, str]] = []
    matches = list(_HEADING.finditer(report))
    preamble = report[: matches[0].start()] if matches else report
    if _clean(preamble):
        sections.append(("", preamble))
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(report)
        sections.append((_normalise_heading(match.group(1)), report[match.end():end]))
    return sections


def extract_sections(report: str) -> dict[str, str]:
    """Normalised section name -> cleaned text (a repeated heading's texts are joined)."""
    found: dict[str, str] = {}
    for name, text in split_sections(report):
        cleaned = _clean(text)
        if cleaned:
            found[name] = f"{found[name]} {cleaned}" if name in found else cleaned
    return found


def report_text(
    report: str, sections: Sequence[str] = ("findings", "impression"), fallback: str = "last_section"
) -> tuple[str, str]:
    """(text, source) for one report; source is "sections", "fallback" or "none" (text is then "")."""
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
    found = extract_sections(report)
    wanted = [_normalise_heading(name) for name in sections]
    parts: list[str] = []
    for name in wanted:
        key = name if name in found else _COMBINED if name in ("findings", "impression") and _COMBINED in found else None
        if key is not None and found[key] not in parts:
            parts.append(found[key])
    if parts:
        return " ".join(parts), "sections"
    if fallback == "last_section":
        for name, text in reversed(split_sections(report)):
            cleaned = _clean(text)
            if cleaned and name not in _ADMINISTRATIVE:
                return cleaned, "fallback"
    return "", "none"
