"""What a synthetic chest X-ray study shows (`CXRCase`): its CheXpert-5x200 findings with their attributes (side,
lobe, severity), hedged findings and a support device, drawn at random for a case kind. `ChestXRayRenderer`
draws the image of a case, `synthetic_reports` writes its report."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CXR_FINDINGS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
LOBES = {
    "right": ("right upper lobe", "right middle lobe", "right lower lobe"),
    "left": ("left upper lobe", "left lower lobe"),
}


@dataclass
class CXRCase:
    """What one study shows: findings (name -> attributes), hedged findings drawn faintly, a support device."""

    findings: dict[str, dict] = field(default_factory=dict)
    uncertain: dict[str, dict] = field(default_factory=dict)
    device: str | None = None  # "tube" or "pacemaker"


def finding_attributes(name: str, rng: np.random.Generator, severity: float | None = None) -> dict:
    """Random attributes (side, lobe, size) of one finding; severity in [0.7, 1] unless given."""
    severity = float(rng.uniform(0.7, 1.0)) if severity is None else severity
    attributes = {"severity": severity}
    if name == "Pleural Effusion":
        attributes["side"] = str(rng.choice(["right", "left", "bilateral"], p=[0.4, 0.3, 0.3]))
    elif name in ("Consolidation", "Atelectasis"):
        side = str(rng.choice(["right", "left"]))
        attributes["side"] = side
        if name == "Consolidation":
            attributes["lobe"] = str(rng.choice(LOBES[side]))
    return attributes


def sample_case(rng: np.random.Generator, kind: str, device_rate: float = 0.0, uncertain_rate: float = 0.0) -> CXRCase:
    """A case of ``kind``: "normal", one of :data:`CXR_FINDINGS` (single finding), or "multi" (2-3 findings)."""
    case = CXRCase()
    if kind == "multi":
        names = rng.choice(CXR_FINDINGS, size=int(rng.choice([2, 3], p=[0.75, 0.25])), replace=False)
    elif kind == "normal":
        names = []
    elif kind in CXR_FINDINGS:
        names = [kind]
    else:
        raise ValueError(f"unknown case kind {kind!r}; use 'normal', 'multi' or one of {CXR_FINDINGS}")
    for name in sorted(names):
        case.findings[str(name)] = finding_attributes(str(name), rng)
    if rng.random() < uncertain_rate:
        absent = [n for n in CXR_FINDINGS if n not in case.findings]
        name = str(rng.choice(absent))
        case.uncertain[name] = finding_attributes(name, rng, severity=0.45)
    if rng.random() < device_rate:
        case.device = str(rng.choice(["tube", "pacemaker"]))
    return case


__all__ = ["CXR_FINDINGS", "LOBES", "CXRCase", "finding_attributes", "sample_case"]
