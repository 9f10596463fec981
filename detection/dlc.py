"""DeepLabCut's labeled-frame table (``CollectedData_<scorer>.csv`` / ``.h5``), read and written the way
DeepLabCut writes it, so a lab can label in either tool and train in either.

The format (single animal), as pandas writes DeepLabCut's DataFrame:

* three header rows ``scorer`` / ``bodyparts`` / ``coords`` (column MultiIndex; coords ``x``, ``y``;
  machine-labeled tables may carry ``likelihood`` too, kept as read);
* one row per labeled image, its index the image path relative to the project root, with ``/``:
  ``labeled-data/<video>/img0042.png`` (DeepLabCut <= 2.2), or the same path split in three index columns
  ``labeled-data,<video>,img0042.png`` (DeepLabCut >= 2.2's MultiIndex rows); the form read is the form
  written;
* numbers as Python's shortest round-trip ``repr`` (pandas' default), an empty cell for an unlabeled part;
* the ``.h5`` twin: pandas/PyTables, key ``df_with_missing``, ``format="table"`` (``"fixed"`` for three-part
  row keys, which the table format cannot store with the column levels).

A multi-animal table (maDeepLabCut) has a fourth header row, ``individuals``, between ``scorer`` and
``bodyparts`` (column MultiIndex scorer/individuals/bodyparts/coords); it is read and written the same way
(:attr:`DlcTable.individuals`). Point labeling and keypoint training are single-animal
(:meth:`DlcTable.require_single_animal`); box conversion (``detect convert --from dlc``) reads both.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analysis.textfile import read_text
from detection.datasets import DatasetError

log = logging.getLogger(__name__)

H5_KEY = "df_with_missing"
RowKey = tuple[str, ...]  # the index: one path, or its three parts


def h5_available() -> bool:
    """Whether pandas and PyTables are installed (what reading and writing the ``.h5`` twin needs)."""
    try:
        import pandas  # noqa: F401
        import tables  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class DlcTable:
    """A CollectedData table: ``columns`` (bodypart, coord) in file order, ``rows`` index key -> values
    (one float per column, NaN where empty), rows in file order. ``individuals``: a multi-animal table's
    animal of each column (``None`` for a single-animal table)."""

    scorer: str
    columns: list[tuple[str, str]]
    rows: dict[RowKey, np.ndarray] = field(default_factory=dict)
    index_levels: int = 1
    individuals: list[str] | None = None

    @property
    def bodyparts(self) -> list[str]:
        return list(dict.fromkeys(p for p, _ in self.columns))

    def require_single_animal(self, path: str | Path) -> None:
        """DatasetError for a multi-animal table (what point labeling and keypoint training need)."""
        if self.individuals is not None:
            who = ", ".join(dict.fromkeys(self.individuals))
            raise DatasetError(
                f"{path}: a multi-animal table (individuals {who}); keypoint labels are single-animal "
                "(boxes: detect convert --from dlc --group INDIVIDUAL/CLASS=parts)"
            )

    def column(self, part: str, coord: str, individual: str | None = None) -> int | None:
        """The index of a column, or None; ``individual`` only in a multi-animal table."""
        for j, c in enumerate(self.columns):
            if c == (part, coord) and (self.individuals is None or self.individuals[j] == individual):
                return j
        return None

    @classmethod
    def empty(cls, scorer: str, bodyparts: list[str], index_levels: int = 1) -> DlcTable:
        return cls(scorer, [(p, c) for p in bodyparts for c in ("x", "y")], {}, index_levels)

    def key(self, rel_path: str) -> RowKey:
        """The row key of an image path relative to the project root (``/`` separated)."""
        rel = rel_path.replace(os.sep, "/")
        if self.index_levels == 1:
            return (rel,)
        parts = rel.split("/")
        if len(parts) < self.index_levels:
            raise DatasetError(
                f"image {rel}: the table's rows are {self.index_levels}-part paths "
                "(labeled-data/<video>/<image>); put the frames in a labeled-data/<video>/ folder"
            )
        cut = len(parts) - self.index_levels + 1
        return ("/".join(parts[:cut]), *parts[cut:])

    @staticmethod
    def rel_path(key: RowKey) -> str:
        return "/".join(key)

    def points(self, key: RowKey) -> np.ndarray:
        """(K, 2) x, y of every body part (NaN: not labeled) of a row (all NaN when there is no row)."""
        out = np.full((len(self.bodyparts), 2), np.nan)
        vals = self.rows.get(key)
        if vals is None:
            return out
        col = {c: j for j, c in enumerate(self.columns)}
        for k, p in enumerate(self.bodyparts):
            out[k] = vals[col[(p, "x")]], vals[col[(p, "y")]]
        return out

    def set_points(self, key: RowKey, pts_k2: np.ndarray) -> None:
        """Write a row's x, y from (K, 2) points (NaN: unlabeled); other columns of the row stay."""
        pts = np.asarray(pts_k2, float)
        if pts.shape != (len(self.bodyparts), 2):
            raise DatasetError(f"points must have shape ({len(self.bodyparts)}, 2), got {pts.shape}")
        vals = self.rows.get(key)
        vals = np.full(len(self.columns), np.nan) if vals is None else vals.copy()
        col = {c: j for j, c in enumerate(self.columns)}
        for k, p in enumerate(self.bodyparts):
            vals[col[(p, "x")]], vals[col[(p, "y")]] = pts[k]
        self.rows[key] = vals


