"""Procedural mammogram-like images with the four BI-RADS breast densities and BI-RADS-related findings.

Anatomy: breast silhouette against the chest wall (right breast: chest wall on the image right), skin line,
subcutaneous fat, fibroglandular tissue whose area share follows the density (1 almost entirely fat ... 4 extremely
dense), ductal streaks converging on the nipple, pectoral muscle on MLO views, noise. Findings follow the BI-RADS
assessment letter of the exam side: N nothing; B oval circumscribed mass or coarse scattered calcifications;
P small oval/round mass or a round grouped cluster; A focal asymmetry; S irregular mass or amorphous/pleomorphic
grouped calcifications; M spiculated irregular high-density mass (often with segmental pleomorphic calcifications);
K spiculated mass with a biopsy clip. Conspicuity grows with suspicion (benign masses large and faint, probably
benign ones small, suspicious ones irregular, malignant ones large, bright and spiculated; coarse benign vs fine
pleomorphic calcifications), so a linear probe on learned image features can tell the categories apart at the
demo's 64 px. The code tables (``SYNTHETIC_LEGEND``) are the demo's own, written to the
legend CSV the EMBED loader reads.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

DENSITY_FRACTIONS = {1: (0.04, 0.12), 2: (0.22, 0.38), 3: (0.5, 0.65), 4: (0.75, 0.9)}
MASS_SIZE = {"B": 1.3, "P": 0.75, "S": 1.05, "M": 1.4, "K": 1.4}  # radius factor per BI-RADS letter
SYNTHETIC_LEGEND = {
    "massshape": {"O": "oval", "R": "round", "X": "irregular", "L": "lobulated"},
    "massmargin": {"D": "circumscribed", "M": "microlobulated", "I": "indistinct", "S": "spiculated"},
    "massdens": {"+": "high density", "=": "equal density", "-": "low density"},
    "calcfind": {"A": "amorphous", "P": "pleomorphic", "C": "coarse heterogeneous", "R": "round"},
    "calcdistri": {"G": "grouped", "S": "segmental", "R": "regional", "D": "diffuse"},
}


def _normal_quantile(upper_share: float) -> float:
    """z with P(Z > z) = upper_share (rational approximation, |error| < 5e-3)."""
    p = min(max(upper_share, 1e-4), 1 - 1e-4)
    t = np.sqrt(-2.0 * np.log(p if p < 0.5 else 1.0 - p))
    z = t - (2.515517 + 0.802853 * t + 0.010328 * t * t) / (1.0 + 1.432788 * t + 0.189269 * t * t + 0.001308 * t**3)
    return float(z if p < 0.5 else -z)


@lru_cache(maxsize=4)
def _fields(height: int, width: int) -> dict[str, np.ndarray]:
    """Cached grids and banks of smooth standardised tissue textures and noise."""
    rng = np.random.default_rng(7051)
    ys = ((np.arange(height) + 0.5) / height * 2.0 - 1.0).astype(np.float32)
    xs = ((np.arange(width) + 0.5) / width).astype(np.float32)
    s, t = np.meshgrid(ys, xs, indexing="ij")
    textures = []
    for _ in range(6):
        field = np.zeros((height, width), np.float32)
        for scale, count in ((7.0, 16), (16.0, 24), (30.0, 24)):
            for _ in range(count):
                kx, ky = rng.normal(0, scale), rng.normal(0, scale)
                field += np.cos(kx * t + ky * s + rng.uniform(0, 6.3)).astype(np.float32) * (7.0 / scale) ** 0.7
        textures.append((field - field.mean()) / field.std())
    return {
        "s": s,
        "t": t,
        "textures": np.stack(textures),
        "noise": rng.standard_normal((3, height, width), dtype=np.float32),
    }


def sample_findings(letter: str, rng: np.random.Generator) -> dict[str, str]:
    """Clinical codes (massshape, massmargin, massdens, calcfind, calcdistri) drawn for a BI-RADS letter."""
    pick = lambda options: str(rng.choice(options))
    if letter == "B":
        return (
            {"massshape": "O", "massmargin": "D", "massdens": pick(["-", "="])}
            if rng.random() < 0.5
            else {"calcfind": "C", "calcdistri": "D"}
        )
    if letter == "P":
        return (
            {"massshape": pick(["O", "R"]), "massmargin": "D", "massdens": "="}
            if rng.random() < 0.6
            else {"calcfind": "R", "calcdistri": "G"}
        )
    if letter == "A":
        return {}
    if letter == "S":
        return (
            {"massshape": pick(["X", "L"]), "massmargin": pick(["I", "M"]), "massdens": pick(["=", "+"])}
            if rng.random() < 0.6
            else {"calcfind": pick(["A", "P"]), "calcdistri": "G"}
        )
    if letter in ("M", "K"):
        codes = {"massshape": "X", "massmargin": "S", "massdens": "+"}
        if letter == "M" and rng.random() < 0.5:
            codes.update({"calcfind": "P", "calcdistri": "S"})
        return codes
    return {}


def render_mammogram(
    rng: np.random.Generator,
    density: int,
    letter: str,
    findings: dict[str, str],
    *,
    laterality: str = "L",
    view: str = "CC",
    height: int = 128,
    width: int = 104,
) -> np.ndarray:
    """(height, width) float32 image in [0, 1] (dense = bright) of one breast."""
    f = _fields(height, width)
    s = f["s"]
    t = f["t"] if laterality == "L" else 1.0 - f["t"]  # distance from the chest wall
    depth, half, centre = (
        rng.uniform(0.72, 0.92),
        rng.uniform(0.78, 0.92),
        rng.uniform(-0.06, 0.06) + (0.08 if view == "MLO" else 0.0),
    )
    bt, bs = t * np.float32(1.0 / depth), (s - centre) * np.float32(1.0 / half)
    inside = 1.0 - bt * bt - bs * bs
    breast = np.clip(inside * 12.0, 0.0, 1.0)
    if view == "MLO":  # the MLO breast runs up along the chest wall into the axilla
        tail = np.clip((0.55 * (centre - s) / (centre + 1.0) - t + 0.05) * 12.0, 0, 1) * (s < centre).astype(
            np.float32
        )
        breast = np.maximum(breast, tail)
    image = 0.02 + 0.26 * breast + 0.12 * np.clip(1.0 - inside * 25.0, 0, 1) * breast  # fat, skin line

    low, high = DENSITY_FRACTIONS[int(density)] if int(density) in DENSITY_FRACTIONS else DENSITY_FRACTIONS[2]
    share = rng.uniform(low, high)
    texture = f["textures"][int(rng.integers(len(f["textures"])))]
    nipple = np.hypot(t - depth, (s - centre) * 0.6)
    streaks = (
        0.3
        * np.cos(np.arctan2(s - centre, depth + 0.3 - t) * 18.0 + rng.uniform(0, 6.3))
        * np.clip(nipple * 4.0, 0, 1)
    )
    region = np.clip((inside - 0.08) * 6.0, 0.0, 1.0)
    tissue = np.clip((texture + streaks - 0.6 * nipple - _normal_quantile(share) + 0.3) * 0.7 + 0.5, 0.0, 1.0) * region
    image += 0.4 * tissue
    if view == "MLO":
        pectoral = np.clip((0.35 * (1.0 - (s + 1.0) / 1.1) - t) * 25.0, 0.0, 1.0)
        image += 0.22 * pectoral * breast

    cy, cx = centre + rng.uniform(-0.35, 0.35) * half, rng.uniform(0.3, 0.75) * depth
    if letter == "A":  # focal asymmetry
        image += 0.22 * np.exp(-(((t - cx) / 0.12) ** 2 + ((s - cy) / 0.22) ** 2)) * breast
    if "massshape" in findings:
        image += _mass(f, s, t, cx, cy, findings, rng, MASS_SIZE.get(letter, 1.0)) * breast
    if "calcfind" in findings:
        _calcifications(image, breast, findings, rng, cx, cy, laterality, depth, centre, half)
    if letter == "K":  # biopsy clip: a bright bar beside the mass (a few pixels at the demo's resolution)
        clip_t, clip_s = min(cx + 0.18, depth - 0.1), cy - 0.25 if cy > centre else cy + 0.25
        row, col = int((clip_s + 1.0) / 2.0 * height), int((clip_t if laterality == "L" else 1.0 - clip_t) * width)
        size = max(2, height // 32)
        image[max(row - 2 * size, 0) : row + 2 * size, max(col - size // 2, 0) : col + size // 2 + 1] = 1.0
    image += 0.012 * f["noise"][int(rng.integers(3))] * (0.3 + breast)
    return np.clip(image, 0.0, 1.0)


def _mass(f, s, t, cx, cy, findings, rng, size: float = 1.0) -> np.ndarray:
    radius = rng.uniform(0.06, 0.08) * size * (0.8 if findings["massshape"] == "R" else 1.0)
    elongation = 1.4 if findings["massshape"] == "O" else 1.0
    angle = np.arctan2(s - cy, (t - cx) * 2.0)
    r = np.hypot((t - cx) * 2.0 / elongation, s - cy)
    if findings["massshape"] in ("X", "L"):
        lobes = 3 if findings["massshape"] == "L" else 7
        radius = radius * (1.0 + 0.25 * np.cos(lobes * angle + rng.uniform(0, 6.3)) + 0.12 * np.cos(11 * angle))
    body = np.clip((radius - r) * 60.0, 0.0, 1.0)
    if findings.get("massmargin") == "S":  # spicules radiating from the mass
        spikes = np.clip(np.cos(angle * 16.0 + rng.uniform(0, 6.3)) - 0.85, 0.0, 1.0) * 6.0
        body = np.maximum(
            body, spikes * np.clip(1.0 - (r - radius) / (2.2 * np.mean(radius)), 0.0, 1.0) * (r > radius * 0.9)
        )
    strength = {"+": 0.5, "=": 0.32, "-": 0.2}[findings.get("massdens", "=")]
    return strength * body.astype(np.float32)


def _calcifications(image, breast, findings, rng, cx, cy, laterality, depth, centre, half) -> None:
    height, width = image.shape
    kind, distribution = findings["calcfind"], findings.get("calcdistri", "G")
    spread = {"G": 0.05, "S": 0.18, "R": 0.25, "D": 0.6}[distribution]
    count = int(rng.integers(6, 14)) if distribution in ("G", "S") else int(rng.integers(8, 20))
    size = max(1, height // {"C": 32, "R": 48, "P": 48, "A": 64}[kind])  # coarse benign ones largest
    for _ in range(count):
        t = np.clip(cx + rng.normal(0, spread * (0.4 if distribution == "S" else 1.0)), 0.05, depth - 0.05)
        s = np.clip(cy + rng.normal(0, spread), centre - half + 0.05, centre + half - 0.05)
        row, col = (
            min(int((s + 1.0) / 2.0 * height), height - 1),
            min(int((t if laterality == "L" else 1.0 - t) * width), width - 1),
        )
        if breast[row, col] > 0.5:
            image[row : row + size, col : col + size] = 0.95 if kind != "A" else 0.7
