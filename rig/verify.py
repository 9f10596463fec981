"""``deepbehavior session FOLDER --verify`` / ``--repair``: prove a session folder holds what it claims.

Checks (one PASS/WARN/FAIL line each, see ``rig/SESSION.md``):

* ``status``: what ``session.json`` says, and ``interrupted`` when it still says ``running`` but its
  supervisor (``host`` + ``supervisor_pid``) is gone;
* per camera: the frame table parses, ``seq`` increases by one per row, the claimed ``video_index``
  values are 0, 1, 2, ... in row order, the video holds as many frames as the table claims (more is a
  WARN after a crash: frames whose rows were not flushed yet; fewer is a FAIL naming the rows), and the
  summary's counts in ``session.json`` equal the table's;
* ``events.jsonl`` parses; the firmware's frame sequence numbers (``fw_seq``, which count every frame the
  firmware sends, command replies included) have no gap that the unlogged keep-alive replies do not
  explain; every task command got a reply;
* ``triggers.csv`` holds every trigger a frame names.

Frames in a video are counted by demuxing its packets (one packet per frame in our Matroska files; a
packet cut short by a crash is not returned by the demuxer), which agrees with a full decode and takes
milliseconds; ``--decode`` decodes every frame instead.

``--repair`` makes the frame tables agree with the videos after a crash: rows claiming a frame beyond
the video's end become ``video_index=-1, dropped=1`` (the original table is kept as
``<camera>.frames.csv.orig``), the summary's counts are rewritten from the tables, and a ``running``
session becomes ``interrupted``.

The checks are pure functions of the tables' columns (``check_*``); :func:`verify_session` and
:func:`repair_session` read the folder and call them.
"""

from __future__ import annotations

import csv
import os
import shutil
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from analysis.io.rig_session import parse_events, read_session_meta
from rig.errors import InputError
from rig.frames import pid_alive
from rig.session import read_rows, write_json_atomic, writer_active

Level = Literal["PASS", "WARN", "FAIL"]
FRAME_COLUMNS_NEEDED = ("seq", "trigger_index", "video_index", "dropped")
SHOW = 8  # how many numbers or ranges a detail names before "... (+N more)"
RUNNING_LIKE = ("running", "interrupted")


@dataclass(frozen=True)
class Check:
    level: Level
    name: str
    detail: str

    def line(self) -> str:
        return f"{self.level}  {self.name}: {self.detail}"


@dataclass
class Report:
    path: Path
    checks: list[Check] = field(default_factory=list)

    def add(self, level: Level, name: str, detail: str) -> None:
        self.checks.append(Check(level, name, detail))

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.level == "FAIL"]

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if c.level == "WARN"]

    def final_line(self) -> str:
        n, w, f = len(self.checks), len(self.warnings), len(self.failed)
        if f:
            return f"FAILED: {f} of {n} checks failed, {w} warnings ({self.path})"
        return f"OK: {n} checks, {w} warnings ({self.path})"

    def text(self) -> str:
        return "\n".join([*(c.line() for c in self.checks), self.final_line()])


# ----------------------------------------------------------------------------- formatting
def ranges(values: Iterable[int], show: int = SHOW) -> str:
    """``[1, 2, 3, 7, 9, 10]`` -> ``"1-3, 7, 9-10"``; after ``show`` ranges, ``... (+N more)``."""
    vals = sorted(set(int(v) for v in values))
    out: list[str] = []
    i = 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
            j += 1
        out.append(str(vals[i]) if i == j else f"{vals[i]}-{vals[j]}")
        i = j + 1
    if len(out) > show:
        return ", ".join(out[:show]) + f", ... (+{len(out) - show} more ranges)"
    return ", ".join(out)


# ----------------------------------------------------------------------------- the session status
def supervisor_state(meta: dict[str, Any], host: str | None = None) -> tuple[str, str]:
    """``(status, note)``: the status to report for ``session.json``'s ``meta``. A ``running`` session
    whose supervisor pid (on this host) is gone, or belongs to something that is not Python now (the pid
    was reused), is ``interrupted``."""
    status = str(meta.get("status", "?"))
    if status != "running":
        return status, ""
    pid, where = meta.get("supervisor_pid"), meta.get("host")
    if not isinstance(pid, int) or pid <= 0:
        return status, "cannot tell whether its supervisor is alive (session.json has no supervisor_pid)"
    if where != (host or socket.gethostname()):
        return status, f"recorded on host {where}; cannot check its supervisor (pid {pid}) from here"
    if pid_alive(pid, meta.get("supervisor_identity")):
        return status, f"supervisor pid {pid} is alive: still recording"
    return "interrupted", f"supervisor pid {pid} is gone; session.json still says running"


