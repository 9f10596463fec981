"""The firmware <-> host clock record: pure functions and small classes, no I/O.

Two pieces, both fed by the Arduino node (``rig/nodes/arduino.py``) and written to ``clock.json``
(``rig/SESSION.md``):

* :class:`ClockFit`: host ``time.monotonic_ns()`` as a line in the firmware's ``micros()``, fitted to
  (firmware time of an event, host time its frame was read) pairs. Every read time is *late* by the
  serial latency (firmware loop, wire, USB bridge, host scheduling), never early, so the fit is the
  **lower envelope**: the line under every pair that is closest to them on average (the linear program
  of Moon, Skelly & Towsley 1999 for one-way clock skew). Its optimum is the edge of the pairs' lower
  convex hull that spans their mean firmware time, so it costs O(log n) once the hull is kept. Least
  squares would put the line through the middle of the latency distribution, and a burst of late
  frames (a busy host) would bend it; the envelope only moves when a *faster* frame arrives. Pairs are
  thinned to the fastest one per :data:`BUCKET_US` of firmware time (all the envelope needs), so the
  state stays small for sessions of hours. The envelope still includes the fastest one-way latency;
  half the fastest ping round trip (NTP's symmetric assumption) is taken off the offset when known.
* :class:`TriggerModel`: Timer1 makes the camera trigger exactly periodic in the firmware's own clock
  (``(TOP + 1) * prescaler`` CPU cycles per pulse, the same crystal as ``micros()``), so pulse ``i``
  of a run is at ``start + i * period``. ``start`` is the median over the firmware's periodic TRIGGER
  reports of ``t_us - index * period`` (in CPU cycles, exact integers); each report's distance from
  the model is the drift check.

``micros()`` is 32 bits and wraps every 2^32 us (71.6 min): :class:`Unwrap` makes it monotonic
(values already unwrapped pass through unchanged, so it is safe on either).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass

MICROS_BITS = 32
MICROS_WRAP_US = 1 << MICROS_BITS  # micros() wraps after 4294.967296 s (71.6 min)
BUCKET_US = 250_000  # keep the fastest (t_fw, t_host) pair per quarter second of firmware time
MIN_SLOPE_SPAN_US = 2_000_000  # fit a drift only over at least 2 s of firmware time
MAX_DRIFT_PPM = 10_000.0  # +-1 %: beyond that the pairs are wrong (a ceramic resonator is ~0.1-0.5 %)
NOMINAL_NS_PER_US = 1000


class Unwrap:
    """Unwraps a counter of ``bits`` bits into a monotonic integer (a small step back stays a step back)."""

    def __init__(self, bits: int = MICROS_BITS) -> None:
        self.mod = 1 << bits
        self.last: int | None = None
        self.first: int | None = None

    def __call__(self, v: int) -> int:
        if self.last is None:
            self.first = self.last = int(v) % self.mod
            return self.last
        delta = (int(v) - self.last) % self.mod
        if delta > self.mod // 2:  # a little back in time (events sent out of order): keep it close
            delta -= self.mod
        self.last += delta
        return self.last

    @property
    def wraps(self) -> int:
        """How many times the counter wrapped since the first value."""
        if self.last is None or self.first is None:
            return 0
        return self.last // self.mod - self.first // self.mod


@dataclass(frozen=True)
class ClockLine:
    """``t_host_ns = offset_ns + slope_ns_per_us * (t_fw_us - ref_fw_us)`` (firmware time unwrapped)."""

    ref_fw_us: int
    offset_ns: float
    slope_ns_per_us: float = float(NOMINAL_NS_PER_US)

    def to_host_ns(self, t_fw_us: float) -> int:
        return round(self.offset_ns + self.slope_ns_per_us * (t_fw_us - self.ref_fw_us))

    @property
    def drift_ppm(self) -> float:
        """How much faster the firmware's clock runs than the host's, in parts per million."""
        return (NOMINAL_NS_PER_US / self.slope_ns_per_us - 1.0) * 1e6


def _cross(o: tuple[int, int], a: tuple[int, int], b: tuple[int, int]) -> int:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def envelope_line(
    hull: list[tuple[int, int]], mean_x: float, min_span: int = MIN_SLOPE_SPAN_US
) -> tuple[float, float, bool]:
    """The lower-envelope line of points whose lower hull is ``hull`` and whose mean x is ``mean_x``:
    ``(slope, intercept_at_x0, fitted)`` in the hull's units (y per x). With a hull shorter than
    ``min_span`` in x the slope is 0 (the caller's nominal rate) and the line is the lowest point's."""
    if not hull:
        raise ValueError("envelope_line: no points")
    if len(hull) < 2 or hull[-1][0] - hull[0][0] < min_span:
        return 0.0, float(min(y for _, y in hull)), False
    xs = [x for x, _ in hull]
    i = min(max(bisect_right(xs, mean_x) - 1, 0), len(hull) - 2)
    (x1, y1), (x2, y2) = hull[i], hull[i + 1]
    slope = (y2 - y1) / (x2 - x1)
    return slope, y1 - slope * x1, True


def fit_lower_envelope(t_fw_us: list[int], t_host_ns: list[int]) -> ClockLine:
    """One-shot lower-envelope fit of host ns on firmware us (raw ``micros()`` values are unwrapped).
    The same computation as :class:`ClockFit` without thinning; for tests and offline use."""
    fit = ClockFit(bucket_us=1)
    for fw, host in zip(t_fw_us, t_host_ns, strict=True):
        fit.add(fw, host)
    line = fit.line()
    assert line is not None
    return line


def _percentiles(values: list[float], qs: tuple[float, ...] = (50, 99)) -> list[float]:
    s = sorted(values)
    if not s:
        return [0.0 for _ in qs]
    return [s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))] for q in qs]


class ClockFit:
    """Incremental lower-envelope fit of host ``monotonic_ns`` vs firmware ``micros()`` (see the module).

    :meth:`add` takes one (firmware us, host ns read time) pair; :meth:`line` returns the current
    :class:`ClockLine` (``None`` before the first pair), with half the fastest ping round trip seen
    (:meth:`note_rtt_ns`) taken off. Internally y is ``t_host_ns - 1000 * t_fw_us`` (the latency plus a
    constant), kept as Python integers so the hull is exact for any session length.
    """

    def __init__(self, bucket_us: int = BUCKET_US, min_span_us: int = MIN_SLOPE_SPAN_US) -> None:
        self.bucket_us = bucket_us
        self.min_span_us = min_span_us
        self.unwrap = Unwrap()
        self.pairs = 0
        self.dropped_late = 0  # pairs for a bucket already closed (sent out of order): never faster
        self.rtt_min_ns: int | None = None
        self._points: list[tuple[int, int]] = []  # closed buckets' fastest pair (x = fw us, y)
        self._hull: list[tuple[int, int]] = []  # lower hull of _points
        self._sum_x = 0
        self._cur_bucket: int | None = None
        self._cur: tuple[int, int] | None = None  # the open bucket's fastest pair so far
        self._x0: int | None = None

    def add(self, t_fw_us: int, t_host_ns: int) -> None:
        x = self.unwrap(t_fw_us)
        if self._x0 is None:
            self._x0 = x
        y = int(t_host_ns) - NOMINAL_NS_PER_US * x
        self.pairs += 1
        bucket = (x - self._x0) // self.bucket_us
        if self._cur_bucket is None or bucket > self._cur_bucket:
            self._close_bucket()
            self._cur_bucket, self._cur = bucket, (x, y)
        elif bucket == self._cur_bucket:
            assert self._cur is not None
            if y < self._cur[1]:
                self._cur = (x, y)
        else:
            self.dropped_late += 1

    def _close_bucket(self) -> None:
        if self._cur is None:
            return
        p = self._cur
        self._points.append(p)
        self._sum_x += p[0]
        hull = self._hull
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], p) <= 0:
            hull.pop()
        hull.append(p)
        self._cur = None

    def note_rtt_ns(self, rtt_ns: int) -> None:
        """A ping round trip (host send -> ACK read): the fastest one bounds the one-way latency."""
        if rtt_ns > 0 and (self.rtt_min_ns is None or rtt_ns < self.rtt_min_ns):
            self.rtt_min_ns = int(rtt_ns)

    @property
    def one_way_ns(self) -> int:
        return self.rtt_min_ns // 2 if self.rtt_min_ns is not None else 0

    def _all_points(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]], float]:
        """(points, hull, mean x) including the open bucket's provisional point."""
        pts, hull = self._points, self._hull
        if self._cur is None:
            return pts, hull, self._sum_x / max(len(pts), 1)
        p = self._cur
        k = len(hull)
        while k >= 2 and _cross(hull[k - 2], hull[k - 1], p) <= 0:
            k -= 1
        return [*pts, p], [*hull[:k], p], (self._sum_x + p[0]) / (len(pts) + 1)

    def _envelope(self) -> tuple[float, float, bool, list[tuple[int, int]]] | None:
        pts, hull, mean_x = self._all_points()
        if not pts:
            return None
        slope, icpt, fitted = envelope_line(hull, mean_x, self.min_span_us)
        if fitted and abs(slope / NOMINAL_NS_PER_US) * 1e6 > MAX_DRIFT_PPM:
            slope, icpt, fitted = 0.0, float(min(y for _, y in pts)), False
        return slope, icpt, fitted, pts

    def line(self) -> ClockLine | None:
        """The current map, or ``None`` before any pair."""
        env = self._envelope()
        if env is None:
            return None
        slope, icpt, _, pts = env
        ref = pts[-1][0]  # reference near "now": offsets stay small numbers
        y_ref = icpt + slope * ref
        return ClockLine(
            ref_fw_us=ref,
            offset_ns=NOMINAL_NS_PER_US * ref + y_ref - self.one_way_ns,
            slope_ns_per_us=NOMINAL_NS_PER_US + slope,
        )

    def summary(self) -> dict[str, object]:
        """What ``clock.json`` says about the map (see ``rig/SESSION.md``)."""
        env = self._envelope()
        base: dict[str, object] = {
            "method": "lower envelope (minimum-latency line) of (t_fw_us, host read ns) pairs",
            "pairs": self.pairs,
            "points": 0,
            "bucket_us": self.bucket_us,
            "rtt_min_us": None if self.rtt_min_ns is None else round(self.rtt_min_ns / 1e3, 1),
            "one_way_latency_us": round(self.one_way_ns / 1e3, 1),
            "wrap": {"bits": MICROS_BITS, "period_s": MICROS_WRAP_US / 1e6, "wraps": self.unwrap.wraps},
        }
        if env is None:
            return {**base, "ready": False}
        slope, icpt, fitted, pts = env
        line = self.line()
        assert line is not None
        res_us = [(y - (icpt + slope * x)) / 1e3 for x, y in pts]  # >= 0 by construction
        p50, p99 = _percentiles(res_us)
        return {
            **base,
            "ready": True,
            "drift_fitted": fitted,
            "points": len(pts),
            "span_s": round((pts[-1][0] - pts[0][0]) / 1e6, 3),
            "first_fw_us": pts[0][0],
            "last_fw_us": pts[-1][0],
            "ref_fw_us": line.ref_fw_us,
            "offset_ns": round(line.offset_ns),
            "slope_ns_per_us": line.slope_ns_per_us,
            "drift_ppm": round(line.drift_ppm, 3),
            "residual_us": {"p50": round(p50, 1), "p99": round(p99, 1), "max": round(max(res_us), 1)},
            "dropped_out_of_order": self.dropped_late,
        }


class TriggerModel:
    """One trigger run (TRIGGER_START .. stop): firmware time of every pulse from the periodic model.

    ``prescaler``, ``top`` and ``achieved_uhz`` come from the TRIGGER_START ACK. Times are kept in CPU
    cycles (``f_cpu_mhz`` per us) so the model is exact. :meth:`add_report` takes each TRIGGER report
    (0-based pulse index of the run, unwrapped ``t_us``) and returns its distance from the model in us.
    """

    def __init__(self, prescaler: int, top: int, achieved_uhz: int, report_every: int) -> None:
        self.prescaler = int(prescaler)
        self.top = int(top)
        self.ticks = (self.top + 1) * self.prescaler  # CPU cycles per pulse
        self.achieved_uhz = int(achieved_uhz)
        f = round(self.achieved_uhz * self.ticks / 1e12)  # CPU MHz (exact: achieved = F_CPU / ticks)
        self.f_cpu_mhz = f if f > 0 else 16
        self.report_every = int(report_every)
        self.reports = 0
        self.last_report_index = -1
        self._start_hist: Counter[int] = Counter()  # t_us * f - index * ticks, per report (cycles)
        self._start: int | None = None
        self._residual_hist: Counter[int] = Counter()  # report - model at its time (cycles)
        self._edge_hist: Counter[int] = Counter()  # simulator: edge cycle - index * ticks
        self.max_abs_residual_us = 0.0

    @property
    def period_us(self) -> float:
        return self.ticks / self.f_cpu_mhz

    @property
    def anchored(self) -> bool:
        return self._start is not None

    def add_report(self, index: int, t_us: int) -> float:
        r = int(t_us) * self.f_cpu_mhz - int(index) * self.ticks
        self._start_hist[r] += 1
        self.reports += 1
        self.last_report_index = max(self.last_report_index, int(index))
        self._start = _hist_median(self._start_hist)
        resid = r - self._start
        self._residual_hist[resid] += 1
        self.max_abs_residual_us = max(self.max_abs_residual_us, abs(resid) / self.f_cpu_mhz)
        return resid / self.f_cpu_mhz

    def t_fw_us(self, index: int) -> int:
        """Firmware time (us, on the reports' clock) of pulse ``index`` of the run."""
        if self._start is None:
            raise ValueError("trigger model has no report yet")
        return round((self._start + int(index) * self.ticks) / self.f_cpu_mhz)

    def add_edge(self, index: int, cycle: int, f_sim_mhz: int = 16) -> None:
        """Simulator only: the pin's rising edge of pulse ``index`` at AVR ``cycle`` (a cross-check)."""
        self._edge_hist[int(cycle) * self.f_cpu_mhz // f_sim_mhz - int(index) * self.ticks] += 1

    def summary(self) -> dict[str, object]:
        out: dict[str, object] = {
            "rate_hz": self.achieved_uhz / 1e6,
            "period_us": self.period_us,
            "prescaler": self.prescaler,
            "top": self.top,
            "f_cpu_mhz": self.f_cpu_mhz,
            "report_every": self.report_every,
            "reports": self.reports,
            "start_fw_us": None if self._start is None else round(self._start / self.f_cpu_mhz, 3),
        }
        if self._residual_hist:
            res = _hist_abs_percentiles(self._residual_hist, self.f_cpu_mhz)
            out["check_residual_us"] = {**res, "max": round(self.max_abs_residual_us, 3)}
        if self._edge_hist and self._start is not None:
            keys = sorted(self._edge_hist)
            out["edge_minus_model_us"] = {
                "median": round((_hist_median(self._edge_hist) - self._start) / self.f_cpu_mhz, 3),
                "min": round((keys[0] - self._start) / self.f_cpu_mhz, 3),
                "max": round((keys[-1] - self._start) / self.f_cpu_mhz, 3),
                "edges": sum(self._edge_hist.values()),
            }
        return out


def _hist_median(h: Counter[int]) -> int:
    n = sum(h.values())
    acc = 0
    for k in sorted(h):
        acc += h[k]
        if 2 * acc >= n:
            return k
    raise ValueError("empty histogram")


def _hist_abs_percentiles(h: Counter[int], scale: int) -> dict[str, float]:
    a: Counter[int] = Counter()
    for k, v in h.items():
        a[abs(k)] += v
    n = sum(a.values())
    out: dict[str, float] = {}
    for name, q in (("p50", 0.50), ("p99", 0.99)):
        acc = 0
        for k in sorted(a):
            acc += a[k]
            if acc >= q * n:
                out[name] = round(k / scale, 3)
                break
    return out