def _cell(v: float) -> str:
    return "" if math.isnan(v) else repr(float(v))


def _number(v: str) -> bool:
    try:
        float(v) if v.strip() else None
    except ValueError:
        return False
    return True


def read_dlc_csv(path: str | Path) -> DlcTable:
    """A CollectedData CSV -> :class:`DlcTable`. DatasetError names the file (and line) at fault."""
    path = Path(path)
    try:
        rows = list(csv.reader(io.StringIO(read_text(path, "DeepLabCut CSV", DatasetError), newline="")))
    except csv.Error as e:
        raise DatasetError(f"{path}: not a valid CSV: {e}") from None
    first = [r[0] if r else "" for r in rows[:4]]
    multi = first == ["scorer", "individuals", "bodyparts", "coords"]
    if not multi and first[:3] != ["scorer", "bodyparts", "coords"]:
        raise DatasetError(
            f"{path}: not a DeepLabCut CollectedData CSV "
            "(header rows scorer, [individuals,] bodyparts, coords)"
        )
    n_head = 4 if multi else 3
    head = rows[:n_head]
    sc, bp, co = head[0], head[-2], head[-1]
    if len({len(r) for r in head}) != 1:
        raise DatasetError(f"{path}: the {n_head} header rows have different lengths")
    levels = 1
    while levels < len(bp) and bp[levels] == "" and co[levels] == "":
        levels += 1
    columns = list(zip(bp[levels:], co[levels:], strict=True))
    if not columns or any(not p or not c for p, c in columns):
        raise DatasetError(
            f"{path}: line {n_head - 1}-{n_head}: a column without a body part or coordinate name"
        )
    individuals = head[1][levels:] if multi else None
    if individuals is not None and not all(individuals):
        raise DatasetError(f"{path}: line 2: a column without an individual")
    scorers = set(sc[levels:])
    if len(scorers) != 1:
        raise DatasetError(f"{path}: line 1: expected one scorer, got {sorted(scorers)}")
    table = DlcTable(scorers.pop(), columns, {}, levels, individuals)
    _check_xy(table, path)
    for n, row in enumerate(rows[n_head:], n_head + 1):
        if not row or not any(row):
            continue
        if len(row) != len(bp):
            raise DatasetError(f"{path}: line {n}: {len(row)} cells, the header has {len(bp)}")
        try:
            vals = np.array([float(v) if v.strip() else np.nan for v in row[levels:]])
        except ValueError:
            part = next(p for (p, _c), v in zip(columns, row[levels:], strict=True) if not _number(v))
            raise DatasetError(
                f"{path}: line {n}: body part {part!r}: no number in its x/y columns"
            ) from None
        key = tuple(row[:levels])
        if key in table.rows:
            raise DatasetError(f"{path}: line {n}: image {'/'.join(key)} has a second row")
        table.rows[key] = vals
    return table


def _check_xy(table: DlcTable, path: str | Path) -> None:
    """Every body part (of every individual) has an x and a y column."""
    who: list[str | None] = [None] * len(table.columns)
    if table.individuals is not None:
        who = list(table.individuals)
    for (p, _c), ind in zip(table.columns, who):
        if table.column(p, "x", ind) is None or table.column(p, "y", ind) is None:
            name = f"{ind}/{p}" if ind is not None else p
            raise DatasetError(f"{path}: body part {name!r} has no x and y columns")