def check_status(meta: dict[str, Any], host: str | None = None) -> Check:
    status, note = supervisor_state(meta, host)
    reason = meta.get("reason") or ""
    detail = status + (f" ({note})" if note else "") + (f"; reason: {reason}" if reason else "")
    if status in ("complete", "stopped"):
        return Check("PASS", "status", detail)
    return Check("WARN", "status", detail)


# ----------------------------------------------------------------------------- tables
@dataclass
class Table:
    """A CSV read for checking and rewriting: the header, the raw rows (text kept as written) and the
    integer columns the checks need. ``torn`` when a crash left an incomplete last line (dropped)."""

    path: Path
    header: list[str]
    rows: list[list[str]]
    cols: dict[str, np.ndarray]
    torn: bool = False


def read_table(path: Path, needed: Sequence[str]) -> Table:
    """The session reader's rows (:func:`rig.session.read_rows`) with the integer columns the checks need;
    InputError names the file and line for a missing column or a non-integer cell in one."""
    r = read_rows(path, "session table")
    cols: dict[str, np.ndarray] = {}
    for name in needed:
        if name not in r.header:
            raise InputError(f"{path}: no column {name!r}")
        j = r.header.index(name)
        try:
            cols[name] = np.array([int(row[j]) for row in r.body], dtype=np.int64)
        except ValueError:
            k = next(i for i, row in enumerate(r.body) if not _is_int(row[j]))
            raise InputError(
                f"{path}: line {r.lines[k]}: {name} = {r.body[k][j]!r} is not an integer"
            ) from None
    return Table(path, r.header, r.body, cols, r.torn)


def _is_int(s: str) -> bool:
    try:
        int(s)
    except ValueError:
        return False
    return True


def check_seq(cam: str, seq: np.ndarray) -> Check:
    """``seq`` must be 0, 1, 2, ... one row per frame; a jump is frames with no row at all."""
    name = f"{cam} seq"
    if not len(seq):
        return Check("WARN", name, "no rows")
    missing: list[int] = list(range(0, int(seq[0])))
    back: list[int] = []
    d = np.diff(seq)
    for i in np.flatnonzero(d != 1):
        if d[i] > 1:
            missing.extend(range(int(seq[i]) + 1, int(seq[i + 1])))
        else:
            back.append(int(seq[i + 1]))
    if back:
        return Check("FAIL", name, f"seq does not increase at seq {ranges(back)} (repeated or out of order)")
    if missing:
        return Check("FAIL", name, f"{len(missing)} frames have no row: seq {ranges(missing)}")
    return Check("PASS", name, f"{len(seq)} rows, seq 0-{int(seq[-1])} without a gap")


def check_video_index(cam: str, cols: dict[str, np.ndarray]) -> Check:
    """Claimed indices are 0, 1, 2, ... in row order; ``dropped=1`` rows claim nothing."""
    name = f"{cam} video_index"
    vi, dropped, seq = cols["video_index"], cols["dropped"], cols["seq"]
    both = np.flatnonzero((dropped == 1) & (vi >= 0))
    if len(both):
        return Check(
            "FAIL", name, f"{len(both)} rows are dropped=1 but claim a video_index: seq {ranges(seq[both])}"
        )
    claimed = np.flatnonzero(vi >= 0)
    wrong = np.flatnonzero(vi[claimed] != np.arange(len(claimed)))
    if len(wrong):
        k = int(wrong[0])
        return Check(
            "FAIL",
            name,
            f"claimed indices are not 0, 1, 2, ... in row order: row with seq {int(seq[claimed[k]])} has "
            f"video_index {int(vi[claimed[k]])}, expected {k} ({len(wrong)} such rows)",
        )
    neither = np.flatnonzero((vi < 0) & (dropped != 1))
    if len(neither):
        return Check(
            "WARN",
            name,
            f"{len(claimed)} frames claimed in order; {len(neither)} rows are neither in the video nor "
            f"marked dropped: seq {ranges(seq[neither])}",
        )
    return Check("PASS", name, f"{len(claimed)} frames claimed, indices 0-{len(claimed) - 1} in order")


