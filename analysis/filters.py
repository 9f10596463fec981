"""Filters for 2-D/3-D trajectories. The online triangulator uses :class:`KalmanCV` frame by frame;
offline code runs the same filter over a whole recording."""

from __future__ import annotations

import numpy as np


class KalmanCV:
    """Constant-velocity Kalman filter for a D-dimensional point (default 3-D, mm).

    ``accel_noise`` is the white-acceleration spectral density (mm/s^2), ``meas_noise`` the measurement
    standard deviation (mm). ``update(t_s, z)`` with ``z=None`` (or NaN) only predicts. ``predict(ahead_s)``
    extrapolates the current state without changing it.
    """

    def __init__(self, accel_noise: float, meas_noise: float, dim: int = 3, max_gap_s: float = 0.25):
        self.q = float(accel_noise)
        self.r = float(meas_noise)
        self.dim = dim
        self.max_gap_s = max_gap_s
        self.x: np.ndarray | None = None  # (2D,) position then velocity
        self.p = np.eye(2 * dim)
        self.t_s: float | None = None
        self.t_last_meas: float | None = None

    def reset(self) -> None:
        self.x = None
        self.t_s = None
        self.t_last_meas = None

    def _transition(self, dt: float) -> tuple[np.ndarray, np.ndarray]:
        d = self.dim
        f = np.eye(2 * d)
        f[:d, d:] = dt * np.eye(d)
        q1 = np.array([[dt**4 / 4, dt**3 / 2], [dt**3 / 2, dt**2]]) * self.q**2
        q = np.kron(q1, np.eye(d))
        return f, q

    def update(self, t_s: float, z: np.ndarray | None) -> np.ndarray:
        """Advance to time ``t_s`` (seconds) and fold in measurement ``z`` (D,) if finite.

        Returns the filtered position (D,), NaN before the first measurement or after a gap
        longer than ``max_gap_s`` without measurements.
        """
        meas = None if z is None else np.asarray(z, dtype=np.float64).reshape(-1)
        has_meas = meas is not None and bool(np.isfinite(meas).all())
        if self.x is None or self.t_s is None:
            if not has_meas:
                return np.full(self.dim, np.nan)
            assert meas is not None
            self.x = np.concatenate([meas, np.zeros(self.dim)])
            self.p = np.diag([self.r**2] * self.dim + [1e4] * self.dim)
            self.t_s = self.t_last_meas = t_s
            return meas.copy()
        dt = max(t_s - self.t_s, 0.0)
        f, q = self._transition(dt)
        self.x = f @ self.x
        self.p = f @ self.p @ f.T + q
        self.t_s = t_s
        if has_meas:
            assert meas is not None
            h = np.hstack([np.eye(self.dim), np.zeros((self.dim, self.dim))])
            s = h @ self.p @ h.T + np.eye(self.dim) * self.r**2
            k = self.p @ h.T @ np.linalg.inv(s)
            self.x = self.x + k @ (meas - h @ self.x)
            self.p = (np.eye(2 * self.dim) - k @ h) @ self.p
            self.t_last_meas = t_s
        elif self.t_last_meas is not None and t_s - self.t_last_meas > self.max_gap_s:
            self.reset()
            return np.full(self.dim, np.nan)
        return self.x[: self.dim].copy()

    def predict(self, ahead_s: float) -> np.ndarray:
        if self.x is None:
            return np.full(self.dim, np.nan)
        return self.x[: self.dim] + ahead_s * self.x[self.dim :]


def kalman_filter_series(
    t_s: np.ndarray, points_tn: np.ndarray, accel_noise: float, meas_noise: float
) -> np.ndarray:
    """Run :class:`KalmanCV` forward over a whole series (T,) times and (T, D) points (NaN = missing)."""
    pts = np.asarray(points_tn, dtype=np.float64)
    kf = KalmanCV(accel_noise, meas_noise, dim=pts.shape[1])
    return np.stack([kf.update(float(t), p) for t, p in zip(t_s, pts)])