def dlc_csv_text(table: DlcTable) -> str:
    """The CSV text DeepLabCut (pandas ``to_csv``) writes for this table."""
    pad = [""] * (table.index_levels - 1)
    lines = [
        ["scorer", *pad, *[table.scorer] * len(table.columns)],
        *([["individuals", *pad, *table.individuals]] if table.individuals is not None else []),
        ["bodyparts", *pad, *[p for p, _ in table.columns]],
        ["coords", *pad, *[c for _, c in table.columns]],
    ]
    lines += [[*key, *(_cell(v) for v in vals)] for key, vals in table.rows.items()]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(lines)
    return buf.getvalue()


def to_dataframe(table: DlcTable) -> Any:
    """The pandas DataFrame DeepLabCut holds (column MultiIndex scorer/bodyparts/coords)."""
    import pandas as pd

    if table.individuals is None:
        cols = pd.MultiIndex.from_tuples(
            [(table.scorer, p, c) for p, c in table.columns], names=["scorer", "bodyparts", "coords"]
        )
    else:
        cols = pd.MultiIndex.from_tuples(
            [(table.scorer, i, p, c) for i, (p, c) in zip(table.individuals, table.columns)],
            names=["scorer", "individuals", "bodyparts", "coords"],
        )
    keys = list(table.rows)
    index = pd.MultiIndex.from_tuples(keys) if table.index_levels > 1 else pd.Index([k[0] for k in keys])
    data = np.array(list(table.rows.values()), float).reshape(len(keys), len(table.columns))
    return pd.DataFrame(data, index=index, columns=cols)


def read_dlc_h5(path: str | Path) -> DlcTable:
    """A CollectedData ``.h5`` (pandas/PyTables) -> :class:`DlcTable`."""
    path = Path(path)
    if not h5_available():
        raise DatasetError(f"{path}: reading a .h5 table needs pandas and PyTables (pip install tables)")
    import pandas as pd

    try:
        df = pd.read_hdf(path)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"{path}: not a readable DeepLabCut .h5 table ({e})") from None
    names = list(df.columns.names)
    if names not in (["scorer", "bodyparts", "coords"], ["scorer", "individuals", "bodyparts", "coords"]):
        raise DatasetError(f"{path}: columns are not scorer/[individuals/]bodyparts/coords (names {names})")
    scorers = sorted(set(df.columns.get_level_values(0)))
    if len(scorers) != 1:
        raise DatasetError(f"{path}: expected one scorer, got {scorers}")
    columns = [(str(c[-2]), str(c[-1])) for c in df.columns]
    individuals = [str(c[1]) for c in df.columns] if len(names) == 4 else None
    levels = df.index.nlevels
    table = DlcTable(str(scorers[0]), columns, {}, levels, individuals)
    _check_xy(table, path)
    vals = df.to_numpy(float)
    for i, key in enumerate(df.index):
        table.rows[tuple(str(k) for k in key) if levels > 1 else (str(key),)] = vals[i].copy()
    return table


def read_dlc(path: str | Path) -> DlcTable:
    """A CollectedData ``.csv`` or ``.h5``."""
    return read_dlc_h5(path) if Path(path).suffix.lower() == ".h5" else read_dlc_csv(path)


def write_dlc(table: DlcTable, path: str | Path, h5: bool | None = None) -> list[Path]:
    """Write ``<stem>.csv`` and (``h5`` True, or None and PyTables installed) its ``<stem>.h5`` twin, as
    DeepLabCut's labeling tool does. Each file is written to a temporary name and renamed into place.
    Returns the files written."""
    base = Path(path).with_suffix("")
    base.parent.mkdir(parents=True, exist_ok=True)
    csv_path = base.with_name(base.name + ".csv")
    tmp = csv_path.with_name(csv_path.name + ".tmp")
    tmp.write_text(dlc_csv_text(table), newline="")
    tmp.replace(csv_path)
    out = [csv_path]
    if h5 is None:
        h5 = h5_available()
    if h5:
        h5_path = base.with_name(base.name + ".h5")
        tmp = h5_path.with_name(h5_path.name + ".tmp")
        # PyTables' "table" format (DeepLabCut's) cannot hold a row MultiIndex beside column levels: a
        # table with three-part row keys is stored in pandas' "fixed" format (read_hdf reads both)
        fmt = "table" if table.index_levels == 1 else "fixed"
        to_dataframe(table).to_hdf(tmp, key=H5_KEY, format=fmt, mode="w")
        tmp.replace(h5_path)
        out.append(h5_path)
    return out


def scorer_from_name(path: str | Path, default: str = "labeler") -> str:
    """``CollectedData_Pranav.csv`` -> ``Pranav``."""
    stem = Path(path).stem
    return stem.split("_", 1)[1] if stem.startswith("CollectedData_") and "_" in stem else default
