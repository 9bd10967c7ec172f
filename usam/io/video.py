"""Reading and writing video files (PyAV: FFmpeg's libraries in a wheel, no system FFmpeg needed).

:func:`read_video` decodes every frame of the first video stream to ``(H, W, 3)`` uint8 RGB with its frame rate;
:func:`write_video` encodes frames to MP4 (H.264, else MPEG-4 part 2), MOV / MKV (same) or AVI (Motion JPEG),
atomically. Every read failure raises :class:`~usam.errors.InputImageError` with one line naming the file.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import InputImageError, OutputError
from .files import check_output_path
from .images import MAX_PIXELS, to_rgb_uint8
from .loop import MAX_LOOP_BYTES, Frames

#: Suffixes read as video files.
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".wmv", ".mpg", ".mpeg", ".ogv", ".gif")
#: Suffixes :func:`write_video` writes, with the codecs tried in order.
WRITE_CODECS = {".mp4": ("libx264", "mpeg4"), ".mov": ("libx264", "mpeg4"), ".mkv": ("libx264", "mpeg4"), ".avi": ("mjpeg",)}


def _name(path) -> str:
    return f"video file {str(path)!r}"


def _av_error(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300]


def read_video(path: str | os.PathLike) -> Frames:
    """Read every frame of a video file.

    Returns:
      :class:`~usam.io.Frames`: ``frames`` ``(N, H, W, 3)`` uint8 RGB, ``fps`` from the stream (``None`` when
      the container has none), ``spacing_mm`` ``None`` (videos carry no pixel spacing), ``source`` the path.

    Raises:
      InputImageError: missing, empty, not a video, corrupt / truncated, no video stream, no decodable frame,
        frames too large or the loop over :data:`~usam.io.loop.MAX_LOOP_BYTES`.
    """
    import av

    p = Path(path)
    if not p.exists():
        raise InputImageError(f"{_name(p)} does not exist: check the path")
    if p.is_dir():
        raise InputImageError(f"video path {str(p)!r} is a directory, not a file")
    if p.stat().st_size == 0:
        raise InputImageError(f"{_name(p)} is empty (0 bytes)")
    try:
        container = av.open(str(p), mode="r")
    except Exception as exc:  # av.error.FFmpegError and friends
        raise InputImageError(f"{_name(p)} cannot be opened as a video ({_av_error(exc)}): it is corrupt, truncated or not a video") from exc
    frames: list[np.ndarray] = []
    try:
        if not container.streams.video:
            raise InputImageError(f"{_name(p)} has no video stream")
        stream = container.streams.video[0]
        w, h = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
        if w * h > MAX_PIXELS:
            raise InputImageError(f"{_name(p)} is {w}x{h} pixels, over the {MAX_PIXELS / 1e6:.0f} MP limit: downscale it first")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else None
        total = 0
        try:
            for frame in container.decode(stream):
                rgb = frame.to_ndarray(format="rgb24")
                total += rgb.nbytes
                if total > MAX_LOOP_BYTES:
                    raise InputImageError(
                        f"{_name(p)} decodes to more than {MAX_LOOP_BYTES / 2**30:.0f} GiB of frames (over {len(frames)} frames "
                        f"of {rgb.shape[1]}x{rgb.shape[0]}): trim or downscale the loop first"
                    )
                if frames and rgb.shape != frames[0].shape:
                    raise InputImageError(
                        f"{_name(p)} changes frame size at frame {len(frames)} ({frames[0].shape[1]}x{frames[0].shape[0]} -> "
                        f"{rgb.shape[1]}x{rgb.shape[0]}): re-encode it at one size"
                    )
                frames.append(to_rgb_uint8(rgb, name=f"{p} frame {len(frames)}"))
        except InputImageError:
            raise
        except Exception as exc:
            raise InputImageError(
                f"{_name(p)} is corrupt or truncated: decoding failed after {len(frames)} frames ({_av_error(exc)})"
            ) from exc
    finally:
        container.close()
    if not frames:
        raise InputImageError(f"{_name(p)} has no decodable frames: it is corrupt, truncated or empty")
    return Frames(frames=np.stack(frames), spacing_mm=None, fps=fps if fps and fps > 0 else None, source=str(p))


def _even(frame: np.ndarray) -> np.ndarray:
    """Pad ``(H, W, 3)`` by one replicated row / column where a side is odd (4:2:0 chroma needs even sides)."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def _pick_codec(suffix: str) -> str:
    import av

    for name in WRITE_CODECS[suffix]:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:
            continue
    raise OutputError(f"no encoder for {suffix} video is available in this PyAV build (tried {', '.join(WRITE_CODECS[suffix])})")


def write_video(path: str | os.PathLike, frames, fps: float = 10.0, crf: int = 18) -> Path:
    """Encode frames to a video file atomically (temp file in the same folder, then rename).

    Args:
      path: ``.mp4`` / ``.mov`` / ``.mkv`` (H.264, yuv420p, where the encoder exists, else MPEG-4 part 2) or
        ``.avi`` (Motion JPEG, full-range 4:2:0).
      frames: sequence or ``(N, H, W[, 3])`` array of uint8 frames, all one size. H.264 / MPEG-4 / MJPEG 4:2:0
        need even sides: an odd side is padded by one replicated row / column (the video is then one pixel
        larger there).
      fps: frames per second (> 0).
      crf: H.264 constant rate factor (0 lossless-ish .. 51; 18 is visually lossless).

    Raises:
      OutputError: an unsupported suffix, a folder / unwritable path, no frames, frames of different sizes, a bad fps,
        or an encoder failure (nothing is left at ``path``).
    """
    import av

    p = check_output_path(path, "video file", tuple(WRITE_CODECS))
    suffix = p.suffix.lower()
    if not (isinstance(fps, (int, float)) and np.isfinite(fps) and fps > 0):
        raise OutputError(f"video file {str(p)!r}: fps must be a positive number, got {fps!r}")
    frames = list(frames)
    if not frames:
        raise OutputError(f"video file {str(p)!r}: no frames to write")
    frames = [_even(to_rgb_uint8(f, name=f"frame {i} for {p}")) for i, f in enumerate(frames)]
    h, w = frames[0].shape[:2]
    for i, f in enumerate(frames):
        if f.shape[:2] != (h, w):
            raise OutputError(f"video file {str(p)!r}: frame {i} is {f.shape[1]}x{f.shape[0]}, frame 0 is {w}x{h}; all frames must be one size")
    codec = _pick_codec(suffix)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.stem}.tmp{os.getpid()}{suffix}")
    try:
        fmt = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}[suffix]
        with av.open(str(tmp), mode="w", format=fmt) as container:
            stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height = w, h
            stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
            if codec == "libx264":
                stream.options = {"crf": str(int(crf))}
            else:  # MPEG-4 part 2 / MJPEG: high quality (quantiser 1..3) at a generous bit rate
                stream.bit_rate = int(max(4e6, w * h * fps * 2))
                stream.options = {"qmin": "1", "qmax": "3"}
            for f in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, p)
    except OutputError:
        raise
    except Exception as exc:
        raise OutputError(f"could not write video file {str(p)!r} with {codec} ({_av_error(exc)})") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return p
