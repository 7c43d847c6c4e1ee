"""Say what is wrong with a damaged dataset file, in words a user can act on.

torchvision's parsers fail on damaged files with whatever their code hits first (`ValueError:
invalid literal for int()`, a bare `AssertionError`, a tensor size mismatch); these checks name
the file and the damage instead.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

# IDX type codes (the third magic byte) and their item sizes, as in the MNIST format's spec
IDX_ITEM_SIZES = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}


def idx_file_problem(path: Path) -> str | None:
    """Why `path` is not a complete IDX file (MNIST's format), or None when it looks whole."""
    data_size = path.stat().st_size
    with path.open("rb") as f:
        magic = f.read(4)
        if len(magic) < 4:
            return f"is cut inside its header ({data_size} bytes)"
        zero, code, ndim = magic[:2], magic[2], magic[3]
        if zero != b"\0\0" or code not in IDX_ITEM_SIZES or not 1 <= ndim <= 4:
            return "is not an IDX file (its first bytes are not an IDX magic number)"
        header = f.read(4 * ndim)
    if len(header) < 4 * ndim:
        return f"is cut inside its header ({data_size} bytes)"
    shape = struct.unpack(f">{ndim}I", header)
    expected = 4 + 4 * ndim + math.prod(shape) * IDX_ITEM_SIZES[code]
    if data_size != expected:
        return (
            f"has {data_size} bytes but its header ({'x'.join(map(str, shape))}) needs "
            f"{expected}: {'truncated' if data_size < expected else 'extra bytes'}"
        )
    return None


def file_problem(path: Path) -> str | None:
    """Why a dataset file is damaged (empty; for IDX files cut or not IDX), or None."""
    if not path.is_file():
        return None  # missing files have their own message
    if path.stat().st_size == 0:
        return "is empty (an interrupted copy or download?)"
    if path.name.endswith("-ubyte"):
        return idx_file_problem(path)
    return None
