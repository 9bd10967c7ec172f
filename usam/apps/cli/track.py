"""``usam track LOOP --frame K --point X Y ... --out DIR``: follow a prompted object through a loop.

LOOP is a video file, a DICOM (multi-frame or single) or a folder of frame images taken in name order. Writes::

    DIR/masks/NNNN.png        one 0/255 mask per frame, in frame order (empty where the object is not tracked)
    DIR/overlay.mp4           the loop with the tracked mask drawn on it (``--no-video``: skipped)
    DIR/measurements.csv      per frame: confidence, lost flag, area, ellipse axes and circumference (px and mm)
    DIR/track.json            what was run: loop, prompts, pixel spacing and where it came from, summary, timing

The output folder is replaced as a whole (staged beside it, then renamed): it must be new, empty, or an earlier
``usam track`` output (:func:`is_track_output`: only the files above, ``track.json`` written by usam track); any
other folder, one holding the loop, or one that cannot be written is refused before any work.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from .common import add_model_args, build_model, log, positive_float

#: The file that marks a folder as a ``usam track`` output (and so safe to replace).
MARKER = "track.json"
#: Every entry a ``usam track`` output folder may hold.
OUTPUT_FILES = ("masks", "overlay.mp4", "measurements.csv", MARKER)


def is_track_output(folder: Path) -> bool:
    """Whether ``folder`` holds nothing but an earlier ``usam track`` output: :data:`OUTPUT_FILES` only, ``masks/``
    only frame PNGs (``NNNN.png``), and a ``track.json`` that usam track wrote (``{"usam": "track", ...}``)."""
    import json

    try:
        entries = {p.name: p for p in folder.iterdir()}
        marker = json.loads((folder / MARKER).read_text()) if (folder / MARKER).is_file() else None
        masks = entries.get("masks")
        frames_only = masks is None or (masks.is_dir() and not masks.is_symlink() and all(
            m.is_file() and not m.is_symlink() and m.suffix == ".png" and m.stem.isdigit() for m in masks.iterdir()))
    except (OSError, ValueError):
        return False
    return (isinstance(marker, dict) and marker.get("usam") == "track" and set(entries) <= set(OUTPUT_FILES)
            and frames_only and all(not p.is_symlink() for p in entries.values()))


def check_out_dir(out: str | os.PathLike, loop: str | os.PathLike | None = None) -> Path:
    """``out`` as a folder ``usam track`` may replace: new, empty, or an earlier track output
    (:func:`is_track_output`), not holding the ``loop`` being read, writable. Raises OutputError."""
    from ...errors import OutputError
    from ...io import write_problem

    p = Path(out)
    if p.is_symlink():
        raise OutputError(f"--out {str(p)!r} is a symbolic link: give a real folder")
    if p.exists() and not p.is_dir():
        raise OutputError(f"--out {str(p)!r} is a file: give a folder for the masks, video and CSV")
    if loop is not None and Path(loop).resolve().is_relative_to(p.resolve()):
        raise OutputError(f"--out {str(p)!r} holds the loop {str(loop)!r} being tracked: give a new folder")
    if p.is_dir() and any(p.iterdir()) and not is_track_output(p):
        foreign = sorted(n.name for n in p.iterdir() if n.name not in OUTPUT_FILES)[:3]
        raise OutputError(f"--out {str(p)!r} is a folder with files usam track did not write"
                          f"{' (' + ', '.join(foreign) + ')' if foreign else ''}: give a new or empty folder; "
                          "usam track replaces only its own earlier output")
    if p.exists() and Path.cwd().resolve().is_relative_to(p.resolve()):
        raise OutputError(f"--out {str(p)!r} contains the current folder: give a new folder")
    problem = write_problem(p.absolute().parent)  # the output is staged beside the folder, in its parent
    if problem:
        raise OutputError(f"--out {str(p)!r} cannot be written: {problem}")
    return p


def _prompt(args, n_frames: int, source: str) -> dict:
    """The tracker prompt the flags describe (checked against the loop's length)."""
    from ...errors import InputImageError, PromptError

    if not (args.point or args.neg or args.box or args.auto):
        raise PromptError("give a prompt for --frame: --point X Y (repeatable), --neg X Y, --box X0 Y0 X1 Y1 or --auto")
    if not 0 <= args.frame < n_frames:
        raise InputImageError(f"--frame {args.frame} is out of range: {source!r} has {n_frames} frame(s), numbered 0-{n_frames - 1}")
    if args.auto:
        if args.point or args.neg or args.box:
            raise PromptError("--auto stands alone: do not combine it with --point / --neg / --box")
        return {"auto": args.auto}
    points = [*(args.point or []), *(args.neg or [])]
    prompt: dict = {}
    if points:
        prompt["points"] = points
        prompt["labels"] = [1] * len(args.point or []) + [0] * len(args.neg or [])
    if args.box:
        prompt["box"] = list(args.box)
    return prompt


def _pixel_size(args, loop) -> tuple[float | None, str]:
    """Pixel size in mm and where it came from: ``--pixel-size``, the file's tags, or none (pixels)."""
    from ...errors import InputImageError
    from ...io import isotropic_pixel_size

    if args.pixel_size is not None:
        return float(args.pixel_size), "--pixel-size"
    if loop.spacing_mm is None:
        return None, "none"
    try:
        return isotropic_pixel_size(loop.spacing_mm), "tags"
    except ValueError as exc:
        raise InputImageError(f"{loop.source!r}: {exc}: give --pixel-size MM to measure anyway") from exc


def _write_outputs(stage: Path, loop, result, rows: list[dict], summary: dict, video: bool) -> None:
    import numpy as np

    from ...io import dumps_json, write_png, write_text_atomic, write_video
    from ...measure import write_measurements_csv
    from ...ops.overlay import overlay_mask

    width = max(4, len(str(len(loop) - 1)))
    for t, mask in enumerate(result.masks_uint8()):
        write_png(stage / "masks" / f"{t:0{width}d}.png", mask)
    write_measurements_csv(stage / "measurements.csv", rows)
    if video:
        drawn = [overlay_mask(frame, mask) if mask.any() else np.asarray(frame) for frame, mask in zip(loop, result.masks)]
        write_video(stage / "overlay.mp4", drawn, fps=loop.fps or 10.0)
    write_text_atomic(stage / MARKER, dumps_json(summary, indent=2) + "\n")


def _replace_folder(stage: Path, out: Path) -> None:
    """Put the staged folder at ``out``; an earlier output (or an empty folder) there is removed after."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(stage, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _summary(args, loop, result, prompt: dict, pixel_size, spacing_from: str, rows: list[dict], seconds: float) -> dict:
    import numpy as np

    conf = result.confidence[result.tracked]
    return {
        "usam": "track", "loop": str(args.loop), "frames": len(loop), "size": list(loop.size), "fps": loop.fps,
        "prompt_frame": args.frame, "prompt": prompt, "adapter": args.adapter, "direction": args.direction,
        "pixel_size_mm": pixel_size, "pixel_size_from": spacing_from,
        "tracked_frames": int(result.tracked.sum()), "lost_frames": [int(t) for t in np.flatnonzero(result.lost)],
        "mean_confidence": float(conf.mean()) if conf.size else None,
        "timing": {**result.timing, "total_s": seconds}, "measured_frames": sum(r["area_px"] > 0 for r in rows),
    }


def cmd_track(args) -> int:
    from ...io import read_frames
    from ...measure import loop_measurements
    from ...tracker import Tracker

    out = check_out_dir(args.out, args.loop)
    loop = read_frames(args.loop)  # the input is read (and refused) before any model is built
    prompt = _prompt(args, len(loop), str(args.loop))
    pixel_size, spacing_from = _pixel_size(args, loop)
    model = build_model(args)
    tracker = Tracker(model, adapter=args.adapter, progress=not args.quiet)
    tracker.add_prompt(args.frame, **prompt)
    t0 = time.perf_counter()
    result = tracker.propagate(loop.frames, direction=args.direction)
    seconds = time.perf_counter() - t0
    rows = loop_measurements(result, pixel_size)
    summary = _summary(args, loop, result, prompt, pixel_size, spacing_from, rows, seconds)
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.resolve().parent))
    umask = os.umask(0)
    os.umask(umask)
    stage.chmod(0o777 & ~umask)  # mkdtemp makes it private; the output folder gets the user's usual mode
    try:
        _write_outputs(stage, loop, result, rows, summary, video=not args.no_video)
        _replace_folder(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    units = f"mm (pixel size {pixel_size:.4g} mm from {spacing_from})" if pixel_size else \
        "pixels: no pixel spacing in the file; give --pixel-size MM for mm"
    log(f"usam track: {summary['tracked_frames']}/{len(loop)} frames tracked in {seconds:.1f} s "
        f"({len(loop) / max(seconds, 1e-9):.2f} frames/s), {len(summary['lost_frames'])} flagged lost; "
        f"measurements in {units} -> {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("track", help="follow a clicked object through a loop (video, DICOM or folder of frames)",
                       description="Prompt one frame of LOOP (clicks, a box, or an adapter's automatic mask) and follow "
                                   "the object forwards and backwards through every frame. Writes DIR/masks/NNNN.png, "
                                   "DIR/overlay.mp4, DIR/measurements.csv (area, axes, circumference in mm when the "
                                   "pixel spacing is known) and DIR/track.json.")
    p.add_argument("loop", help="a video file (.mp4, .avi, ...), a DICOM file or a folder of frame images (name order)")
    p.add_argument("--frame", type=int, default=0, help="the frame the prompt is on (0-based, default 0)")
    p.add_argument("--point", nargs=2, type=float, action="append", metavar=("X", "Y"), help="positive click (repeatable)")
    p.add_argument("--neg", nargs=2, type=float, action="append", metavar=("X", "Y"), help="negative click (repeatable)")
    p.add_argument("--box", nargs=4, type=float, metavar=("X0", "Y0", "X1", "Y1"), help="box prompt in pixels")
    p.add_argument("--auto", nargs="?", const=True, default=None, metavar="TASK",
                   help="prompt with the adapter's automatic mask of --frame (its segmentation task, or TASK)")
    p.add_argument("--adapter", default=None, help="name of a loaded adapter whose decoder answers the prompts")
    p.add_argument("--direction", default="both", choices=["both", "forward", "backward"],
                   help="propagate from --frame in both directions (default) or one")
    p.add_argument("--pixel-size", type=positive_float, default=None, metavar="MM",
                   help="pixel size in mm (default: from the DICOM's tags; none -> measurements in pixels)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (new, empty, or an earlier usam track output)")
    p.add_argument("--no-video", action="store_true", help="do not write overlay.mp4")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_args(p, adapters=True, device=True)
    p.set_defaults(func=cmd_track)
