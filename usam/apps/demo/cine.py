"""The demo's cine / DICOM mode, independent of Gradio: open a loop (a video or a DICOM), show any frame, click
on any frame, propagate through :class:`usam.Tracker`, correct and re-propagate, and write the results (a zip of
mask PNGs, the per-frame measurement CSV of :func:`usam.measure.loop_measurements`, an overlay video).

Frames are ``(H, W, 3)`` uint8 RGB, masks ``(H, W)`` bool, clicks ``(x, y)`` in original-frame pixels.
"""

from __future__ import annotations

import io
import math
import tempfile
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ...errors import UsamError
from ...io import Frames, encode_image, read_frames, write_files_atomic, write_video
from ...measure import loop_measurements, write_measurements_csv
from ...tracker import TrackResult, Tracker
from .draw import draw_prompts, mask_overlay
from .session import MODES, NONE_CHOICE
from .upload import named_for_user, upload_path

#: Columns of the per-frame table shown in the page (a subset of the CSV's, :data:`usam.measure.LOOP_COLUMNS`).
TABLE_COLUMNS = ("frame", "confidence", "lost", "area_px", "area_mm2", "major_axis_mm", "minor_axis_mm",
                 "circumference_mm")
#: Frame rate of the overlay video when the file records none.
DEFAULT_FPS = 10.0


@dataclass
class FramePrompt:
    """The clicks on one frame (the attributes :func:`~usam.apps.demo.draw.draw_prompts` draws)."""

    points: list[list[float]] = field(default_factory=list)  # [[x, y], ...]
    labels: list[int] = field(default_factory=list)  # 1 positive, 0 negative
    box: list[float] | None = None  # [x0, y0, x1, y1]
    corner: list[float] | None = None  # first corner of a box being drawn

    @property
    def empty(self) -> bool:
        return not self.points and self.box is None


@dataclass
class CineFiles:
    """What a propagation wrote: ``masks.zip`` (``NNNN.png`` 0 / 255 per frame), ``measurements.csv``, ``overlay.mp4``."""

    masks_zip: str
    csv: str
    video: str | None


@dataclass(repr=False)
class CineSession:
    """One browser tab's loop (kept in a ``gr.State``)."""

    loop: Frames | None = None
    name: str = ""
    pixel_size: float | None = None  # mm, from the file's tags
    spacing_note: str = ""  # where the pixel size came from, or why there is none
    adapter: str | None = None  # whose decoder answers the prompts (None: the bare backbone)
    mode: str = MODES[0]
    frame: int = 0  # the frame shown
    prompts: dict[int, FramePrompt] = field(default_factory=dict)
    changed: set[int] = field(default_factory=set)  # frames whose prompt changed since the last propagation
    tracker: Tracker | None = None
    files: CineFiles | None = None
    rows: list[dict] = field(default_factory=list)  # loop_measurements of the last propagation

    def __repr__(self) -> str:
        n = 0 if self.loop is None else len(self.loop)
        return (f"CineSession(name={self.name!r}, frames={n}, frame={self.frame}, adapter={self.adapter!r}, "
                f"prompted={sorted(k for k, p in self.prompts.items() if not p.empty)})")

    @property
    def result(self) -> TrackResult | None:
        return None if self.tracker is None else self.tracker.result

    def prompt(self, k: int) -> FramePrompt:
        return self.prompts.setdefault(k, FramePrompt())


class CineView(NamedTuple):
    """What every cine handler returns."""

    session: CineSession
    image: np.ndarray | None  # (H, W, 3) uint8: the shown frame, its mask and its clicks
    frames: int  # number of frames (the slider's range is 0 .. frames - 1)
    status: str  # Markdown
    table: list[list]  # per-frame rows (TABLE_COLUMNS)
    files: CineFiles | None
    error: bool


def _cell(value):
    if isinstance(value, float):
        return None if not math.isfinite(value) else round(value, 3)
    return value


def loop_pixel_size(loop: Frames) -> tuple[float | None, str]:
    """``(pixel size in mm or None, a note saying where it came from or why there is none)``."""
    try:
        size = loop.pixel_size_mm
    except ValueError as exc:  # x and y spacing differ
        return None, f"no measurements in mm: {exc}"
    if size is None:
        return None, "the file records no pixel spacing: measurements are in pixels"
    return size, f"pixel size {size:.4g} mm from the file's tags"


