"""``deepbehavior``: the one command line. The only module that knows rig, detection and analysis.

User errors (bad config, missing calibration, unreadable input, full disk) print one line
``deepbehavior: error: ...`` and exit 2, without a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import json
import logging
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from analysis.errors import AnalysisError
from detection.base import DetectionError
from rig.config import DEFAULT_CONFIG, deep_merge, load_config, parse_override
from rig.errors import UserError
from rig.session import SessionSummary

# Modules that add their own subcommands with register(subparsers); missing ones are skipped.
PLUGIN_MODULES = (
    "rig.cameras.commands",
    "rig.firmware_commands",
    "rig.check",
    "rig.align",
    "detection.commands",
    "detection.pose_commands",
    "analysis.commands",
    "rig.display.commands",
)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    over: dict[str, Any] = {}
    for item in args.set or []:
        over = deep_merge(over, parse_override(item))
    if getattr(args, "trials", None) is not None:
        over = deep_merge(over, {"experiment": {"n_trials": args.trials}})
    if getattr(args, "duration", None) is not None:
        over = deep_merge(over, {"experiment": {"max_duration_s": args.duration}})
    if getattr(args, "output", None) is not None:
        over = deep_merge(over, {"session": {"output_dir": str(Path(args.output).resolve())}})
    return over


def _sim(args: argparse.Namespace, over: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """``--sim`` (rig.simulate): the overrides that swap the cameras and the board for simulated ones, and
    the line that says so; unchanged without ``--sim``."""
    if not getattr(args, "sim", False):
        return over, ""
    from rig.simulate import sim_overrides

    return sim_overrides(args.config, over)


def cmd_run(args: argparse.Namespace) -> int:
    from rig.supervisor import Supervisor

    over = _overrides(args)
    if args.command == "record":
        over = deep_merge(
            over, {"pipeline": {"detector": {"enabled": False}, "triangulator": {"enabled": False}}}
        )
    over, sim_note = _sim(args, over)
    loaded = load_config(args.config, over)
    # inputs checked before any process starts
    findings = importlib.import_module("rig.preflight").preflight(loaded, session=True)
    cfg = loaded.config
    cams = ", ".join(f"{n} ({c.backend} {c.width}x{c.height})" for n, c in cfg.rig.cameras.items())
    print(
        f"deepbehavior {args.command}: config {loaded.source}\n"
        + (f"  {sim_note}\n" if sim_note else "")
        + f"  rig {cfg.rig.name}: cameras {cams}"
        f" @ {cfg.rig.trigger.rate_hz:g} Hz ({cfg.rig.trigger.source} trigger)\n"
        f"  experiment: {cfg.experiment.task}, subject {cfg.experiment.subject}, "
        f"{cfg.experiment.n_trials or 'unlimited'} trials, max {cfg.experiment.max_duration_s:g} s"
        + "".join(f"\n  {f}" for f in findings if f.warning),
        flush=True,
    )
    sup = Supervisor(
        loaded,
        progress=not args.quiet,
        session_name=args.name,
        console_level=logging.INFO if args.verbose else logging.WARNING,
    )
    res = sup.run()
    try:  # the terminal may be gone (SIGHUP): the session folder holds the summary all the same
        print(_summary_text(res.path, res.status, res.reason, res.summary), flush=True)
    except OSError:
        pass
    return 0 if res.status in ("complete", "stopped") else 1


def _summary_text(path: Path, status: str, reason: str, s: SessionSummary | None) -> str:
    lines = [f"\nsession {status}" + (f" ({reason})" if reason else "")]
    if s is None:
        return "\n".join([*lines, f"  session folder: {path}"])
    rate = "" if s.success_rate is None else f"  success rate: {s.success_rate:.0%}"
    lines.append(f"  trials: {s.trials}  outcomes: {s.outcomes}{rate}")
    if s.read_back_error:
        lines.append(f"  the session's files could not be read back: {s.read_back_error}")
    for cam, f in (s.frames or {}).items():
        lines.append(f"  {cam}: {f.frames} frames, {f.recorded} recorded, {f.dropped} dropped")
    p = s.points3d
    if p:
        lines.append(
            f"  3-D points: {p.n} ({p.valid} valid); frame->3D latency p50 {p.latency_ms_p50:.2f} ms,"
            f" p99 {p.latency_ms_p99:.2f} ms"
        )
        if e := p.error_vs_truth_mm:
            lines.append(f"  3-D error vs simulator truth: median {e.median:.2f}, p95 {e.p95:.2f} mm")
    if c := s.closed_loop:
        lines.append(
            f"  closed loop: {c.pulses} TTL pulses; trigger -> TTL pin "
            f"p50 {c.trigger_to_ttl_ms_p50:.2f} ms, p99 {c.trigger_to_ttl_ms_p99:.2f} ms (firmware clock)"
        )
    for name, r in (s.closed_loop_report or {}).get("truth", {}).items():
        delay = (
            f"true event -> pin p50 {r['delay_ms_p50']:.2f} ms, max {r['delay_ms_max']:.2f} ms"
            if "delay_ms_p50" in r
            else "no delay measured"
        )
        lines.append(
            f"  closed loop vs simulator truth, rule {name}: {r['expected']} true events, {delay} "
            f"({r['clock']} clock), {r['misses']} missed, {r['false_pulses']} false"
        )
    if s.detector_skipped_late:
        lines.append(
            f"  detector: {s.detector_skipped_late} frames came too late to detect online (machine "
            "overloaded; they are recorded: `deepbehavior reanalyze --detect` covers them)"
        )
    if s.detector_shed_for_recording:
        lines.append(
            f"  detector: {s.detector_shed_for_recording} frames left undetected online while the "
            "recorder caught up (the recording comes first; they are recorded: `deepbehavior reanalyze "
            "--detect`)"
        )
    rec = (s.nodes or {}).get("recorder", {})
    spilled = {k.rsplit(".", 1)[0]: int(v) for k, v in rec.items() if k.endswith(".spilled") and v}
    if spilled:
        lines.append(
            "  recorder: the encoder fell behind; frames waited on disk before encoding ("
            + ", ".join(f"{cam} {n}" for cam, n in spilled.items())
            + "): none lost. A faster preset or more cores keeps them in RAM"
        )
    for r in s.restarts:
        lines.append(f"  restart: {r}")
    lines.append(f"  session folder: {path}")
    return "\n".join(lines)


def cmd_config_check(args: argparse.Namespace) -> int:
    """Validate the config, then everything a session will need (rig.preflight), saying what was checked."""
    from rig.preflight import preflight

    over, sim_note = _sim(args, _overrides(args))
    loaded = load_config(args.config, over)
    findings = preflight(loaded)
    print(f"{loaded.source}: OK" + (f" ({sim_note})" if sim_note else ""))
    for f in findings:
        print(f"  {f}")
    if args.show:
        import yaml

        print(yaml.safe_dump(loaded.config.model_dump(mode="json"), sort_keys=False))
    return 0


def cmd_session_info(args: argparse.Namespace) -> int:
    from rig.verify import repair_session, supervisor_state, verify_session

    if args.repair:
        changes = repair_session(args.session, decode=args.decode)
        for line in changes or ["nothing to repair: the tables agree with the videos"]:
            print(f"repair: {line}")
    if args.verify or args.repair:
        report = verify_session(args.session, decode=args.decode)
        print(report.text())
        return 1 if report.failed else 0
    if args.decode:
        raise UserError("--decode goes with --verify or --repair")
    from rig.session import load_session

    s = load_session(args.session)
    status, note = supervisor_state(s.meta)
    print(
        json.dumps(
            {
                "path": str(s.path),
                **{k: s.meta.get(k) for k in ("status", "reason", "subject", "started", "ended")},
                **({"status": f"{status} ({note})"} if status != s.meta.get("status") else {}),
                "summary": s.meta.get("summary"),
            },
            indent=2,
        )
    )
    return 0


def cmd_reanalyze(args: argparse.Namespace) -> int:
    from rig.reanalyze import Options, run_batch, slurm_options

    if args.status:
        return _reanalysis_status(args.sessions)
    slurm = slurm_options(args.slurm_queue, args.slurm_memory, args.slurm_walltime) if args.slurm else None
    model = str(Path(args.model).resolve()) if args.model else None
    if model and not Path(model).is_file():
        raise UserError(f"--model {args.model}: no such file")
    options = Options(
        detect=args.detect or args.device != "cpu",
        model=model,
        analyses=not args.no_analyses,
        accept_partial=args.accept_partial,
        device=args.device,
    )
    bars = _ReanalysisProgress(len(args.sessions), quiet=args.quiet)
    try:
        results = run_batch(args.sessions, args.scheduler, args.workers, args.force, bars, slurm, options)
    finally:
        bars.close()
    failed = 0
    for path, r in results.items():
        if "error" in r:
            failed += 1
            print(f"FAILED  {path}: {r['error']}")
            if args.verbose and r.get("traceback"):
                print(r["traceback"], file=sys.stderr)
        elif r.get("skipped"):
            print(f"skipped {path} (already reanalysed with these options; --force to redo)")
        else:
            d = r.get("diff_vs_online_mm") or {}
            extra = ""
            if d.get("n"):
                extra = f", |offline - online| median {d['median']:.2g} max {d['max']:.2g} mm"
            fps = f", {r['frames_per_s']:.0f} frames/s" if r.get("frames_per_s") else ""
            if r.get("partial"):
                missing = {c: n for c, n in (r.get("frames_missing_from_video") or {}).items() if n}
                extra += f"; PARTIAL: frames missing from the videos {missing} (--accept-partial)"
            print(
                f"done    {path}: {r['valid']}/{r['n_points']} valid 3-D points "
                f"in {r['seconds']:.1f} s{fps}{extra}"
            )
    print(
        f"{len(results) - failed} of {len(results)} sessions reanalysed"
        + (f", {failed} failed" if failed else "")
    )
    return 1 if failed else 0


class _ReanalysisProgress:
    """The batch's progress on stderr: a bar of sessions, and per running session its frames, frames/s
    and ETA (a bar each on a terminal; elsewhere, a line per session every ``LINE_S`` seconds)."""

    LINE_S = 10.0

    def __init__(self, total: int, quiet: bool) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.bar = tqdm(total=total, unit="session", disable=quiet, position=0)
        self.sessions: dict[str, Any] = {}  # running session -> its bar (terminal) or last line's time
        self.shown_stage: dict[str, str] = {}

    def __call__(self, done: int, total: int, running: dict[str, dict[str, Any]]) -> None:
        if self.quiet:
            return
        self.bar.total = total
        self.bar.update(done - self.bar.n)
        for path in [p for p in self.sessions if p not in running]:
            if self.tty:
                self.sessions[path].close()
            del self.sessions[path]
        for path, prog in running.items():
            text = self._text(prog)
            if self.tty:
                bar = self.sessions.get(path)
                if bar is None:
                    bar = self.sessions[path] = self._tqdm(
                        total=prog.get("frames_total") or 0,
                        desc=Path(path).name,
                        unit="frame",
                        position=len(self.sessions) + 1,
                        leave=False,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {postfix}",
                    )
                bar.total = prog.get("frames_total") or 0
                bar.n = prog.get("frames_done", 0)
                bar.set_postfix_str(text, refresh=True)
            elif self._line_due(path, prog):
                n_total = prog.get("frames_total")
                frames = f"{prog['frames_done']}/{n_total} frames, " if n_total else ""
                self._tqdm.write(f"running {path}: {frames}{text}", file=sys.stderr)

    def _line_due(self, path: str, prog: dict[str, Any]) -> bool:
        """A line when a session is first seen, when its first frames/s is known, then every LINE_S."""
        last, had_rate = self.sessions.get(path, (-1e9, False))
        rate = bool(prog.get("frames_per_s"))
        if time.monotonic() - last < self.LINE_S and (had_rate or not rate):
            return False
        self.sessions[path] = (time.monotonic(), rate)
        return True

    @staticmethod
    def _text(prog: dict[str, Any]) -> str:
        from rig.reanalyze import _hms

        parts = [str(prog.get("stage"))]
        if prog.get("frames_per_s"):
            parts.append(f"{prog['frames_per_s']:.0f} frames/s")
        if prog.get("eta_s") is not None:
            parts.append(f"ETA {_hms(prog['eta_s'])}")
        return ", ".join(parts)

    def close(self) -> None:
        if self.tty:
            for bar in self.sessions.values():
                bar.close()
        self.bar.close()


def _reanalysis_status(sessions: list[str]) -> int:
    """``reanalyze --status``: one line per session from what its folder holds; exit 1 if any failed."""
    from rig.reanalyze import session_status

    counts: dict[str, int] = {}
    for path in sessions:
        st = session_status(path)
        counts[st["state"]] = counts.get(st["state"], 0) + 1
        detail = f": {st['detail']}" if st["detail"] else ""
        print(f"{st['state']:<13} {Path(path).resolve()}{detail}")
    print(", ".join(f"{n} {state}" for state, n in counts.items()))
    return 1 if counts.get("failed") or counts.get("not a session") else 0


SIM_HELP = (
    "simulate the rig: every camera becomes a synthetic one (same names, sizes and rate), the Arduino the "
    "real firmware in the simulator, the calibration the built-in synthetic one unless the rig's own fits "
    "the simulated scene; everything else in the config is kept; session folders are named sim-..."
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deepbehavior", description="DeepBehavior rig: acquisition, closed loop, analysis."
    )
    p.add_argument("-v", "--verbose", action="store_true", help="show every node's INFO log on the console")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, helptext in (
        ("run", "run a session: cameras, detection, 3-D, task, recording (default: the simulated rig)"),
        ("record", "record only: cameras, task and recording, no detection or 3-D"),
    ):
        r = sub.add_parser(name, help=helptext, description=helptext)
        r.add_argument(
            "config",
            nargs="?",
            default=str(DEFAULT_CONFIG),
            help=f"config file (default: {DEFAULT_CONFIG.name})",
        )
        r.add_argument(
            "--set", action="append", metavar="KEY.PATH=VALUE", help="override a config value (repeatable)"
        )
        r.add_argument("--trials", type=int, help="override experiment.n_trials")
        r.add_argument("--duration", type=float, help="override experiment.max_duration_s (seconds)")
        r.add_argument("--output", help="override session.output_dir")
        r.add_argument("--name", help="session folder name (default from session.name)")
        r.add_argument("--quiet", action="store_true", help="no progress line")
        r.add_argument("--sim", action="store_true", help=SIM_HELP)
        r.set_defaults(func=cmd_run)
    c = sub.add_parser("config", help="validate a config file and its calibration")
    c.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG))
    c.add_argument("--set", action="append", metavar="KEY.PATH=VALUE")
    c.add_argument("--sim", action="store_true", help=SIM_HELP)
    c.add_argument("--show", action="store_true", help="print the resolved config")
    c.set_defaults(func=cmd_config_check)
    s = sub.add_parser(
        "session",
        help="print a recorded session's status and summary; --verify / --repair its files",
        description="Print a recorded session's status and summary. --verify checks the videos against the "
        "frame tables, frame and firmware sequence numbers, the trigger table and the summary, one "
        "PASS/WARN/FAIL line each (exit 1 on any FAIL); --repair makes the tables agree with the videos "
        "after a crash (the original tables are kept as .orig), then verifies.",
    )
    s.add_argument("session", help="session folder")
    s.add_argument("--verify", action="store_true", help="check the session's files; exit 1 if a check fails")
    s.add_argument(
        "--repair", action="store_true", help="after a crash: make the tables agree with the videos"
    )
    s.add_argument(
        "--decode", action="store_true", help="count video frames by decoding each (default: count packets)"
    )
    s.set_defaults(func=cmd_session_info)
    ra = sub.add_parser(
        "reanalyze",
        help="re-run detection, 3-D and analyses over recorded sessions on Dask (resumable)",
        description="Re-run the online pipeline's code over recorded sessions (same code, same settings) "
        "on a Dask cluster: local by default, a scheduler address, or SLURM through dask-jobqueue. By "
        "default the recorded detections are re-triangulated; --detect re-detects from the videos. Then the "
        "task's analyses (reaching). Results go to SESSION/reanalysis/; sessions finished with the same "
        "options are skipped unless --force.",
    )
    ra.add_argument("sessions", nargs="+", help="session folders")
    ra.add_argument("--workers", type=int, default=2, help="local (or SLURM) workers (default 2)")
    ra.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786")
    ra.add_argument("--slurm", action="store_true", help="start workers as SLURM jobs (dask-jobqueue)")
    ra.add_argument("--slurm-queue", help="SLURM partition")
    ra.add_argument("--slurm-memory", default="4GB")
    ra.add_argument("--slurm-walltime", default="01:00:00")
    ra.add_argument(
        "--detect", action="store_true", help="re-detect from the videos with the session's detector settings"
    )
    ra.add_argument("--model", help="re-detect with this model file instead (implies --detect)")
    ra.add_argument(
        "--device",
        choices=["cpu", "cuda", "tensorrt"],
        default="cpu",
        help="where re-detection runs (implies --detect): cuda = ONNX Runtime's CUDA provider, tensorrt = "
        "a TensorRT FP16 engine built from the ONNX model and cached beside it; videos decode on the GPU "
        "where FFmpeg offers it (default cpu)",
    )
    ra.add_argument("--no-analyses", action="store_true", help="3-D only, no task analyses")
    ra.add_argument("--force", action="store_true", help="redo sessions already reanalysed")
    ra.add_argument(
        "--accept-partial",
        action="store_true",
        help="re-detect a truncated video as far as it goes (default: a session whose video lacks frames its "
        "frame table lists fails)",
    )
    ra.add_argument("--quiet", action="store_true", help="no progress bar")
    ra.add_argument(
        "--status",
        action="store_true",
        help="reanalyse nothing: show which sessions are done, running or failed (with the reason), from "
        "what their folders hold (works while a batch runs, from any machine that sees the folders)",
    )
    ra.set_defaults(func=cmd_reanalyze)
    for mod_name in PLUGIN_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as exc:
            if exc.name and mod_name.startswith(exc.name):
                continue
            raise
        mod.register(sub)
    return p


def _input_error_line(exc: Exception) -> str | None:
    """The one line for a failure caused by the user's input, not by a bug: a user error of any package
    (``UserError``, ``AnalysisError``, ``DetectionError``) or a file the system refused (an ``OSError``
    naming its file, which no reader turned into a user error). None for anything else: a bug."""
    if isinstance(exc, UserError | AnalysisError | DetectionError):
        return str(exc)
    if isinstance(exc, OSError) and exc.filename is not None:
        files = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        why = "disk full" if exc.errno == errno.ENOSPC else exc.strerror or type(exc).__name__
        return f"{files}: {why}"
    return None


def _save_traceback(argv: list[str]) -> str:
    """Write the traceback being handled, with the command line and versions, to a crash log; its path,
    or why it could not be written."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(tempfile.gettempdir()) / f"deepbehavior-crash-{stamp}-{os.getpid()}.log"
    try:
        path.write_text(
            f"command: deepbehavior {' '.join(argv)}\npython: {sys.version.split()[0]} on {sys.platform}\n\n"
            + traceback.format_exc()
        )
    except OSError as exc:
        return f"(could not save it to {path}: {exc.strerror})"
    return str(path)


def main(argv: list[str] | None = None) -> int:
    """Run one command. A user error prints one line ``deepbehavior: error: ...`` naming the file and the
    line, field or byte at fault, exit 2 (3 for hardware); a bug prints its traceback and where it is saved,
    exit 1."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    level = logging.INFO if args.verbose else logging.WARNING
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(level)
    console.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(console)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("deepbehavior: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`deepbehavior session X | head`): nothing to report
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - no flush error at exit
        return 141
    except Exception as exc:  # the one place a failure becomes a user error's line or a bug report
        line = _input_error_line(exc)
        if line is not None:
            print(f"deepbehavior: error: {line}", file=sys.stderr)
            return exc.exit_code if isinstance(exc, UserError) else 2
        saved = _save_traceback(argv)
        traceback.print_exc()
        print(
            f"deepbehavior: internal error (a bug, not a mistake in your input); the traceback is saved "
            f"in {saved}: please report it with that file",
            file=sys.stderr,
        )
        return 1
    finally:  # called again in one process (tests, a notebook): no second handler on a stale stderr
        root.removeHandler(console)


if __name__ == "__main__":
    sys.exit(main())
