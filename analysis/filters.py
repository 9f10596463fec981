"""Filters for 2-D/3-D trajectories. The online triangulator uses :class:`KalmanCV` frame by frame;
offline code runs the same filter over a whole recording."""

from __future__ import annotations

import numpy as np

from analysis.errors import AnalysisError


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
        self._h = np.hstack([np.eye(dim), np.zeros((dim, dim))])  # measures position
        self._r = np.eye(dim) * self.r**2
        self._eye = np.eye(2 * dim)
        self._dt: float | None = None  # the last transition, reused while dt stays the same (frame rate)
        self._fq: tuple[np.ndarray, np.ndarray] = (self._eye, self._eye)

    def reset(self) -> None:
        self.x = None
        self.t_s = None
        self.t_last_meas = None

    def _transition(self, dt: float) -> tuple[np.ndarray, np.ndarray]:
        if dt != self._dt:
            self._fq, self._dt = self._make_transition(dt), dt
        return self._fq

    def _make_transition(self, dt: float) -> tuple[np.ndarray, np.ndarray]:
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
            h = self._h
            s = h @ self.p @ h.T + self._r
            k = self.p @ h.T @ np.linalg.inv(s)
            self.x = self.x + k @ (meas - h @ self.x)
            self.p = (self._eye - k @ h) @ self.p
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


