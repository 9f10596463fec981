"""The error hierarchy. Every user-facing error names the file, field, port or byte at fault.

`UserError` subclasses are mistakes a user can fix (a bad config key, a missing calibration, an
unreadable video, a full disk): the CLI prints their message on one line and exits non-zero,
without a traceback. ``rig.cli.main`` treats ``analysis``' ``AnalysisError`` and ``detection``'s
``DetectionError`` (those packages do not import ``rig``) and an ``OSError`` naming its file the same
way. Anything else is a bug: its traceback is shown and saved, and the CLI says where.

Text files a user gives are read with ``analysis.textfile.read_text`` / ``read_yaml``, passing the
error class to raise, so that a missing file, a folder or a byte that is not UTF-8 is one line naming
the file (and the byte). ``tests/bad_inputs/`` holds the corpus of broken inputs and their messages.
"""

from __future__ import annotations


class RigError(Exception):
    """Base class for every error this package raises on purpose."""


class UserError(RigError):
    """A problem the user can fix; printed as one line, exit code 2."""

    exit_code = 2


class ConfigError(UserError):
    """A config file is missing, unreadable, or fails validation."""


class CalibrationError(UserError):
    """A calibration file is missing, malformed, or lacks a camera the config names."""


class StorageError(UserError):
    """The output directory is not writable or the disk is full."""


class InputError(UserError):
    """An input file (video, keypoints, session folder) cannot be read."""


class DeviceError(UserError):
    """Hardware misbehaved or is missing: a camera, the Arduino, a GPU. The message names the device
    (and the feature); the fix is at the rig (a cable, a serial number, a setting), so no traceback."""

    exit_code = 3


class AcquisitionTimeout(DeviceError):
    """No frame (or trigger) arrived within the timeout."""


class ProtocolError(RigError):
    """A message on a wire (serial or bus) broke the protocol."""


class SchemaMismatch(ProtocolError, UserError):
    """A bus peer speaks a different message schema version."""
