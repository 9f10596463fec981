"""Matplotlib helpers shared by the analyses: a headless pyplot and a save-and-close."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: str | Path, tight: bool = True) -> Path:
    """Write ``fig`` to ``path`` (PNG at 100 dpi), close it, return the path."""
    if tight:
        fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    return path


def _read_json(path: Path, task: str) -> Any:
    import json

    from analysis.errors import AnalysisError

    if not path.is_file():
        raise AnalysisError(f"{path.parent}: no {path.name}: give the folder the {task} analysis wrote")
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        raise AnalysisError(f"{path}: not a JSON file") from None


def three_chamber_figures(folder: str | Path, out_dir: str | Path) -> list[Path]:
    """The paper's three-chamber figures from ``three_chamber.json`` (what ``three-chamber`` wrote): time
    per chamber (``occupancy.png``) and per cup zone with each interaction bout on a time line
    (``cup_interaction.png``), 600 x 400 px each. The head trajectory is the command's own
    ``trajectory.png``."""
    s = _read_json(Path(folder) / "three_chamber.json", "three-chamber")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    names = list(s["occupancy_s"])
    ax.bar(names, [s["occupancy_s"][n] for n in names], color="tab:blue")
    ax.set_ylabel("time (s)")
    si = s.get("sociability_index")
    ax.set_title("time per chamber" + (f" (sociability index {si:.2f})" if si is not None else ""))
    written = [save(fig, out / "occupancy.png")]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(6, 4), gridspec_kw={"width_ratios": [1, 2]})
    cups = list(s["cups"])
    ax1.bar(cups, [s["cups"][c]["interaction_s"] for c in cups], color="tab:orange")
    ax1.set_ylabel("interaction time (s)")
    ax1.tick_params(axis="x", labelsize=7)
    for i, c in enumerate(cups):
        for a, b in s["cups"][c].get("bouts_s", []):
            ax2.plot([a, b], [i, i], lw=8, color="tab:orange", solid_capstyle="butt")
    ax2.set_yticks(range(len(cups)), cups, fontsize=7)
    ax2.set_ylim(-0.5, len(cups) - 0.5)
    ax2.set_xlabel("time (s)")
    ax2.set_title("interaction bouts")
    written.append(save(fig, out / "cup_interaction.png"))
    return written


def social_figures(folder: str | Path, out_dir: str | Path) -> list[Path]:
    """The paper's two-mouse figures from ``social.json`` and ``social_tracks.csv`` (what ``social``
    wrote; one pair): each mouse's speed over time with the contact epochs shaded (``speed.png``), and
    contact time per type (``contact_types.png``), 600 x 400 px each. Trajectories and the distance plot
    are the command's own ``trajectories.png`` and ``distance.png``."""
    import pandas as pd

    from analysis.errors import AnalysisError

    d = Path(folder)
    s = _read_json(d / "social.json", "social")
    if "pairs" in s:
        raise AnalysisError(f"{d}: several pairs: give one pair's subfolder")
    if not (d / "social_tracks.csv").is_file():
        raise AnalysisError(f"{d}: no social_tracks.csv: give the folder the social analysis wrote")
    tracks = pd.read_csv(d / "social_tracks.csv")
    unit = s["units"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for who in s["individuals"]:
        col = f"{who}_speed_{unit}_s"
        if col in tracks.columns:
            ax.plot(tracks["t_s"], tracks[col], lw=0.7, label=str(who))
    for e in s.get("epochs", []):
        ax.axvspan(e["start_s"], e["end_s"], color="0.8", lw=0)
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"speed ({unit}/s)")
    ax.set_title(f"speed; {len(s.get('epochs', []))} contact epochs shaded")
    ax.legend()
    written = [save(fig, out / "speed.png")]
    fig, ax = plt.subplots(figsize=(6, 4))
    kinds = list(s.get("by_type", {}))
    ax.bar(kinds, [s["by_type"][k]["duration_s"] for k in kinds], color="tab:purple")
    for i, k in enumerate(kinds):
        ax.text(i, s["by_type"][k]["duration_s"], f"n={s['by_type'][k]['n']}", ha="center", va="bottom")
    ax.set_ylabel("contact time (s)")
    ax.set_title(f"close contact: {s.get('contact_s', 0):.1f} s in all")
    written.append(save(fig, out / "contact_types.png"))
    return written