def true_runs(mask_t: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive (start, end) index pairs of the runs of True in a (T,) boolean mask."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], np.asarray(mask_t).astype(np.int8), [0]])))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _as_tn(x: np.ndarray) -> tuple[np.ndarray, bool]:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        return arr[:, None], True
    if arr.ndim != 2:
        raise AnalysisError(f"series must have shape (T,) or (T, D), got {arr.shape}")
    return arr, False


def interpolate_gaps(x_tn: np.ndarray, max_gap: int, kind: str = "linear") -> np.ndarray:
    """Fill runs of at most ``max_gap`` missing samples (NaN) that have data on both sides.

    ``x_tn`` (T,) or (T, D); each column independently; ``kind`` is ``linear`` or ``cubic`` (PCHIP, no
    overshoot). Longer gaps and gaps at either end stay NaN. Returns an array of the input's shape.
    """
    arr, flat = _as_tn(x_tn)
    if kind not in ("linear", "cubic"):
        raise AnalysisError(f"interpolation kind must be 'linear' or 'cubic', got {kind!r}")
    out = arr.copy()
    t = np.arange(len(arr))
    for d in range(arr.shape[1]):
        col = arr[:, d]
        ok = np.isfinite(col)
        if ok.sum() < 2 or ok.all():
            continue
        # length of the NaN run each sample belongs to, and whether it is bounded on both sides
        run_id = np.cumsum(ok)
        miss = ~ok
        run_len = np.bincount(run_id[miss], minlength=run_id[-1] + 1)[run_id]
        idx_ok = np.flatnonzero(ok)
        bounded = (t > idx_ok[0]) & (t < idx_ok[-1])
        fill = miss & bounded & (run_len <= max_gap)
        if not fill.any():
            continue
        if kind == "linear":
            out[fill, d] = np.interp(t[fill], t[ok], col[ok])
        else:
            from scipy.interpolate import PchipInterpolator

            out[fill, d] = PchipInterpolator(t[ok], col[ok])(t[fill])
    return out[:, 0] if flat else out


def median_filter(x_tn: np.ndarray, window: int) -> np.ndarray:
    """Running median over ``window`` (odd) samples along time, ignoring NaN; NaN inputs stay NaN."""
    arr, flat = _as_tn(x_tn)
    if window < 1 or window % 2 == 0:
        raise AnalysisError(f"median window must be odd and positive, got {window}")
    half = window // 2
    padded = np.pad(arr, ((half, half), (0, 0)), mode="edge")
    win = np.lib.stride_tricks.sliding_window_view(padded, window, axis=0)  # (T, D, W)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out = np.nanmedian(win, axis=2)
    out[~np.isfinite(arr)] = np.nan
    return out[:, 0] if flat else out


def savgol(
    x_tn: np.ndarray, window: int, polyorder: int = 3, deriv: int = 0, dt_s: float = 1.0, max_gap: int = 0
) -> np.ndarray:
    """Savitzky-Golay smoothing (``deriv=1``: velocity per second with ``dt_s`` the sample period).

    Each run of finite samples is filtered on its own (gaps up to ``max_gap`` are interpolated first);
    runs shorter than ``window`` are left NaN for derivatives and unfiltered for ``deriv=0``.
    """
    from scipy.signal import savgol_filter

    arr, flat = _as_tn(x_tn)
    if window % 2 == 0 or window <= polyorder:
        raise AnalysisError(f"savgol window must be odd and > polyorder ({polyorder}), got {window}")
    if max_gap:
        arr = interpolate_gaps(arr, max_gap)
    out = np.full_like(arr, np.nan)
    ok = np.isfinite(arr).all(axis=1)
    for start, last in true_runs(ok):
        stop = last + 1
        seg = arr[start:stop]
        if len(seg) >= window:
            out[start:stop] = savgol_filter(seg, window, polyorder, deriv=deriv, delta=dt_s, axis=0)
        elif deriv == 0:
            out[start:stop] = seg
    return out[:, 0] if flat else out


def kalman_smooth(
    t_s: np.ndarray, points_tn: np.ndarray, accel_noise: float, meas_noise: float
) -> np.ndarray:
    """Offline Rauch-Tung-Striebel smoother with :class:`KalmanCV`'s constant-velocity model.

    ``t_s`` (T,) seconds, ``points_tn`` (T, D) with NaN = missing. Returns smoothed positions (T, D); samples
    before the first measurement are NaN. Uses every sample on both sides, unlike the online filter.
    """
    t = np.asarray(t_s, dtype=np.float64)
    pts, flat = _as_tn(points_tn)
    if len(t) != len(pts):
        raise AnalysisError(f"t_s has {len(t)} samples but points have {len(pts)}")
    n_t, dim = pts.shape
    kf = KalmanCV(accel_noise, meas_noise, dim=dim)
    ok = np.isfinite(pts).all(axis=1)
    out = np.full((n_t, dim), np.nan)
    if not ok.any():
        return out[:, 0] if flat else out
    first = int(np.argmax(ok))
    h = np.hstack([np.eye(dim), np.zeros((dim, dim))])
    r = np.eye(dim) * meas_noise**2
    xs_f, ps_f, xs_p, ps_p, fs = [], [], [], [], []
    x = np.concatenate([pts[first], np.zeros(dim)])
    p = np.diag([meas_noise**2] * dim + [1e4] * dim)
    for i in range(first, n_t):
        if i > first:
            f, q = kf._transition(max(t[i] - t[i - 1], 0.0))
            x, p = f @ x, f @ p @ f.T + q
        else:
            f = np.eye(2 * dim)
        xs_p.append(x)
        ps_p.append(p)
        fs.append(f)
        if ok[i] and i > first:
            s = h @ p @ h.T + r
            k = np.linalg.solve(s, h @ p).T
            x = x + k @ (pts[i] - h @ x)
            p = (np.eye(2 * dim) - k @ h) @ p
        xs_f.append(x)
        ps_f.append(p)
    xs = [xs_f[-1]]
    ps = ps_f[-1]
    for j in range(len(xs_f) - 2, -1, -1):
        c = ps_f[j] @ fs[j + 1].T @ np.linalg.pinv(ps_p[j + 1])
        xj = xs_f[j] + c @ (xs[0] - xs_p[j + 1])
        ps = ps_f[j] + c @ (ps - ps_p[j + 1]) @ c.T
        xs.insert(0, xj)
    out[first:] = np.asarray(xs)[:, :dim]
    return out[:, 0] if flat else out