def check_video_count(
    cam: str, cols: dict[str, np.ndarray], n_video: int | None, how: str, error: str
) -> Check:
    """The video holds exactly the claimed frames; more is a WARN (rows not flushed before a crash),
    fewer a FAIL naming the rows."""
    name = f"{cam}.mkv"
    vi, seq = cols["video_index"], cols["seq"]
    n_claimed = int(vi.max()) + 1 if len(vi) and vi.max() >= 0 else 0  # positions 0 .. max claimed
    if n_video is None:
        if n_claimed:
            return Check(
                "FAIL", name, f"cannot read the video ({error}); the table claims {n_claimed} frames"
            )
        return Check("WARN", name, f"cannot read the video ({error}); the table claims no frame")
    note = f" ({error})" if error else ""
    if n_video == n_claimed:
        return Check("PASS", name, f"{n_video} frames ({how}), as the table claims{note}")
    if n_video > n_claimed:
        return Check(
            "WARN",
            name,
            f"{n_video} frames ({how}); {n_video - n_claimed} frames in the video have no row (video_index "
            f"{ranges(range(n_claimed, n_video))}: written after the table's last flush){note}",
        )
    gone = np.flatnonzero(vi >= n_video)
    return Check(
        "FAIL",
        name,
        f"{n_video} frames ({how}) but the table claims {n_claimed}: {len(gone)} frames missing from the "
        f"video, seq {ranges(seq[gone])} (video_index {ranges(vi[gone])}){note}",
    )


def table_counts(cols: dict[str, np.ndarray]) -> dict[str, int]:
    """What ``summary.frames.<camera>`` must say about a frame table."""
    return {
        "frames": len(cols["seq"]),
        "recorded": int(np.sum(cols["video_index"] >= 0)),
        "dropped": int(np.sum(cols["dropped"] == 1)),
    }


def check_summary(cam: str, meta: dict[str, Any], cols: dict[str, np.ndarray]) -> Check:
    name = f"{cam} summary"
    want = table_counts(cols)
    got = ((meta.get("summary") or {}).get("frames") or {}).get(cam)
    if got is None:
        level: Level = "WARN" if meta.get("status") in RUNNING_LIKE else "FAIL"
        return Check(level, name, f"session.json has no summary.frames.{cam} (the table has {_counts(want)})")
    diff = [f"{k} {got.get(k)} (table: {v})" for k, v in want.items() if got.get(k) != v]
    if diff:
        return Check("FAIL", name, "session.json's summary says " + ", ".join(diff))
    return Check("PASS", name, f"session.json agrees with the table: {_counts(want)}")


def _counts(c: dict[str, int]) -> str:
    return f"{c['frames']} frames, {c['recorded']} recorded, {c['dropped']} dropped"


def check_triggers(
    frame_triggers: dict[str, np.ndarray], trigger_index: np.ndarray | None, finished: bool
) -> Check:
    """Every trigger a frame names is in ``triggers.csv`` (the map between host and firmware clocks).
    Triggers newer than the table's last row are a crash window (WARN) unless the session finished."""
    name = "triggers.csv"
    if trigger_index is None or not len(trigger_index):
        return Check(
            "WARN",
            name,
            "no clock record (triggers.csv " + ("empty)" if trigger_index is not None else "missing)"),
        )
    have = set(trigger_index.tolist())
    last = int(trigger_index.max())
    inside: dict[str, list[int]] = {}
    after: dict[str, list[int]] = {}
    for cam, t in frame_triggers.items():
        lack = sorted(set(int(k) for k in t[t >= 0]) - have)
        inside[cam] = [k for k in lack if k <= last]
        after[cam] = [k for k in lack if k > last]
    n_in, n_after = sum(map(len, inside.values())), sum(map(len, after.values()))
    if n_in or (n_after and finished):
        parts = [
            f"{cam}: {len(inside[cam] + after[cam])} (trigger_index {ranges(inside[cam] + after[cam], 4)})"
            for cam in frame_triggers
            if inside[cam] or after[cam]
        ]
        return Check("FAIL", name, "frames name triggers that triggers.csv lacks: " + "; ".join(parts))
    if n_after:
        return Check(
            "WARN",
            name,
            f"{n_after} frame triggers newer than triggers.csv's last row ({last}): "
            "not flushed before the crash",
        )
    return Check("PASS", name, f"{len(trigger_index)} triggers; every frame's trigger is there")


