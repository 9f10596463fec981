"""Errors raised by analysis code (no dependency on rig/)."""

from __future__ import annotations


class AnalysisError(ValueError):
    """Bad input to an analysis function; the message names the file, item or shape at fault."""


class CalibrationFileError(AnalysisError):
    """A calibration file is missing, malformed, or lacks a named camera."""


class CalibrationFailed(AnalysisError):
    """Calibration could not be computed (too few valid board views, cameras without shared views...)."""


class ImportFormatError(AnalysisError):
    """A file written by another tool is malformed; the message names the file and the item."""