def write_results(directory: Path, loop: Frames, result: TrackResult, rows: list[dict]) -> CineFiles:
    """Write the masks (zip of ``NNNN.png``), the measurement CSV and the overlay video (the mask drawn as the page
    draws it) into ``directory``."""
    width = max(4, len(str(len(loop) - 1)))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for t, mask in enumerate(result.masks_uint8()):
            zf.writestr(f"masks/{t:0{width}d}.png", encode_image(f"{t}.png", mask, ".png"))
    masks_zip = write_files_atomic([(directory / "masks.zip", buf.getvalue())])[0]
    csv = directory / "measurements.csv"
    write_measurements_csv(csv, rows)
    drawn = [mask_overlay(frame, mask) if mask.any() else frame for frame, mask in zip(loop, result.masks)]
    try:
        video = str(write_video(directory / "overlay.mp4", drawn, fps=loop.fps or DEFAULT_FPS))
    except UsamError:  # no video encoder in this build: the masks and the CSV still download
        video = None
    return CineFiles(str(masks_zip), str(csv), video)


class CineBackend:
    """The cine handlers. Shares the image mode's model, its lock (one model: its use is serialised) and workdir.

    Args:
      model: a :class:`~usam.model.UsamModel`.
      workdir: where each propagation's files are written (a fresh sub-folder each time).
      lock: the lock guarding ``model`` (default: a new one).
    """

    def __init__(self, model, workdir: Path, lock=None):
        self.model = model
        self.workdir = Path(workdir)
        self.lock = lock if lock is not None else threading.RLock()

    # ------------------------------------------------------------------ views
    def view(self, session: CineSession, status: str = "", error: bool = False) -> CineView:
        """The shown frame with its mask and clicks, the per-frame table and the files."""
        loop = session.loop
        if loop is None:
            return CineView(session, None, 0, status, [], None, error)
        k = session.frame
        result = session.result
        mask = result.masks[k] if result is not None and len(result) == len(loop) and result.tracked[k] else None
        image = draw_prompts(loop[k], session.prompts.get(k, FramePrompt()), mask)
        table = [[_cell(r[c]) for c in TABLE_COLUMNS] for r in session.rows]
        line = f"_{session.name}: frame {k} (of 0-{len(loop) - 1}); {self._frame_line(session, k)}._"
        return CineView(session, image, len(loop), f"{status}\n\n{line}" if status else line, table, session.files,
                        error)

    @staticmethod
    def _frame_line(session: CineSession, k: int) -> str:
        prompt = session.prompts.get(k)
        clicks = "" if prompt is None or prompt.empty else (
            f"prompt: {len(prompt.points)} point(s)" + (", box" if prompt.box is not None else "") + "; ")
        result = session.result
        if result is None or not result.tracked[k]:
            return clicks + "not tracked yet"
        state = "**lost**" if result.lost[k] else "tracked"
        return (f"{clicks}{state} from frame {int(result.source[k])}, confidence {float(result.confidence[k]):.2f}, "
                f"{int(result.masks[k].sum())} px")

    # ------------------------------------------------------------------ handlers
    def open(self, file, session: CineSession | None = None) -> CineView:
        """Read a loop (video, DICOM, or a still image: a loop of one); prompts and results start afresh."""
        session = session if session is not None else CineSession()
        if file is None:
            return self.view(CineSession(adapter=session.adapter, mode=session.mode), "Open a video or a DICOM file.")
        path, name = upload_path(file)
        try:
            with named_for_user(path, name):
                loop = read_frames(path)
        except UsamError as exc:
            return self.view(session, f"**Could not open `{name}`**: {exc}", error=True)
        fresh = CineSession(loop=loop, name=name, adapter=session.adapter, mode=session.mode)
        fresh.pixel_size, fresh.spacing_note = loop_pixel_size(loop)
        w, h = loop.size
        fps = f", {loop.fps:g} fps" if loop.fps else ""
        return self.view(fresh, f"Opened `{name}`: {len(loop)} frame(s) of {w}x{h}{fps}; {fresh.spacing_note}. "
                                "Click the object on any frame, then **Propagate**.")

    def show(self, session: CineSession, frame) -> CineView:
        """Show frame ``frame`` (the slider)."""
        if session.loop is not None and frame is not None:
            session.frame = int(np.clip(int(frame), 0, len(session.loop) - 1))
        return self.view(session)

    def click(self, session: CineSession, x: float, y: float, mode: str | None = None) -> CineView:
        """A click on the shown frame: a positive / negative point or a box corner of that frame's prompt."""
        if session.loop is None:
            return self.view(session, "Open a video or a DICOM file first.", error=True)
        mode = mode or session.mode
        w, h = session.loop.size
        x, y = float(np.clip(x, 0, w - 1)), float(np.clip(y, 0, h - 1))
        k = session.frame
        prompt = session.prompt(k)
        if mode == MODES[2]:
            if prompt.corner is None:
                prompt.corner = [x, y]
                return self.view(session, "Box: first corner set. Click the opposite corner.")
            (cx, cy), prompt.corner = prompt.corner, None
            box = [min(cx, x), min(cy, y), min(max(cx, x) + 1, w), min(max(cy, y) + 1, h)]
            if box[2] - box[0] < 3 or box[3] - box[1] < 3:
                return self.view(session, "The box is too small: click two opposite corners of the object.", error=True)
            prompt.box, what = box, "box"
        else:
            label = 0 if mode == MODES[1] else 1
            prompt.points.append([x, y])
            prompt.labels.append(label)
            what = f"{'positive' if label else 'negative'} point ({x:.0f}, {y:.0f})"
        session.changed.add(k)
        return self.view(session, f"Added {what} on frame {k}. **Propagate** to follow it through the loop.")

    def clear_frame(self, session: CineSession) -> CineView:
        """Remove the shown frame's prompt (the next propagation goes without it)."""
        k = session.frame
        if session.prompts.pop(k, None) is None:
            return self.view(session, f"Frame {k} has no prompt.")
        session.changed.add(k)
        return self.view(session, f"Prompt of frame {k} removed.")

    def set_adapter(self, session: CineSession, choice: str | None) -> CineView:
        """The decoder that answers the prompts (``NONE_CHOICE``: the bare backbone); results start afresh."""
        name = None if choice in (None, "", NONE_CHOICE) else str(choice)
        if name is not None and name not in self.model.adapters:
            return self.view(session, f"No adapter named `{name}` is loaded.", error=True)
        if name != session.adapter:
            session.adapter, session.tracker, session.files, session.rows = name, None, None, []
            session.changed = set(session.prompts)
        return self.view(session, f"Prompts answered by: **{name or NONE_CHOICE}**.")

    def propagate(self, session: CineSession) -> CineView:
        """Follow the prompted object through every frame; after a correction on one frame, only the frames that
        prompt owns are recomputed. Writes the masks, the CSV and the overlay video."""
        if session.loop is None:
            return self.view(session, "Open a video or a DICOM file first.", error=True)
        prompted = {k: p for k, p in session.prompts.items() if not p.empty}
        if not prompted:
            return self.view(session, "Click the object on a frame first (a point, or a box's two corners).", error=True)
        try:
            with self.lock:
                result = self._track(session, prompted)
        except UsamError as exc:
            return self.view(session, f"**Could not propagate**: {exc}", error=True)
        session.rows = loop_measurements(result, session.pixel_size)
        directory = Path(tempfile.mkdtemp(prefix="cine-", dir=self.workdir))
        session.files = write_results(directory, session.loop, result, session.rows)
        lost = np.flatnonzero(result.lost)
        lost_text = f"lost on frame(s) {', '.join(map(str, lost[:20]))}" if lost.size else "none lost"
        t = result.timing
        return self.view(session, f"Propagated: {int(result.tracked.sum())}/{len(result)} frames tracked, {lost_text} "
                                  f"({t.get('encoded', 0)} frame(s) encoded in {t.get('encode_s', 0):.1f} s, "
                                  f"{t.get('propagate_s', 0):.1f} s propagating); {session.spacing_note}.")

    def _track(self, session: CineSession, prompted: dict[int, FramePrompt]) -> TrackResult:
        """Run the tracker (under the model's lock): the changed prompts, from the one corrected frame if only one
        changed since the last propagation, else from every prompt."""
        if getattr(self.model, "active_adapter", None) != session.adapter:
            self.model.set_adapter(session.adapter)  # the image mode may have switched it
        if session.tracker is None:
            session.tracker = Tracker(self.model, adapter=session.adapter, progress=True)
            session.changed = set(session.prompts)
        tracker = session.tracker
        for k in sorted(session.changed):
            if k in prompted:
                p = prompted[k]
                tracker.add_prompt(k, points=p.points or None, labels=p.labels or None, box=p.box)
            elif k in tracker.prompts:
                tracker.remove_prompt(k)
        one = next(iter(session.changed)) if len(session.changed) == 1 else None
        start = one if tracker.result is not None and one in prompted else None
        result = tracker.propagate(session.loop.frames, start=start)
        session.changed = set()
        return result
