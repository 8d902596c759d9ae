"""Free-text chest X-ray reports for synthetic cases, paraphrased from templates, with CheXpert-style labels.

Each positive finding is stated in FINDINGS and IMPRESSION with varied wording: with probability
``class_name_rate`` a template containing the class name itself ("cardiomegaly", "pleural effusion"...), else a
synonym ("enlarged cardiac silhouette", "blunting of the costophrenic angle"...). Absent findings are negated by
name with probability ``negation_rate`` ("No pleural effusion."), which the labels record as 0 (CheXpert labeler
convention); unmentioned findings stay blank. Hedged findings ("Possible ...") are labelled -1.
Report layouts vary like MIMIC-CXR: FINDINGS + IMPRESSION, IMPRESSION only, FINDINGS only, a combined
FINDINGS AND IMPRESSION section, a non-standard heading; a rare report has no usable text at all.
"""

from __future__ import annotations

import textwrap

import numpy as np

from ..data.chexpert import CHEXPERT_CLASSES
from .synthetic_cxr_cases import CXRCase

_SIZE = ("small", "moderate", "large")
_SEVERITY = ("mild", "moderate", "severe")

POSITIVE_NAMED = {
    "Cardiomegaly": [
        "There is {sev} cardiomegaly.",
        "{Sev} cardiomegaly.",
        "Cardiomegaly is present.",
        "The heart is enlarged, consistent with cardiomegaly.",
        "Stable {sev} cardiomegaly.",
    ],
    "Pleural Effusion": [
        "There {is} {a}{size} {side} pleural {effusion}.",
        "{Size} {side} pleural {effusion}.",
        "{Size} {side} pleural {effusion} with blunting of the costophrenic {angle}.",
        "{A}{size} {side} pleural {effusion} {is} present, with a meniscus.",
    ],
    "Consolidation": [
        "Consolidation in the {lobe}.",
        "There is dense consolidation in the {lobe} with air bronchograms.",
        "Focal consolidation is seen in the {lobe}.",
        "{Lobe} consolidation with air bronchograms.",
    ],
    "Edema": [
        "There is {sev} pulmonary edema.",
        "{Sev} pulmonary edema.",
        "Bilateral perihilar opacities consistent with pulmonary edema.",
        "Findings are consistent with {sev} interstitial edema.",
        "Perihilar haziness in a bat-wing distribution, consistent with edema.",
    ],
    "Atelectasis": [
        "Plate-like atelectasis at the {side} lung base.",
        "{Side} basilar atelectasis with elevation of the {side} hemidiaphragm.",
        "There is subsegmental atelectasis at the {side} base.",
        "Linear opacities at the {side} base, likely atelectasis.",
        "Discoid atelectasis in the {side} lower lobe.",
    ],
}
POSITIVE_SYNONYM = {
    "Cardiomegaly": [
        "The cardiac silhouette is enlarged.",
        "Enlarged cardiac silhouette.",
        "Heart size is increased.",
        "{Sev} enlargement of the cardiac silhouette.",
        "The heart is {sev}ly enlarged.",
    ],
    "Pleural Effusion": [
        "Blunting of the {side} costophrenic {angle} with a meniscus, consistent with {size} pleural fluid.",
        "{Size} {side} basilar opacity with a meniscus, compatible with layering fluid.",
        "{Side} layering fluid with blunting of the costophrenic {angle}.",
        "{Size} {side} {effusion}.",
    ],
    "Consolidation": [
        "Dense airspace opacity in the {lobe} with air bronchograms.",
        "Lobar opacification of the {lobe}.",
        "Focal airspace disease in the {lobe}.",
        "There is an opacity in the {lobe} with air bronchograms, compatible with infection.",
    ],
    "Edema": [
        "Bilateral perihilar haziness with vascular indistinctness, consistent with fluid overload.",
        "Pulmonary vascular congestion with perihilar haze.",
        "Diffuse bilateral hazy perihilar opacities in a bat-wing pattern.",
        "Interstitial markings are increased bilaterally with indistinct vessels, suggesting volume overload.",
    ],
    "Atelectasis": [
        "Plate-like linear opacities at the {side} base with volume loss.",
        "Elevation of the {side} hemidiaphragm with linear opacities at the {side} base, compatible with volume loss.",
        "Band-like collapse at the {side} lung base.",
        "Streaky {side} basilar opacities with volume loss.",
    ],
}
IMPRESSION_NAMED = {
    "Cardiomegaly": ["{Sev} cardiomegaly.", "Cardiomegaly.", "Cardiomegaly without acute process."],
    "Pleural Effusion": ["{Size} {side} pleural {effusion}.", "{Side} pleural {effusion}."],
    "Consolidation": ["{Lobe} consolidation.", "Consolidation in the {lobe}, concerning for infection."],
    "Edema": ["{Sev} pulmonary edema.", "Pulmonary edema."],
    "Atelectasis": ["{Side} basilar atelectasis.", "Atelectasis at the {side} base."],
}
IMPRESSION_SYNONYM = {
    "Cardiomegaly": ["Enlarged heart.", "Enlarged cardiac silhouette."],
    "Pleural Effusion": ["{Side} {effusion}.", "{Side} pleural fluid."],
    "Consolidation": ["{Lobe} airspace disease, likely infectious.", "Opacification of the {lobe}."],
    "Edema": ["Fluid overload.", "Pulmonary vascular congestion."],
    "Atelectasis": ["Volume loss at the {side} base.", "Linear {side} basilar opacities with volume loss."],
}
NEGATIONS = {
    "Cardiomegaly": ["No cardiomegaly.", "Heart size is normal without cardiomegaly."],
    "Pleural Effusion": ["No pleural effusion.", "There is no pleural effusion.", "No pleural effusion is seen."],
    "Consolidation": ["No focal consolidation.", "There is no consolidation.", "No focal consolidation is seen."],
    "Edema": ["No pulmonary edema.", "There is no pulmonary edema.", "No evidence of pulmonary edema."],
    "Atelectasis": ["No atelectasis.", "No evidence of atelectasis."],
}
HEDGES = {
    "Cardiomegaly": "Borderline cardiomegaly.",
    "Pleural Effusion": "Possible small {side} pleural effusion.",
    "Consolidation": "Cannot exclude early consolidation in the {lobe}.",
    "Edema": "Mild vascular congestion, cannot exclude early edema.",
    "Atelectasis": "Possible minimal atelectasis at the {side} base.",
}
NORMAL_HEART = [
    "The heart size is normal.",
    "Cardiac silhouette is within normal limits.",
    "Normal heart size.",
    "The cardiomediastinal silhouette is unremarkable.",
    "Heart and mediastinal contours are normal.",
]
CLEAR_LUNGS = [
    "The lungs are clear.",
    "Lungs are well expanded and clear.",
    "The lungs are clear without focal opacity.",
]
SHARP_ANGLES = ["Costophrenic angles are sharp.", "The costophrenic angles are clear."]
OTHER_NORMALS = [
    "No pneumothorax.",
    "There is no pneumothorax.",
    "Osseous structures are intact.",
    "No acute osseous abnormality.",
    "The hila are normal.",
    "Mediastinal contours are normal.",
]
NORMAL_IMPRESSIONS = [
    "No acute cardiopulmonary process.",
    "No acute intrathoracic abnormality.",
    "Normal chest radiograph.",
    "No evidence of acute cardiopulmonary disease.",
]
DEVICES = {
    "tube": ["Endotracheal tube terminates {cm} cm above the carina.", "Enteric tube courses below the diaphragm."],
    "pacemaker": [
        "Left chest wall pacemaker with lead terminating in the right ventricle.",
        "Cardiac pacing device with a single lead in place.",
    ],
}
INDICATIONS = [
    "shortness of breath",
    "cough",
    "fever",
    "chest pain",
    "hypoxia",
    "preoperative evaluation",
    "dyspnea",
    "status post fall",
    "weakness",
    "tachycardia",
    "leg swelling",
    "follow-up",
]
EXAMINATIONS = {"PA": ["CHEST (PA AND LAT)", "CHEST PA AND LATERAL"], "AP": ["CHEST (PORTABLE AP)", "PORTABLE CHEST"]}
LAYOUTS = ("standard", "impression_only", "findings_only", "combined", "nonstandard")
LAYOUT_WEIGHTS = (0.80, 0.08, 0.06, 0.04, 0.02)


