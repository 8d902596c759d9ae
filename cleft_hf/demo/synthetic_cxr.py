"""Procedural chest X-ray-like images where the CheXpert-5x200 findings look the way they do on radiographs.

Anatomy (PA view, patient's right on the image left): soft-tissue torso with shoulders, neck and arms on black air,
two lung fields (dark, rounded apices) with branching vessels from the hila, mediastinum with trachea and aortic
knob, heart, hemidiaphragm domes (the right one higher), liver, gastric bubble, spine, posterior/anterior ribs,
clavicles, breast shadows, a side marker, quantum noise; patient size, position, rotation, exposure and noise vary.

Findings: Cardiomegaly = heart 0.62-0.69 of the thoracic width (normal 0.40-0.47); Pleural Effusion = basal opacity
with a meniscus rising laterally, blunted costophrenic angle; Consolidation = dense lobar opacity with air
bronchograms; Edema = bilateral perihilar (bat-wing) haze; Atelectasis = plate-like linear opacities at a base with
volume loss (elevated hemidiaphragm, mediastinal shift). Support devices: endotracheal/enteric tube or pacemaker.
Everything is drawn with vectorised numpy on cached per-size fields (`synthetic_cxr_textures`); small structures
only in their windows. The cases themselves (`CXRCase`) are sampled in `synthetic_cxr_cases`.
"""

from __future__ import annotations

import numpy as np

from .synthetic_cxr_cases import CXRCase
from .synthetic_cxr_textures import per_size_fields, segment_profile, soft_ramp

_SIGN = {"right": -1.0, "left": 1.0}  # patient's right is on the image left


