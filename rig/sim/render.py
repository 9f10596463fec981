"""Renders a synthetic camera frame: apparatus background, pellet, textured paw blob, sensor noise.

Cheap enough for 2 x 124 Hz on one core: the background and a bank of noise frames are made once;
per frame only the paw and pellet regions are drawn. :func:`render` returns the image and the paw's
ground-truth bounding box (the extent actually drawn), so labels match pixels exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from analysis.camera import CameraModel
from rig.sim.scene import PELLET_RADIUS_MM


@dataclass
class Appearance:
    """Knobs for randomized rendering (the detector's training set varies all of these)."""

    paw_gray: int = 200
    paw_aspect: float = 0.78  # minor/major axis of the paw ellipse
    paw_angle_deg: float = 20.0
    background_seed: int = 0
    background_gain: float = 1.0
    background_offset: float = 0.0
    noise_sigma: float = 3.0
    blur_px: float = 0.0
    n_noise_frames: int = 8


def _make_background(cam: CameraModel, seed: int, gain: float, offset: float) -> np.ndarray:
    """An apparatus-like background: shaded walls, a platform and slot edges, low-frequency texture."""
    w, h = cam.size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 40 + 25 * (yy / h) + 10 * np.sin(xx / w * np.pi * rng.uniform(0.5, 2.0))
    small = rng.normal(0, 1, (h // 16 + 1, w // 16 + 1)).astype(np.float32)
    base += 8 * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    img = base.astype(np.float32)
    # platform (a box under the pellet) and slot walls, drawn from their 3-D corners
    box = np.array([[-8, -6, -1.5], [8, -6, -1.5], [8, 8, -1.5], [-8, 8, -1.5]], dtype=float)
    wall_l = np.array([[-5, -9, -25], [-5, -9, 12], [-5, -5, 12], [-5, -5, -25]], dtype=float)
    wall_r = wall_l * np.array([-1, 1, 1])
    for poly, gray in ((box, 95), (wall_l, 70), (wall_r, 70)):
        pts = cam.project(poly)
        if np.isfinite(pts).all() and (cam.to_camera(poly)[:, 2] > 0).all():
            cv2.fillPoly(img, [np.round(pts).astype(np.int32)], float(gray + rng.uniform(-10, 10)))
    img = img * gain + offset
    return np.asarray(np.clip(img, 0, 255), dtype=np.uint8)


def _paw_sprite(size: int = 96, seed: int = 7) -> np.ndarray:
    """A (size, size) float32 texture in [0, 1]: a paw-like blob with darker digit creases."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    noise = (0.85 + 0.15 * rng.normal(0, 1, (size, size))).astype(np.float32)
    tex: np.ndarray = cv2.GaussianBlur(noise, (0, 0), 2.0)
    for k in (-0.45, -0.15, 0.15, 0.45):  # digit creases near the front of the paw
        crease = np.exp(-(((xx - k) / 0.05) ** 2)) * (yy < -0.1)
        tex -= 0.35 * crease.astype(np.float32)
    shade = 1.0 - 0.25 * (xx + yy + 2) / 4  # light from the upper left
    return np.asarray(np.clip(tex * shade, 0, 1), dtype=np.float32)


class SceneRenderer:
    """Renders frames of one camera. Not thread-safe; one per camera process."""

    def __init__(self, cam: CameraModel, appearance: Appearance | None = None, seed: int = 0):
        self.cam = cam
        self.app = appearance or Appearance()
        self.rng = np.random.default_rng(seed)
        w, h = cam.size
        bg = _make_background(
            cam, self.app.background_seed, self.app.background_gain, self.app.background_offset
        )
        # the noise bank is added to a darkened background so zero-mean noise fits in uint8 saturating adds
        self.noise_offset = int(np.ceil(3 * self.app.noise_sigma))
        self.background = np.clip(bg.astype(np.int16) - self.noise_offset, 0, 255).astype(np.uint8)
        self.noise_bank = [
            np.clip(self.rng.normal(self.noise_offset, self.app.noise_sigma, (h, w)), 0, 255).astype(np.uint8)
            for _ in range(max(1, self.app.n_noise_frames))
        ]
        self.sprite = _paw_sprite()
        self._frame_count = 0

    def paw_ellipse(self, paw_xyz: np.ndarray, radius_mm: float) -> tuple[float, float, float, float] | None:
        """(cx, cy, major_px, minor_px) of the paw's image, or None if behind the camera / outside."""
        pc = self.cam.to_camera(np.asarray(paw_xyz).reshape(1, 3))[0]
        if pc[2] <= 1.0:
            return None
        cx, cy = self.cam.project(np.asarray(paw_xyz).reshape(1, 3))[0]
        major = self.cam.focal_px * radius_mm / pc[2]
        return float(cx), float(cy), float(major), float(major * self.app.paw_aspect)

    def truth_box(self, paw_xyz: np.ndarray, radius_mm: float) -> tuple[float, float, float, float] | None:
        """The bounding box (x1, y1, x2, y2) of the drawn paw, clipped to the image; None if not visible."""
        ell = self.paw_ellipse(paw_xyz, radius_mm)
        if ell is None:
            return None
        cx, cy, a, b = ell
        t = np.deg2rad(self.app.paw_angle_deg)
        hw = np.sqrt((a * np.cos(t)) ** 2 + (b * np.sin(t)) ** 2)
        hh = np.sqrt((a * np.sin(t)) ** 2 + (b * np.cos(t)) ** 2)
        w, h = self.cam.size
        x1, y1, x2, y2 = max(cx - hw, 0.0), max(cy - hh, 0.0), min(cx + hw, w - 1.0), min(cy + hh, h - 1.0)
        if x2 - x1 < 2 or y2 - y1 < 2:
            return None
        return (x1, y1, x2, y2)

    def render(
        self,
        paw_xyz: np.ndarray | None,
        radius_mm: float,
        pellet_xyz: np.ndarray | None = None,
        out: np.ndarray | None = None,
    ) -> tuple[np.ndarray, tuple[float, float, float, float] | None]:
        """Render one frame into ``out`` (H, W) uint8 (allocated if None); return it and the paw box."""
        w, h = self.cam.size
        img = out if out is not None else np.empty((h, w), np.uint8)
        np.copyto(img, self.background)
        if pellet_xyz is not None:
            self._draw_disc(img, pellet_xyz, PELLET_RADIUS_MM, 235)
        box = None
        if paw_xyz is not None:
            box = self._draw_paw(img, paw_xyz, radius_mm)
        if self.app.blur_px > 0:
            k = int(2 * round(2 * self.app.blur_px) + 1)
            cv2.GaussianBlur(img, (k, k), self.app.blur_px, dst=img)
        noise = self.noise_bank[self._frame_count % len(self.noise_bank)]
        self._frame_count += 1
        cv2.add(img, noise, dst=img)
        return img, box

    def _draw_disc(self, img: np.ndarray, xyz: np.ndarray, radius_mm: float, gray: int) -> None:
        pc = self.cam.to_camera(np.asarray(xyz).reshape(1, 3))[0]
        if pc[2] <= 1.0:
            return
        cx, cy = self.cam.project(np.asarray(xyz).reshape(1, 3))[0]
        r = max(1, round(self.cam.focal_px * radius_mm / pc[2]))
        if -r <= cx < img.shape[1] + r and -r <= cy < img.shape[0] + r:
            cv2.circle(img, (round(cx), round(cy)), r, gray - self.noise_offset, -1, cv2.LINE_AA)

    def _draw_paw(
        self, img: np.ndarray, paw_xyz: np.ndarray, radius_mm: float
    ) -> tuple[float, float, float, float] | None:
        ell = self.paw_ellipse(paw_xyz, radius_mm)
        box = self.truth_box(paw_xyz, radius_mm)
        if ell is None or box is None:
            return None
        cx, cy, a, b = ell
        h, w = img.shape
        r = int(np.ceil(a)) + 2
        x0, y0 = int(np.floor(cx)) - r, int(np.floor(cy)) - r
        xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + 2 * r + 1, w), min(y0 + 2 * r + 1, h)
        if xb <= xa or yb <= ya:
            return None
        # map the patch's pixels into sprite coordinates (rotated ellipse -> unit disc)
        yy, xx = np.mgrid[ya:yb, xa:xb].astype(np.float32)
        dx, dy = xx - cx, yy - cy
        t = np.deg2rad(self.app.paw_angle_deg)
        u = (dx * np.cos(t) + dy * np.sin(t)) / a
        v = (-dx * np.sin(t) + dy * np.cos(t)) / b
        rr = u * u + v * v
        alpha = np.clip((1.0 - rr) * a * 0.8, 0.0, 1.0)  # ~1 px soft edge
        s = self.sprite.shape[0]
        su = np.clip((u + 1) * 0.5 * (s - 1), 0, s - 1).astype(np.int32)
        sv = np.clip((v + 1) * 0.5 * (s - 1), 0, s - 1).astype(np.int32)
        paw = self.sprite[sv, su] * (self.app.paw_gray - self.noise_offset)
        patch = img[ya:yb, xa:xb].astype(np.float32)
        img[ya:yb, xa:xb] = np.clip(patch * (1 - alpha) + paw * alpha, 0, 255).astype(np.uint8)
        return box
