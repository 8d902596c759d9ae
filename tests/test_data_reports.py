"""Report sections like the official MIMIC-CXR parser (MIT-LCP/mimic-cxr txt/section_parser.py): report fixtures in
each layout (upper / lower / Title case, study-description headings, typos, wrapped lines, no findings), sources,
fallback warnings, per-study special cases, and the load report of the MIMIC-CXR loader."""

from __future__ import annotations

import logging

import pytest

from cleft_hf.data import load_mimic_cxr, report_text
from cleft_hf.data.reports import administrative_headings, split_sections

HEADER = "                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n \n INDICATION:  ___ with cough\n \n"
LAYOUTS = {  # report -> (text, source)
    "mimic": (
        HEADER + " COMPARISON:  None.\n \n FINDINGS: \n \n Heart size is normal.  Lungs are clear.\n \n"
        " IMPRESSION: \n \n No acute process.\n",
        ("Heart size is normal. Lungs are clear. No acute process.", "findings+impression"),
    ),
    "lower": (
        "examination: chest\n\nindication: cough\n\nfindings: heart normal.\n\nimpression: no acute process.\n",
        ("heart normal. no acute process.", "findings+impression"),
    ),
    "title": (
        "Examination: Chest\nIndication: cough\nFindings: Heart normal.\nImpression: No acute process.\n",
        ("Heart normal. No acute process.", "findings+impression"),
    ),
    "title under upper-case headings": (
        " EXAMINATION: CHEST\n INDICATION: cough\n Findings: Heart normal.\n Impression: Clear.\n",
        ("Heart normal. Clear.", "findings+impression"),
    ),
    "study description + typo": (
        HEADER + " CHEST, TWO VIEWS:\n \n Lungs are clear.\n \n IMPRESSON:\n No acute process.\n",
        ("Lungs are clear. No acute process.", "findings+impression"),
    ),
    "views of the chest": (
        " HISTORY: fever\n PA AND LATERAL VIEWS OF THE CHEST:\n Lungs are clear.",
        ("Lungs are clear.", "findings"),
    ),
    "impression only": (HEADER + " IMPRESSIONS: No acute process.", ("No acute process.", "impression")),
    "combined": (" FINDINGS AND IMPRESSION:\n Small effusion.", ("Small effusion.", "findings+impression")),
    "wrapped upper-case token": (
        " FINDINGS:\n New opacity in the right lower lobe as on the\n CT: consistent with pneumonia.\n",
        ("New opacity in the right lower lobe as on the CT: consistent with pneumonia.", "findings"),
    ),
    "last paragraph": (
        HEADER.replace("cough\n \n", "cough\n Lungs are clear.\n \n No pneumothorax.\n"),
        ("No pneumothorax.", "fallback"),
    ),
    "no headings": ("Lungs are clear, no effusion.", ("Lungs are clear, no effusion.", "fallback")),
    "administrative only": (" EXAMINATION: CHEST\n COMPARISON: None.", ("", "none")),
    "empty findings": (HEADER + " FINDINGS:\n \n IMPRESSION: Clear.", ("Clear.", "impression")),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_report_layouts(layout):
    report, expected = LAYOUTS[layout]
    assert report_text(report) == expected


def test_headings_are_normalised_like_the_official_parser():
    names = [name for name, _ in split_sections(LAYOUTS["study description + typo"][0])]
    assert names == ["preamble", "examination", "indication", "findings", "impression"]
    text = HEADER + " Reason for exam: pain\n Clinical history: fall\n Comparisons: ___\n Findings: Clear lungs."
    assert [name for name, _ in split_sections(text)][-4:] == ["indication", "history", "comparison", "findings"]


def test_requested_sections_order_and_fallback_none():
    report = LAYOUTS["mimic"][0]
    assert report_text(report, sections=("impression",)) == ("No acute process.", "impression")
    assert report_text(report, sections=("impression", "findings"))[0].startswith("No acute process.")
    assert report_text(LAYOUTS["no headings"][0], fallback="none") == ("", "none")
    with pytest.raises(ValueError, match="fallback must be one of"):
        report_text(report, fallback="whole")


def test_official_special_cases_by_study():
    report = "x" * 200 + " The lungs are clear. " + "y" * 200
    assert report_text(report, study="s50525523") == (report[201:349].strip(), "official_custom_rule")
    assert report_text(LAYOUTS["mimic"][0], study="s58235663") == ("", "none")  # "no findings at all"
    in_technique = HEADER + " TECHNIQUE: Lungs are clear, no effusion.\n"
    assert report_text(in_technique, study="s59279892") == ("Lungs are clear, no effusion.", "official_custom_rule")
    assert report_text(in_technique)[1] == "none"


def test_administrative_headings_in_text():
    assert administrative_headings("EXAMINATION: chest. Indication: cough. Lungs clear.") == [
        "EXAMINATION",
        "INDICATION",
    ]
    assert administrative_headings("Lungs are clear.") == []


@pytest.fixture
def mimic_tree(tmp_path):
    from cleft_hf.demo.synthetic import write_demo_mimic_cxr

    write_demo_mimic_cxr(tmp_path, 40, image_size=32, seed=4, n_test_per_class=2, empty_report_rate=0.0)
    return tmp_path


def test_loader_reports_text_sources_and_warns_on_unparsed_fallbacks(mimic_tree, caplog):
    reports = sorted((mimic_tree / "files").glob("p*/p*/s*.txt"))
    reports[0].write_text(
        "Report of ___ EXAMINATION: CHEST INDICATION: cough. Lungs are clear.\n"
    )  # one unparsed line
    with caplog.at_level(logging.INFO, logger="cleft_hf.data._tables"):
        data, report = load_mimic_cxr(mimic_tree, views=None, return_report=True)
    assert sum(report.text_sources.values()) == len(reports)
    assert set(report.text_sources) <= {"findings+impression", "impression", "findings", "fallback", "none"}
    assert report.text_sources["findings+impression"] > len(reports) / 2
    assert report.fallback_with_headings == [reports[0].stem]
    assert "report text source per study" in caplog.text and "contain administrative headings" in caplog.text
