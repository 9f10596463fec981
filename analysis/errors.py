"""Errors raised by analysis code (no dependency on rig/)."""

from __future__ import annotations


class AnalysisError(ValueError):
    """Bad input to an analysis function; the message names the file, item or shape at fault."""


class CalibrationFileError(AnalysisError):
    """A calibration file is missing, malformed, or lacks a named camera."""
