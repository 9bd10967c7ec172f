"""Input and output at the edge of the library (base layer).

- :mod:`usam.io.images`: read and validate still images and masks into ``(H, W, 3)`` uint8 RGB; encode / write them.
- :mod:`usam.io.files`: strict JSON, output-path checks, atomic writes.
"""

from __future__ import annotations

from .files import check_output_path, dumps_json, json_safe, write_files_atomic, write_text_atomic
from .images import (
    IMAGE_SUFFIXES,
    MAX_ASPECT_RATIO,
    MAX_PIXELS,
    MIN_SIDE,
    encode_image,
    read_image,
    read_mask,
    to_rgb_uint8,
    write_image,
    write_png,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_ASPECT_RATIO",
    "MAX_PIXELS",
    "MIN_SIDE",
    "check_output_path",
    "dumps_json",
    "encode_image",
    "json_safe",
    "read_image",
    "read_mask",
    "to_rgb_uint8",
    "write_files_atomic",
    "write_image",
    "write_png",
    "write_text_atomic",
]
