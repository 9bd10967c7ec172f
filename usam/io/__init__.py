"""Input and output at the edge of the library (base layer).

- :mod:`usam.io.images`: read and validate still images and masks into ``(H, W, 3)`` uint8 RGB; encode / write them.
- :mod:`usam.io.files`: strict JSON, output-path checks, atomic writes.
- :mod:`usam.io.frames`: :func:`read_image` reads a still image or one frame of a DICOM / video;
  :func:`read_frames` reads a loop (video, DICOM, folder of frames) as :class:`Frames`;
  :func:`read_spacing` reads pixel spacing in mm from DICOM tags. :mod:`usam.io.dicom` and :mod:`usam.io.video`
  do the decoding; :func:`write_video` encodes an MP4 / AVI.
"""

from __future__ import annotations

from .dicom import DICOM_SUFFIXES, is_dicom
from .files import (
    check_output_path,
    dumps_json,
    json_safe,
    write_files_atomic,
    write_problem,
    write_text_atomic,
)
from .frames import read_folder, read_frames, read_image, read_spacing
from .images import (
    IMAGE_SUFFIXES,
    MAX_ASPECT_RATIO,
    MAX_PIXELS,
    MIN_SIDE,
    encode_image,
    read_mask,
    to_rgb_uint8,
    write_image,
    write_png,
)
from .loop import Frames, isotropic_pixel_size
from .video import VIDEO_SUFFIXES, read_video, write_video

__all__ = [
    "DICOM_SUFFIXES",
    "IMAGE_SUFFIXES",
    "MAX_ASPECT_RATIO",
    "MAX_PIXELS",
    "MIN_SIDE",
    "VIDEO_SUFFIXES",
    "Frames",
    "check_output_path",
    "dumps_json",
    "encode_image",
    "is_dicom",
    "isotropic_pixel_size",
    "json_safe",
    "read_folder",
    "read_frames",
    "read_image",
    "read_mask",
    "read_spacing",
    "read_video",
    "to_rgb_uint8",
    "write_files_atomic",
    "write_image",
    "write_png",
    "write_text_atomic",
    "write_video",
]