def _fill(template: str, attributes: dict, rng: np.random.Generator) -> str:
    severity = attributes.get("severity", 0.8)
    level = 0 if severity < 0.8 else 1 if severity < 0.92 else 2
    side = attributes.get("side", "right")
    words = {
        "sev": _SEVERITY[level],
        "size": _SIZE[level],
        "side": side,
        "lobe": attributes.get("lobe", "right lower lobe"),
        "effusion": "effusions" if side == "bilateral" else "effusion",
        "angle": "angles" if side == "bilateral" else "angle",
        "is": "are" if side == "bilateral" else "is",
        "a": "" if side == "bilateral" else "a ",
        "cm": str(int(rng.integers(3, 6))),
    }
    words.update({key.capitalize(): value.capitalize() for key, value in words.items()})
    words["A"] = "" if side == "bilateral" else "A "
    text = template.format(**words).strip()
    return text[:1].upper() + text[1:]


def _choose(options: list[str], rng: np.random.Generator) -> str:
    return options[int(rng.integers(len(options)))]


def _wrap(paragraph: str) -> str:
    return textwrap.fill(paragraph, width=76, initial_indent=" ", subsequent_indent=" ")


def write_report(
    case: CXRCase,
    rng: np.random.Generator,
    *,
    view: str = "PA",
    class_name_rate: float = 0.6,
    negation_rate: float = 0.3,
    layout: str | None = None,
) -> tuple[str, dict[str, float]]:
    """(report text, CheXpert labels) for one case; labels map each CheXpert class to 1, 0, -1 or NaN."""
    labels = {name: float("nan") for name in CHEXPERT_CLASSES}
    findings: list[str] = []
    if case.device is not None:
        findings.append(_fill(_choose(DEVICES[case.device], rng), {}, rng))
        labels["Support Devices"] = 1.0
    positives = list(case.findings)
    rng.shuffle(positives)
    if "Cardiomegaly" not in case.findings and "Cardiomegaly" not in case.uncertain:
        findings.append(_choose(NORMAL_HEART, rng))
    impressions = []
    for name in positives:
        named = rng.random() < class_name_rate
        findings.append(
            _fill(_choose((POSITIVE_NAMED if named else POSITIVE_SYNONYM)[name], rng), case.findings[name], rng)
        )
        named = rng.random() < class_name_rate
        impressions.append(
            _fill(_choose((IMPRESSION_NAMED if named else IMPRESSION_SYNONYM)[name], rng), case.findings[name], rng)
        )
        labels[name] = 1.0
    for name, attributes in case.uncertain.items():
        findings.append(_fill(HEDGES[name], attributes, rng))
        impressions.append(_fill(HEDGES[name], attributes, rng))
        labels[name] = -1.0
    lung_findings = {"Consolidation", "Edema", "Atelectasis", "Pleural Effusion"} & (
        set(case.findings) | set(case.uncertain)
    )
    if not lung_findings and rng.random() < 0.7:
        findings.append(_choose(CLEAR_LUNGS, rng))
    for name in NEGATIONS:
        if name in case.findings or name in case.uncertain or rng.random() >= negation_rate:
            continue
        findings.append(_choose(NEGATIONS[name], rng))
        labels[name] = 0.0
    if "Pleural Effusion" not in case.findings and "Pleural Effusion" not in case.uncertain and rng.random() < 0.3:
        findings.append(_choose(SHARP_ANGLES, rng))
    for sentence in rng.choice(OTHER_NORMALS, size=int(rng.integers(1, 3)), replace=False):
        findings.append(str(sentence))
        if "pneumothorax" in sentence:
            labels["Pneumothorax"] = 0.0
    if not positives and not case.uncertain:
        impressions = [_choose(NORMAL_IMPRESSIONS, rng)]
        labels["No Finding"] = 1.0
    impression = (
        " ".join(impressions) if len(impressions) < 2 else " ".join(f"{i + 1}. {s}" for i, s in enumerate(impressions))
    )
    layout = layout or str(rng.choice(LAYOUTS, p=LAYOUT_WEIGHTS))
    return _layout(layout, " ".join(findings), impression, rng, view), labels


