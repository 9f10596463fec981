"""StreamPix (Norpix) ``.seq`` video: 1024-byte header, then fixed-size frame slots, each holding the raw
image followed by its timestamp (int32 seconds, uint16 milliseconds, uint16 microseconds from version 5).

Header layout (little-endian, byte offsets): 0 magic 0xFEED; 4 name (UTF-16, 24 B); 28 version; 32 header
size; 36 description (512 B); 548 width; 552 height; 556 bit depth; 560 real bit depth; 564 image size
(bytes); 568 image format (100/101 mono, 200 BGR, 300/400...); 572 allocated frames; 576 origin; 580 true
image size (bytes per frame slot); 584 suggested frame rate (float64); 620 compression format.
Frame slots start at byte 8192 from version 5 on (the header field still says 1024), at the header size
before. Only uncompressed mono 8/16-bit and BGR 8-bit images are supported.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.errors import ImportFormatError

MAGIC = 0xFEED
HEADER_BYTES = 1024
_MONO = (100, 101)
_BGR = (200,)


@dataclass(frozen=True)
class SeqHeader:
    version: int
    header_size: int
    width: int
    height: int
    bit_depth: int
    bit_depth_real: int
    image_size: int
    image_format: int
    n_frames: int
    true_image_size: int
    frame_rate: float
    compression: int
    description: str

    @property
    def data_offset(self) -> int:
        """Byte offset of frame 0."""
        return 8192 if self.version >= 5 else self.header_size

    @property
    def channels(self) -> int:
        return 3 if self.image_format in _BGR else 1


class SeqReader:
    """Random access to the frames and timestamps of a ``.seq`` file.

    ``reader[i]`` -> (H, W) or (H, W, 3) array; ``reader.timestamps_s`` (N,) seconds since the epoch;
    ``len(reader)`` frames. The file is validated on open: a bad magic, header size, geometry or a file
    too short for its frame count raises :class:`ImportFormatError` naming the file and field/byte.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self._fh = self.path.open("rb")
        except OSError as exc:
            raise ImportFormatError(f"{self.path}: cannot open ({exc.strerror})") from None
        try:
            self.header = self._read_header()
            self._check_size()
            self.timestamps_s = self._read_timestamps()
        except BaseException:
            self._fh.close()
            raise

    def _read_header(self) -> SeqHeader:
        raw = self._fh.read(HEADER_BYTES)
        p = self.path
        if len(raw) < HEADER_BYTES:
            raise ImportFormatError(
                f"{p}: {len(raw)} bytes, shorter than the {HEADER_BYTES}-byte .seq header"
            )
        magic = struct.unpack_from("<I", raw, 0)[0]
        if magic != MAGIC:
            raise ImportFormatError(f"{p}: byte 0: magic 0x{magic:X} is not 0xFEED (not a Norpix .seq file)")
        version, header_size = struct.unpack_from("<ii", raw, 28)
        desc = raw[36:548].decode("utf-16-le", errors="replace").split("\x00")[0]
        w, h, bd, bdr, isz, fmt, nfr, _origin, tsz = struct.unpack_from("<9I", raw, 548)
        (rate,) = struct.unpack_from("<d", raw, 584)
        (compression,) = struct.unpack_from("<I", raw, 620)
        hdr = SeqHeader(version, header_size, w, h, bd, bdr, isz, fmt, nfr, tsz, rate, compression, desc)
        if header_size < HEADER_BYTES or header_size > 1 << 20:
            raise ImportFormatError(f"{p}: byte 32: header size {header_size} is not plausible")
        if compression != 0:
            raise ImportFormatError(f"{p}: byte 620: compressed .seq (format {compression}) is not supported")
        if fmt not in _MONO + _BGR:
            raise ImportFormatError(
                f"{p}: byte 568: image format {fmt} not supported (mono 100/101, BGR 200)"
            )
        if bd not in (8, 16, 24) or w == 0 or h == 0:
            raise ImportFormatError(f"{p}: bytes 548-559: bad geometry {w}x{h} at {bd} bits")
        expected = w * h * (bd // 8)
        if isz != expected:
            raise ImportFormatError(
                f"{p}: byte 564: image size {isz} B but {w}x{h}x{bd} bit needs {expected} B"
            )
        if tsz < isz + 6:
            raise ImportFormatError(
                f"{p}: byte 580: frame slot {tsz} B cannot hold a {isz} B image + timestamp"
            )
        return hdr

    def _check_size(self) -> None:
        h = self.header
        size = self.path.stat().st_size
        start = h.data_offset
        available = (
            (size - start - h.image_size - 6) // h.true_image_size + 1
            if size >= start + h.image_size + 6
            else 0
        )
        if available < h.n_frames:
            have = max(available, 0)
            raise ImportFormatError(
                f"{self.path}: header says {h.n_frames} frames but the file holds {have} (frame {have} "
                f"would need bytes {start + have * h.true_image_size}..; file is {size} B)"
            )

    def _read_timestamps(self) -> np.ndarray:
        h = self.header
        out = np.empty(h.n_frames)
        for i in range(h.n_frames):
            self._fh.seek(h.data_offset + i * h.true_image_size + h.image_size)
            raw = self._fh.read(8)
            sec, ms = struct.unpack_from("<iH", raw, 0)
            us = struct.unpack_from("<H", raw, 6)[0] if h.version >= 5 and len(raw) >= 8 else 0
            out[i] = sec + ms / 1e3 + us / 1e6
        return out

    def __len__(self) -> int:
        return self.header.n_frames

    def __getitem__(self, i: int) -> np.ndarray:
        h = self.header
        if not -len(self) <= i < len(self):
            raise IndexError(f"{self.path}: frame {i} out of range (0..{len(self) - 1})")
        i %= len(self)
        self._fh.seek(h.data_offset + i * h.true_image_size)
        buf = self._fh.read(h.image_size)
        dtype = np.uint16 if h.bit_depth_real > 8 and h.channels == 1 else np.uint8
        img = np.frombuffer(buf, dtype=dtype)
        return img.reshape(h.height, h.width, 3) if h.channels == 3 else img.reshape(h.height, h.width)

    def __iter__(self):  # type: ignore[no-untyped-def]
        for i in range(len(self)):
            yield self[i]

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> SeqReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_seq(path: str | Path) -> tuple[np.ndarray, np.ndarray, SeqHeader]:
    """All frames (N, H, W[, 3]), timestamps (N,) s, and the header of a ``.seq`` file."""
    with SeqReader(path) as r:
        frames = (
            np.stack([r[i] for i in range(len(r))])
            if len(r)
            else np.zeros((0, r.header.height, r.header.width))
        )
        return frames, r.timestamps_s.copy(), r.header