# ----------------------------------------------------------------------------- events
def read_events(path: Path) -> tuple[list[dict[str, Any]], list[int], bool]:
    """``(events, bad_line_numbers, torn_last_line)`` (rig.session.parse_events: the reader's own rule);
    bytes that are not UTF-8 are replaced, so the rest of the file is still checked."""
    if not path.exists():
        return [], [], False
    events, bad, torn = parse_events(path.read_text(errors="replace"))
    return events, [n for n, _ in bad], bool(torn)


def check_events_file(path: Path, bad: list[int], torn: bool) -> Check:
    name = "events.jsonl"
    if not path.exists():
        return Check("WARN", name, "missing")
    if bad:
        return Check("FAIL", name, f"{len(bad)} lines are not JSON objects: line {ranges(bad)}")
    if torn:
        return Check("WARN", name, "the last line is torn (a crash mid-write); every other line parses")
    return Check("PASS", name, "every line parses")


class _Unwrap16:
    def __init__(self) -> None:
        self.last: int | None = None

    def __call__(self, v: int) -> int:
        if self.last is None:
            self.last = v
            return v
        d = (v - self.last) % 65536
        if d > 32768:
            d -= 65536
        self.last += d
        return self.last


def check_firmware_events(events: list[dict[str, Any]]) -> Check:
    """Firmware frames lost between the board and ``events.jsonl``.

    The firmware numbers every frame it sends (events and command replies, mod 2^16, from 0 at boot;
    ``firmware/PROTOCOL.md``); the host unwraps it into ``fw_seq`` and logs every frame except the replies
    to its keep-alive PINGs and to the HELLO handshake. Those unlogged replies are accounted for by the
    host's command numbers: the firmware replies to commands in order, so between two logged replies to
    commands ``c1 < c2`` it sent exactly ``c2 - c1 - 1`` unlogged replies (less those that timed out).
    Any other missing ``fw_seq`` is a lost frame. Link ``gap`` events (frames the host never received)
    are lost frames too. Gaps after the last logged reply cannot be attributed and are a WARN."""
    name = "firmware events"
    serial = [e for e in events if e.get("topic") == "serial.event"]
    if not serial:
        return Check("WARN", name, "no firmware events recorded")
    fails: list[str] = []
    warns: list[str] = []
    wire = [e for e in serial if e.get("kind") == "gap"]
    if wire:
        lost = [k for e in wire for k in range(int(e["values"]["expected"]), int(e["values"]["got"]))]
        fails.append(f"{len(lost)} frames never reached the host (link gap): fw_seq {ranges(lost)}")
    timed_out: set[int] = set()
    unwrap = _Unwrap16()
    epochs: list[list[tuple[int, str, int | None]]] = []  # per boot: (fw_seq, kind, unwrapped cmd_seq)
    for e in serial:
        kind = str(e.get("kind", ""))
        vals = e.get("values") or {}
        if kind == "ack_timeout" and isinstance(vals.get("cmd_seq"), int):
            timed_out.add(unwrap(int(vals["cmd_seq"])))
            continue
        fw = e.get("fw_seq", -1)
        if not isinstance(fw, int) or fw < 0:
            continue  # a link event (gap, reconnect, ...), not a firmware frame
        if kind == "boot" or not epochs:
            epochs.append([])
        cmd = (
            unwrap(int(vals["cmd_seq"]))
            if kind in ("ack", "nak") and isinstance(vals.get("cmd_seq"), int)
            else None
        )
        epochs[-1].append((fw, kind, cmd))
    n_frames = sum(len(ep) for ep in epochs)
    prev_cmd = 0  # the host numbers commands from 1
    for k, ep in enumerate(epochs):
        seqs = [f for f, _, _ in ep]
        back = [seqs[i + 1] for i in range(len(seqs) - 1) if seqs[i + 1] <= seqs[i]]
        if back:
            fails.append(f"fw_seq repeats or goes back at {ranges(back)} (boot {k})")
            continue
        # segments end at each logged command reply; the unlogged replies in a segment are known
        start = seqs[0] - 1 if ep[0][1] != "boot" else -1
        missing: list[int] = []
        for fw, _, cmd in ep:
            missing.extend(range(start + 1, fw))
            start = fw
            if cmd is None:
                continue
            unlogged = max(0, cmd - prev_cmd - 1 - sum(1 for c in timed_out if prev_cmd < c < cmd))
            if len(missing) > unlogged:
                fails.append(
                    f"{len(missing) - unlogged} firmware frames lost among fw_seq {ranges(missing)} "
                    f"(boot {k}; {unlogged} of those are unlogged keep-alive replies)"
                )
            prev_cmd = max(prev_cmd, cmd)
            missing = []
        if missing:
            warns.append(
                f"{len(missing)} fw_seq after the last logged command reply cannot be attributed "
                f"(keep-alive replies or lost frames): {ranges(missing)} (boot {k})"
            )
    if fails:
        return Check("FAIL", name, "; ".join(fails + warns))
    if warns:
        return Check("WARN", name, f"{n_frames} firmware frames; " + "; ".join(warns))
    return Check(
        "PASS",
        name,
        f"{n_frames} firmware frames in {len(epochs)} boot(s), fw_seq without a gap "
        "(unlogged keep-alive replies accounted for)",
    )