def _layout(layout: str, findings: str, impression: str, rng: np.random.Generator, view: str) -> str:
    view = "AP" if view.upper() == "AP" else "PA"
    header = [
        "                                 FINAL REPORT",
        f" EXAMINATION:  {_choose(EXAMINATIONS[view], rng)}",
        "",
        f" INDICATION:  ___-year-old {_choose(['man', 'woman'], rng)} with {_choose(INDICATIONS, rng)}.",
        "",
        f" TECHNIQUE:  Chest {'PA and lateral' if view == 'PA' else 'portable AP'} views.",
        "",
        f" COMPARISON:  {_choose(['None.', '___.', 'Chest radiograph from ___.'], rng)}",
        "",
    ]
    if layout == "standard":
        body = [" FINDINGS:", "", _wrap(findings), "", " IMPRESSION:", "", _wrap(impression)]
    elif layout == "impression_only":
        body = [" IMPRESSION:", "", _wrap(findings + " " + impression)]
    elif layout == "findings_only":
        body = [" FINDINGS:", "", _wrap(findings + " " + impression)]
    elif layout == "combined":
        body = [" FINDINGS AND IMPRESSION:", "", _wrap(findings + " " + impression)]
    elif layout == "nonstandard":
        body = [
            f" {'PA AND LATERAL' if view == 'PA' else 'PORTABLE'} VIEWS OF THE CHEST:",
            "",
            _wrap(findings + " " + impression),
        ]
    elif layout == "empty":
        body = []
    else:
        raise ValueError(f"unknown report layout {layout!r}; use one of {LAYOUTS + ('empty',)}")
    return "\n".join(header + body) + "\n"