class ChestXRayRenderer:
    """Draws :class:`CXRCase` instances as uint8 grey images of ``size`` x ``size``."""

    def __init__(self, size: int = 128):
        if size < 32:
            raise ValueError(f"image size must be >= 32 pixels, got {size}")
        self.size = size
        self.fields = per_size_fields(size)

    def _patient(self, rng: np.random.Generator) -> dict[str, float]:
        ranges = {
            "shift_u": (-0.05, 0.05),
            "shift_v": (-0.05, 0.05),
            "scale": (0.88, 1.02),
            "angle": (-0.05, 0.05),
            "thorax": (0.70, 0.80),
            "apex": (-0.70, -0.60),
            "dome": (0.36, 0.46),
            "dome_gap": (0.02, 0.06),
            "ctr": (0.40, 0.47),
            "mediastinum": (0.08, 0.10),
            "tissue": (0.42, 0.52),
            "air": (0.30, 0.36),
            "gain": (0.9, 1.15),
            "offset": (-0.04, 0.04),
            "gamma": (0.85, 1.2),
            "noise": (0.008, 0.022),
            "breasts": (0.0, 1.0),
        }
        return {name: float(rng.uniform(low, high)) for name, (low, high) in ranges.items()}

    def render(self, case: CXRCase, rng: np.random.Generator, view: str = "PA") -> np.ndarray:
        """(size, size) uint8 image of ``case``; ``view`` "PA"/"AP" (frontal) or "LATERAL"."""
        p = self._patient(rng)
        f = self.fields
        cos, sin, inv = np.cos(p["angle"]), np.sin(p["angle"]), 1.0 / p["scale"]
        du, dv = f["u"] - p["shift_u"], f["v"] - p["shift_v"]
        x, y = (cos * inv) * du + (sin * inv) * dv, (cos * inv) * dv - (sin * inv) * du
        p["transform"] = (cos, sin)
        density = self._lateral(case, p, x, y) if view.upper() == "LATERAL" else self._frontal(case, rng, p, x, y)
        image = np.clip(p["gain"] * (density - 0.04) + p["offset"], 0.0, 1.0) ** np.float32(p["gamma"])
        image *= f["vignette"]
        noise = np.roll(
            f["noise"][int(rng.integers(4))], (int(rng.integers(self.size)), int(rng.integers(self.size))), (0, 1)
        )
        image += np.float32(p["noise"]) * noise
        self._marker(image, rng)
        return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

    def _window(self, p, x0, y0, x1, y1, margin=0.0) -> tuple[slice, slice] | None:
        """Pixel rows/columns covering the patient-space box (x0, y0)-(x1, y1) grown by ``margin``."""
        cos, sin = p["transform"]
        xa, xb, ya, yb = min(x0, x1) - margin, max(x0, x1) + margin, min(y0, y1) - margin, max(y0, y1) + margin
        us = [p["scale"] * (cos * gx - sin * gy) + p["shift_u"] for gx in (xa, xb) for gy in (ya, yb)]
        vs = [p["scale"] * (sin * gx + cos * gy) + p["shift_v"] for gx in (xa, xb) for gy in (ya, yb)]
        half, n = self.size / 2.0, self.size
        c0, c1 = max(0, int((min(us) + 1) * half) - 1), min(n, int((max(us) + 1) * half) + 2)
        r0, r1 = max(0, int((min(vs) + 1) * half) - 1), min(n, int((max(vs) + 1) * half) + 2)
        return (slice(r0, r1), slice(c0, c1)) if c1 > c0 and r1 > r0 else None

    def _stamp_segment(self, target, p, x, y, x0, y0, x1, y1, sigma, weight=1.0) -> None:
        """target = max(target, weight * segment profile), computed only near the segment."""
        window = self._window(p, x0, y0, x1, y1, 2.5 * sigma)
        if window is not None:
            profile = segment_profile(x[window], y[window], x0, y0, x1, y1, sigma)
            np.maximum(target[window], np.float32(weight) * profile, out=target[window])

    def _ellipse(self, p, x, y, cx, cy, rx, ry, sharpness) -> tuple[tuple[slice, slice], np.ndarray] | None:
        """(window, soft mask) of an ellipse, computed only in its window."""
        window = self._window(p, cx - rx, cy - ry, cx + rx, cy + ry)
        if window is None:
            return None
        ex, ey = (x[window] - cx) * np.float32(1.0 / rx), (y[window] - cy) * np.float32(1.0 / ry)
        return window, soft_ramp(1.0 - ex * ex - ey * ey, sharpness)

    # ----------------------------------------------------------------------------------------- frontal view
    def _frontal(self, case: CXRCase, rng, p, x, y) -> np.ndarray:
        everything = {**case.uncertain, **case.findings}
        domes = {"right": p["dome"], "left": p["dome"] + p["dome_gap"]}
        shift = 0.0
        if "Atelectasis" in everything:  # volume loss: elevated hemidiaphragm, mediastinum pulled to that side
            attrs = everything["Atelectasis"]
            domes[attrs["side"]] -= 0.10 + 0.10 * attrs["severity"]
            shift = 0.035 * attrs["severity"] * _SIGN[attrs["side"]]
        ctr = 0.47 + 0.22 * everything["Cardiomegaly"]["severity"] if "Cardiomegaly" in everything else p["ctr"]
        tw, medial = p["thorax"], p["mediastinum"]
        lateral = tw - 0.05
        ax = np.abs(x)

        tx, ty = x * np.float32(1.0 / (tw + 0.13)), (y - 0.2) * np.float32(1.0 / 1.1)
        tx, ty = tx * tx, ty * ty
        sx, sy = (ax - 0.5) * np.float32(2.0), (y + 0.82) * np.float32(1.0 / 0.22)
        body = soft_ramp(np.maximum(1.0 - tx * tx - ty * ty, 1.0 - sx * sx - sy * sy), 8.0)
        neck = self._window(p, -0.25, -1.3, 0.25, -0.65)
        if neck is not None:
            np.maximum(body[neck], soft_ramp(0.2 - ax[neck], 30.0) * soft_ramp(-0.7 - y[neck], 30.0), out=body[neck])
        for sign in (-1.0, 1.0):  # arms at the image edges (soft tissue around the humerus)
            arm = self._window(p, sign * (tw + 0.1), -0.9, sign * (tw + 0.42), 1.3)
            if arm is not None:
                offset = np.abs(ax[arm] - (tw + 0.26))
                np.maximum(
                    body[arm],
                    soft_ramp(0.14 - offset, 12.0)
                    * soft_ramp(y[arm] + 0.85, 12.0)
                    * (1.0 + soft_ramp(0.035 - offset, 25.0) * 0.08),
                    out=body[arm],
                )
        density = 0.03 + (p["tissue"] - 0.03) * body

        half = (lateral - medial) / 2
        lat = (ax - (medial + half)) * np.float32(1.0 / half)
        dome_field = (
            domes["right"] + (domes["left"] - domes["right"]) * (x > shift).astype(np.float32) + 0.14 * lat * lat
        )
        density += 0.05 * soft_ramp(y - dome_field, 30.0) * body * (x < 0.1).astype(np.float32)  # liver
        bubble = self._ellipse(p, x, y, 0.33, domes["left"] + 0.12, 0.09, 0.05, 4.0)
        if bubble is not None:
            density[bubble[0]] -= 0.15 * bubble[1]

        # lungs: rounded apices widening downwards, cut by the domes
        rise = np.sqrt(np.clip((y - p["apex"]) * np.float32(1.0 / 0.5), 0.0, 1.0))
        lateral_edge = medial + 0.05 + (lateral - medial - 0.05) * rise
        top = soft_ramp(y - p["apex"], 30.0) * soft_ramp(dome_field - y, 30.0)
        lungs = {}
        for side, sign in _SIGN.items():
            across = sign * (x - shift * 0.5)
            lungs[side] = soft_ramp(np.minimum(across - medial, lateral_edge - across), 25.0) * top
        lung = np.maximum(lungs["right"], lungs["left"])

        solid = np.zeros_like(x)  # heart, mediastinum, aortic knob
        heart_half = ctr * lateral
        heart_x, heart_y, heart_h = shift + 0.28 * heart_half, domes["right"] - 0.04, 0.21 + 0.35 * (ctr - 0.42)
        for shape in (
            self._ellipse(p, x, y, heart_x, heart_y, heart_half, heart_h, 5.0),
            self._ellipse(p, x, y, shift + 0.1, p["apex"] + 0.26, 0.065, 0.06, 4.0),
        ):
            if shape is not None:
                np.maximum(solid[shape[0]], shape[1], out=solid[shape[0]])
        band = self._window(p, shift - 0.25, -1.3, shift + 0.25, domes["right"] + 0.05)
        if band is not None:
            width = medial * (0.85 + 0.3 * np.clip(y[band] + 0.9, 0.0, 1.5))
            mediastinum = soft_ramp(width - np.abs(x[band] - shift), 40.0) * soft_ramp(domes["right"] - y[band], 20.0)
            np.maximum(solid[band], mediastinum, out=solid[band])
        aerated = lung * (1.0 - solid)

        opacity = np.zeros_like(x)
        if "Pleural Effusion" in everything:
            attrs = everything["Pleural Effusion"]
            for side in ("right", "left") if attrs["side"] == "bilateral" else (attrs["side"],):
                lateralness = np.clip(
                    (_SIGN[side] * (x - shift) - medial) * np.float32(1.0 / (lateral - medial)), 0.0, 1.0
                )
                meniscus = domes[side] - (0.05 + 0.2 * attrs["severity"]) - 0.2 * lateralness * lateralness
                np.maximum(opacity, 0.95 * soft_ramp(y - meniscus, 14.0) * lungs[side], out=opacity)
        if "Consolidation" in everything:
            np.maximum(
                opacity,
                self._consolidation(everything["Consolidation"], rng, p, x, y, lungs, domes, shift),
                out=opacity,
            )
        if "Edema" in everything:
            severity = everything["Edema"]["severity"]
            ex, ey = (ax - medial - 0.1) * np.float32(1 / 0.27), (y - 0.02) * np.float32(1 / 0.36)
            haze = np.exp(-(ex * ex + ey * ey)) * (0.75 + 0.5 * self.fields["vessels"][int(rng.integers(4))])
            np.maximum(opacity, (0.45 + 0.35 * severity) * haze * lung, out=opacity)
        if "Atelectasis" in everything:
            np.maximum(
                opacity,
                self._atelectasis(everything["Atelectasis"], rng, p, x, y, lungs, domes, medial, lateral, shift),
                out=opacity,
            )
        if case.uncertain and not case.findings:
            opacity *= 0.7

        vessels = self.fields["vessels"][int(rng.integers(4))]
        air = p["air"] * (
            0.72 + 0.28 * np.clip((y - p["apex"]) * np.float32(1.0 / (domes["right"] - p["apex"])), 0.0, 1.0)
        )
        density += (0.07 * vessels + 0.06 * self.fields["hila"] + 0.05 * opacity) * lung - air * aerated * (
            1.0 - opacity
        )
        density += 0.08 * solid * body
        column = self._window(p, shift - 0.12, -1.3, shift + 0.12, 1.3)
        if column is not None:  # trachea (air) and spine
            cx, cy = x[column], y[column]
            density[column] += (
                0.06 * soft_ramp(0.07 - np.abs(cx - shift * 0.3), 40.0) * self.fields["spine"][column]
                - 0.10 * soft_ramp(0.03 - np.abs(cx - shift * 0.5), 60.0) * soft_ramp(-0.30 - cy, 20.0)
            ) * body[column]
        if p["breasts"] > 0.5:
            for sign in (-1.0, 1.0):
                breast = self._ellipse(p, x, y, sign * 0.42, 0.45, 0.32, 0.22, 3.0)
                if breast is not None:
                    density[breast[0]] += 0.05 * breast[1]
        density += self._bones(p, rng, x, y, ax, dome_field, tw, body)
        if case.device is not None:
            density += self._device(case.device, rng, p, x, y, shift, heart_x, heart_y)
        return density

    def _consolidation(self, attrs, rng, p, x, y, lungs, domes, shift) -> np.ndarray:
        side, lobe = attrs["side"], attrs["lobe"]
        sign = _SIGN[side]
        zone = lobe.split()[1]
        top, bottom = {
            "upper": (p["apex"] - 0.05, -0.14),
            "middle": (-0.12, 0.18),
            "lower": (0.0, domes[side] - 0.02),
        }[zone]
        wobble = 0.04 * np.cos(9.0 * x + float(rng.uniform(0, 6.3))) + 0.03 * np.cos(
            13.0 * y + float(rng.uniform(0, 6.3))
        )
        band = np.minimum(
            soft_ramp(y - top + wobble, 30.0), soft_ramp(bottom - y + 0.5 * wobble, 60.0)
        )  # sharp fissure side
        inner = soft_ramp(sign * (x - shift) - 0.15 - 0.04 * float(rng.random()) + wobble, 25.0)
        region = band * inner * lungs[side] * (0.85 + 0.3 * self.fields["vessels"][int(rng.integers(4))])
        # air bronchograms: dark tubes running from the hilum into the opacity
        bronchi = np.zeros_like(x)
        hx, hy = sign * 0.17 + shift, -0.05
        tilt = {"upper": -0.6, "middle": 0.1, "lower": 0.6}[zone]
        for _ in range(4):
            angle = (0.0 if sign > 0 else np.pi) + sign * (tilt + float(rng.uniform(-0.35, 0.35)))
            length = float(rng.uniform(0.35, 0.6))
            self._stamp_segment(
                bronchi, p, x, y, hx, hy, hx + length * np.cos(angle), hy + length * np.sin(angle), 0.014
            )
        return (0.7 + 0.28 * attrs["severity"]) * region * (1.0 - 0.55 * bronchi)

    def _atelectasis(self, attrs, rng, p, x, y, lungs, domes, medial, lateral, shift) -> np.ndarray:
        side = attrs["side"]
        sign = _SIGN[side]
        plates = np.zeros_like(x)
        for _ in range(int(rng.integers(2, 4))):
            cx = sign * float(rng.uniform(medial + 0.12, lateral - 0.1)) + shift
            cy = domes[side] - float(rng.uniform(0.07, 0.24))
            half, tilt = float(rng.uniform(0.12, 0.18)), float(rng.uniform(-0.12, 0.12))
            self._stamp_segment(
                plates,
                p,
                x,
                y,
                cx - half,
                cy - tilt * half,
                cx + half,
                cy + tilt * half,
                float(rng.uniform(0.016, 0.024)),
            )
        return (0.7 + 0.25 * attrs["severity"]) * plates * lungs[side]

    def _bones(self, p, rng, x, y, ax, dome_field, tw, body) -> np.ndarray:
        cage = soft_ramp(
            np.minimum(
                np.minimum(tw - ax, (dome_field + 0.06 - y)), np.minimum(y - p["apex"] + 0.12, 1.5 * (ax - 0.06))
            ),
            20.0,
        )
        bones = self.fields["ribs"][int(rng.integers(len(self.fields["ribs"])))] * cage
        clavicles = np.zeros_like(x)
        for sign in (-1.0, 1.0):
            self._stamp_segment(
                clavicles, p, x, y, sign * 0.08, p["apex"] - 0.02, sign * 0.62, p["apex"] - 0.16, 0.028
            )
        return (bones + 0.13 * clavicles) * body

    def _device(self, kind, rng, p, x, y, shift, heart_x, heart_y) -> np.ndarray:
        drawing = np.zeros_like(x)
        if kind == "tube":
            self._stamp_segment(
                drawing, p, x, y, shift * 0.5, -1.1, shift * 0.5, float(rng.uniform(-0.45, -0.32)), 0.011
            )
            self._stamp_segment(drawing, p, x, y, shift * 0.5 - 0.02, -1.1, -0.05, 0.75, 0.009)
            return 0.35 * drawing
        self._stamp_segment(drawing, p, x, y, 0.5, -0.62, heart_x + 0.1, heart_y, 0.009, 0.6)
        self._stamp_segment(drawing, p, x, y, 0.46, -0.62, 0.54, -0.62, 0.035)
        return 0.55 * drawing

    # ----------------------------------------------------------------------------------------- lateral view
    def _lateral(self, case: CXRCase, p, x, y) -> np.ndarray:
        bx, by = x * np.float32(1 / 0.82), (y - 0.1) * np.float32(1 / 1.1)
        bx, by = bx * bx, by * by
        body = soft_ramp(1.0 - bx * bx - by * by, 8.0)
        density = 0.03 + (p["tissue"] - 0.03) * body
        dome = p["dome"] + 0.05 + 0.08 * x
        lx, ly = x * np.float32(1 / 0.55), (y + 0.05) * np.float32(1 / 0.62)
        lung = soft_ramp(1.0 - lx * lx - ly * ly, 5.0) * soft_ramp(dome - y, 30.0)
        scale = 1.25 if "Cardiomegaly" in case.findings else 1.0
        hx, hy = (x + 0.25) * np.float32(1 / (0.22 * scale)), (y - 0.2) * np.float32(1 / (0.24 * scale))
        heart = soft_ramp(1.0 - hx * hx - hy * hy, 5.0)
        opacity = np.zeros_like(x)
        if "Pleural Effusion" in case.findings:
            opacity = 0.9 * soft_ramp(y - (dome - 0.2 + 0.15 * (0.5 - x)), 15.0)
        if {"Consolidation", "Edema", "Atelectasis"} & set(case.findings):
            ox, oy = (x - 0.05) * np.float32(1 / 0.3), (y - 0.05) * np.float32(1 / 0.3)
            np.maximum(opacity, 0.4 * np.exp(-(ox * ox + oy * oy)), out=opacity)
        density += -p["air"] * lung * (1.0 - heart) * (1.0 - opacity) + 0.08 * heart * body
        density += 0.12 * soft_ramp(0.08 - np.abs(x - 0.6), 30.0) * (0.75 + 0.25 * np.cos(45.0 * y)) * body
        return density

    def _marker(self, image: np.ndarray, rng: np.random.Generator) -> None:
        """A small bright side marker in a random top corner, as technologists place them."""
        n = self.size
        s = max(2, n // 32)
        row = int(rng.integers(n // 32, n // 8))
        col = int(rng.integers(n // 32, n // 8)) if rng.random() < 0.5 else n - int(rng.integers(n // 32, n // 8)) - s
        image[row : row + s, col : col + s] = 0.95


__all__ = ["ChestXRayRenderer"]