def check_command_replies(events: list[dict[str, Any]]) -> Check:
    """Every task command (``cmd.arduino``) logged before the last firmware frame got a reply (an ACK or
    NAK carrying its cause, or an ``ack_timeout``)."""
    name = "task commands"
    cmds = [e for e in events if e.get("topic") == "cmd.arduino"]
    if not cmds:
        return Check("PASS", name, "no task command recorded")
    serial = [e for e in events if e.get("topic") == "serial.event"]
    last_t = max((int(e.get("t_host_ns", -1)) for e in serial if e.get("fw_seq", -1) >= 0), default=-1)
    replies = sum(
        1
        for e in serial
        if (e.get("kind") in ("ack", "nak") and "cause_trigger_index" in (e.get("values") or {}))
        or (e.get("kind") == "ack_timeout" and (e.get("values") or {}).get("cmd") != "ping")
    )
    due = sum(1 for e in cmds if int(e.get("t_host_ns", 0)) < last_t)
    if replies < due:
        return Check(
            "FAIL", name, f"{due} task commands sent before the last firmware frame, {replies} replies logged"
        )
    return Check("PASS", name, f"{len(cmds)} task commands, {replies} replies")


# ----------------------------------------------------------------------------- videos
def count_video_frames(path: Path, decode: bool = False) -> tuple[int | None, str]:
    """``(frames, error)``: frames in a Matroska video, by demuxing packets (fast) or by decoding every
    frame; ``None`` if it cannot be opened at all. ``error`` says why reading stopped early, if it did."""
    import av

    from rig.session import y_plane

    if not path.exists():
        return None, "missing"
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        return None, f"cannot open: {exc}"
    n = 0
    try:
        with container:
            if not container.streams.video:
                return None, "no video stream"
            if decode:
                for frame in container.decode(video=0):
                    y_plane(frame)
                    n += 1
            else:
                for packet in container.demux(video=0):
                    if packet.size:  # the demuxer ends with an empty flush packet
                        n += 1
    except (av.error.FFmpegError, OSError) as exc:
        return n, f"stopped after {n} frames: {exc}"
    return n, ""


# ----------------------------------------------------------------------------- the folder
def read_meta(path: Path) -> dict[str, Any]:
    return read_session_meta(path, InputError)


def verify_session(
    path: str | Path,
    decode: bool = False,
    host: str | None = None,
    counter: Callable[[Path, bool], tuple[int | None, str]] = count_video_frames,
) -> Report:
    """Every check on a session folder; raises InputError if it is not one."""
    p = Path(path)
    meta = read_meta(p)
    rep = Report(p)
    rep.checks.append(check_status(meta, host))
    if writer_active(p):
        rep.add("WARN", "recorder", "still writing the files (checked as they are now)")
    finished = meta.get("status") in ("complete", "stopped")
    frame_triggers: dict[str, np.ndarray] = {}
    how = "decoded" if decode else "packets"
    for cam in meta.get("cameras", []):
        try:
            t = read_table(p / f"{cam}.frames.csv", FRAME_COLUMNS_NEEDED)
        except InputError as exc:
            rep.add("FAIL", f"{cam}.frames.csv", str(exc))
            continue
        if t.torn:
            rep.add(
                "WARN", f"{cam}.frames.csv", f"{len(t.rows)} rows; the last line is torn (a crash mid-write)"
            )
        rep.checks.append(check_seq(cam, t.cols["seq"]))
        rep.checks.append(check_video_index(cam, t.cols))
        n_video, err = counter(p / f"{cam}.mkv", decode)
        rep.checks.append(check_video_count(cam, t.cols, n_video, how, err))
        rep.checks.append(check_summary(cam, meta, t.cols))
        frame_triggers[cam] = t.cols["trigger_index"]
    events, bad, torn = read_events(p / "events.jsonl")
    rep.checks.append(check_events_file(p / "events.jsonl", bad, torn))
    rep.checks.append(check_firmware_events(events))
    rep.checks.append(check_command_replies(events))
    trig: np.ndarray | None = None
    if (p / "triggers.csv").exists():
        try:
            trig = read_table(p / "triggers.csv", ("index",)).cols["index"]
        except InputError as exc:
            rep.add("FAIL", "triggers.csv", str(exc))
            return rep
    rep.checks.append(check_triggers(frame_triggers, trig, finished))
    return rep


def repair_session(
    path: str | Path,
    decode: bool = False,
    host: str | None = None,
    counter: Callable[[Path, bool], tuple[int | None, str]] = count_video_frames,
) -> list[str]:
    """Make the frame tables agree with the videos; returns one line per change (empty: nothing to do).
    Refuses a session whose supervisor is still alive."""
    p = Path(path)
    meta = read_meta(p)
    status, note = supervisor_state(meta, host)
    if status == "running" and note.endswith("still recording"):
        raise InputError(f"{p}: {note}; stop it before --repair")
    if writer_active(p):
        raise InputError(
            f"{p}: its recorder is still writing its files; wait for it to finish before --repair"
        )
    changes: list[str] = []
    counts: dict[str, dict[str, int]] = {}
    for cam in meta.get("cameras", []):
        table_path = p / f"{cam}.frames.csv"
        t = read_table(table_path, FRAME_COLUMNS_NEEDED)
        n_video, err = counter(p / f"{cam}.mkv", decode)
        n_video = n_video or 0
        vi = t.cols["video_index"]
        beyond = np.flatnonzero(vi >= n_video)
        if len(beyond) or t.torn:
            orig = table_path.with_name(table_path.name + ".orig")
            if not orig.exists():
                shutil.copy2(table_path, orig)
                changes.append(f"{cam}: original table kept as {orig.name}")
            j_vi, j_dr = t.header.index("video_index"), t.header.index("dropped")
            for i in beyond:
                t.rows[i][j_vi], t.rows[i][j_dr] = "-1", "1"
            _write_csv_atomic(table_path, t.header, t.rows)
            t.cols["video_index"][beyond] = -1
            t.cols["dropped"][beyond] = 1
            seqs = t.cols["seq"][beyond]
            if len(beyond):
                changes.append(
                    f"{cam}: {len(beyond)} rows claimed frames the video ({n_video} frames"
                    + (f"; {err}" if err else "")
                    + f") does not hold: seq {ranges(seqs)} now video_index=-1, dropped=1"
                )
            if t.torn:
                changes.append(f"{cam}: torn last line removed")
        counts[cam] = table_counts(t.cols)
    summary = dict(meta.get("summary") or {})
    if not (p / "closed_loop.csv").exists() and (p / "events.jsonl").exists():
        # written at the session's end: a crashed session's stimuli are rebuilt from events.jsonl
        from rig.closed_loop_report import closed_loop_summary
        from rig.session import load_session

        report = closed_loop_summary(load_session(p))
        if "records" in report:
            summary["closed_loop_report"] = report
            changes.append(f"closed_loop.csv rebuilt from events.jsonl ({report['records']} stimuli)")
    frames = dict(summary.get("frames") or {})
    for cam, c in counts.items():
        if frames.get(cam) != c:
            changes.append(
                f"{cam}: summary {_counts(frames[cam]) if frames.get(cam) else 'missing'} -> {_counts(c)}"
            )
            frames[cam] = c
    if not changes and meta.get("status") != "running":
        return changes
    summary["frames"] = frames
    new = dict(meta, summary=summary)
    if status in RUNNING_LIKE:
        cams = "; ".join(f"{cam} {_counts(c)}" for cam, c in counts.items())
        new["status"] = "interrupted"
        new["reason"] = f"repaired after a crash: counts taken from the tables and videos on disk ({cams})"
        if meta.get("status") != "interrupted":
            changes.append(f"status {meta.get('status')} -> interrupted")
    orig_meta = p / "session.json.orig"
    if not orig_meta.exists():
        shutil.copy2(p / "session.json", orig_meta)
    write_json_atomic(p / "session.json", new)
    return changes


def _write_csv_atomic(path: Path, header: list[str], rows: list[list[str]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
