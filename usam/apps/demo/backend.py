"""The demo's logic, independent of Gradio: :class:`DemoBackend` holds the model and answers every event of
the page with a :class:`~usam.apps.demo.session.View` (plain values, callable without a browser).

Each image is encoded once (the model's embedding cache): later clicks, undo, candidate choice and adapter
heads reuse the embedding. No click is lost: :meth:`DemoBackend.record` records a click at once and
:meth:`DemoBackend.flush` segments every recorded click in order, coalesced, giving the mask the same clicks
answered one by one give.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ...adapters.config import QUALITY_KINDS
from ...backbones import BOX_ONLY_BACKBONES
from ...errors import InputImageError, PromptError, UsamError
from ...io import to_rgb_uint8
from ...predictor import Predictor
from .api import bare_points_error, parse_prompts, predict_kwargs, prompt_values, request_adapter
from .auto import AutoView, auto_view
from .draw import draw_measurement, draw_pending, draw_prompts, mask_overlay, mask_png, measure_mask, thumbnail
from .session import (
    BARE_POINTS_MESSAGE,
    MAX_HISTORY,
    MEASURE_KINDS,
    MODES,
    NONE_CHOICE,
    Session,
    View,
)
from .upload import example_list, example_pixel_size, read_upload, upload_path

#: The demo's one logger (the backend and the page's handlers).
log = logging.getLogger("usam.apps.demo")


def readable(exc: BaseException) -> str:
    msg = str(exc).strip() or type(exc).__name__
    return msg if isinstance(exc, UsamError) else f"{type(exc).__name__}: {msg}"


def _locked(method):
    """Run a handler under the backend's lock: sessions share one model, and events of one tab may overlap."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self.lock:
            return method(self, *args, **kwargs)

    return wrapper


def _finite_number(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def _finite_positive(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) and v > 0 else None


class DemoBackend:
    """The demo's logic, independent of Gradio: every handler takes and returns plain values.

    Args:
      model: a :class:`~usam.model.UsamModel`; its loaded adapters are offered in the dropdown.
      examples: image paths or a folder (default: the bundled ``demo/examples``; ``[]`` for none).
      workdir: where mask PNGs are written (default: a fresh temporary folder).
    """

    def __init__(self, model, examples=None, workdir: str | os.PathLike | None = None):
        self.model = model
        self.predictor = Predictor(model)
        self.examples = [p for p in example_list(examples) if p.is_file()]
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="usam-demo-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()  # one model, one predictor: serialise their use across sessions
        # guards Session.pending / applied / shown: record() appends clicks without waiting for self.lock
        self.guard = threading.Lock()

    # ------------------------------------------------------------------ adapters
    @property
    def adapter_names(self) -> list[str]:
        return list(getattr(self.model, "adapters", {}) or {})

    @property
    def adapter_choices(self) -> list[str]:
        return [NONE_CHOICE, *self.adapter_names]

    def default_adapter(self) -> str | None:
        """The first adapter loaded (``usam demo --adapters A B C`` -> ``A``), or ``None`` without adapters.

        Not the model's active adapter: loading makes the *last* one active, which would greet a breast
        image with the intrapartum adapter's pubic-symphysis segmentation.
        """
        return self.adapter_names[0] if self.adapter_names else None

    @property
    def bare_needs_box(self) -> bool:
        """The bare backbone answers boxes only (LiteMedSAM was trained on boxes)."""
        return getattr(getattr(self.model, "backbone", None), "name", None) in BOX_ONLY_BACKBONES

    def _segmentation_names(self, adapter: str | None) -> list[str]:
        """Task ids and class names of ``adapter``'s segmentation tasks (lower case)."""
        if adapter is None or adapter not in self.adapter_names:
            return []
        tasks = getattr(self.model.adapters[adapter], "tasks", None)
        names = []
        for tid, spec in (tasks if isinstance(tasks, dict) else {}).items():
            if getattr(spec, "kind", None) == "segmentation":
                names += [str(tid).lower()] + [str(c).lower() for c in (getattr(spec, "class_names", None) or [])]
        return names

    def measure_kind_for(self, adapter: str | None, current: str = MEASURE_KINDS[0]) -> str:
        """How to measure the interactive mask with ``adapter``: a head (HC / BPD / OFD) when the adapter
        segments fetal heads (``fetal_head``, ``intrapartum``), a lesion (long / short axis) otherwise
        (``breast``); ``current`` for the bare backbone or an adapter without segmentation."""
        names = self._segmentation_names(adapter)
        if not names:
            return current
        return MEASURE_KINDS[0] if any("head" in n for n in names) else MEASURE_KINDS[1]

    def new_session(self) -> Session:
        """A fresh tab: the default adapter; box mode on the bare backbone (it was trained on boxes), else clicks."""
        adapter = self.default_adapter()
        return Session(adapter=adapter, mode=MODES[0] if adapter or not self.bare_needs_box else MODES[2],
                       measure_kind=self.measure_kind_for(adapter))

    def _needs_box(self, adapter: str | None, points, box) -> bool:
        """Point prompts without a box on a box-only bare backbone."""
        return adapter is None and self.bare_needs_box and bool(points) and box is None

    def _activate(self, name: str | None) -> None:
        """Make ``name`` the model's active adapter (other sessions may have switched it)."""
        if getattr(self.model, "active_adapter", None) != name:
            self.model.set_adapter(name)

    # ------------------------------------------------------------------ model calls
    def _encode(self, session: Session) -> float:
        with self.lock:
            self._activate(session.adapter)
            before = self.model.encoder_calls
            t0 = time.perf_counter()
            self.predictor.set_image(session.image)
            return time.perf_counter() - t0 if self.model.encoder_calls > before else 0.0

    def _predict(self, session: Session, mask_input: np.ndarray | None) -> None:
        """Run the prompt decoder on the session's prompts; store candidates, pick the best."""
        if not session.has_prompts:
            session.clear_result()
            return
        if self._needs_box(session.adapter, session.points, session.box):
            raise PromptError(BARE_POINTS_MESSAGE + ".")
        kwargs: dict[str, Any] = {"multimask_output": session.multimask_now}
        if session.points:
            kwargs["point_coords"] = np.asarray(session.points, dtype=np.float64)
            kwargs["point_labels"] = np.asarray(session.labels, dtype=np.int64)
        if session.box is not None:
            kwargs["box"] = np.asarray(session.box, dtype=np.float64)
        if mask_input is not None:
            kwargs["mask_input"] = mask_input.astype(np.float32).reshape(1, 1, *mask_input.shape[-2:])
        with self.lock:
            self._activate(session.adapter)
            self.predictor.set_image(session.image)  # cached by content: no encoder run
            masks, scores, lowres = self.predictor.predict(**kwargs)
            session.quality = self.predictor.quality(scores, lowres)
            session.quality_kind = getattr(self.model.prompt_decoder(), "quality", "predicted")
        session.mask_input = None if mask_input is None else mask_input.astype(np.float32)
        session.masks, session.scores, session.lowres = masks.astype(bool), scores.astype(np.float32), lowres.astype(np.float32)
        session.selected = int(np.argmax(session.scores))

    def _run_heads(self, session: Session) -> None:
        """Adapter heads on the current image, cached in the session per (adapter, image)."""
        name = session.adapter
        if session.image is None or name is None:
            session.auto = None
            return
        if session.auto is not None and session.auto[0] == name:
            return
        try:
            with self.lock:
                self._activate(name)
                pred = self.model.predict(session.image, adapter=name)
            session.auto = (name, pred, "")
        except Exception as exc:  # heads still being built, adapter without heads, ...
            session.auto = (name, None, readable(exc))

    # ------------------------------------------------------------------ handlers
    def example_pixel_size(self, path: Path, name: str) -> float | None:
        """The pixel size (mm) of a bundled example (same name and bytes), else ``None``."""
        return example_pixel_size(self.examples, path, name)

    @_locked
    def reset(self, session: Session | None = None) -> View:
        """The upload was cleared (x): forget the image, prompts, masks, heads and pixel size.

        The tab's choices (adapter, click mode, multimask, measurement kind) stay.
        """
        session = session if session is not None else self.new_session()
        self._drop_pending(session)
        session.image, session.name, session.notes, session.auto, session.pixel_size = None, "", [], None, None
        session.clear_prompts()
        return self.render(session, "Upload an image or pick an example.")

    @_locked
    def load(self, file, session: Session | None = None, pixel_size=None) -> View:
        """Upload / example: read and check the file, encode it once, reset the prompts.

        ``file=None`` (the upload was cleared) is :meth:`reset`. The pixel size becomes ``pixel_size`` when
        given, else a bundled example's own, else empty: a new image never inherits the previous one's.
        """
        session = session if session is not None else self.new_session()
        if file is None:
            return self.reset(session)
        path, name = upload_path(file)
        try:
            image, notes = read_upload(path, name)
        except UsamError as exc:
            return self.render(session, f"**Could not load `{name}`**: {exc}", error=True)
        except Exception as exc:
            return self.render(session, f"**Could not load `{name}`**: {readable(exc)}", error=True)
        self._drop_pending(session)  # clicks made on the previous image
        session.image, session.name, session.notes, session.auto = image, name, notes, None
        session.pixel_size = _finite_positive(pixel_size) if pixel_size is not None else self.example_pixel_size(path, name)
        session.clear_prompts()
        try:
            seconds = self._encode(session)
        except Exception as exc:
            session.image = None
            return self.render(session, f"**Could not encode `{name}`**: {readable(exc)}", error=True)
        self._run_heads(session)
        h, w = image.shape[:2]
        enc = f"encoded in {seconds:.1f} s" if seconds else "embedding reused from the cache"
        note = "".join(f"\n\nNote: {n}" for n in notes)
        return self.render(session, f"Loaded `{name}` ({w}x{h}), {enc}. Click the image to prompt.{note}")

    # ------------------------------------------------------------------ clicks: record now, segment later
    # A click is recorded at once (``record``: no model, no lock held by a segmentation) and segmented by
    # ``flush``, which applies every recorded click in order, exactly as if each had been answered before the
    # next (same points, same logits fed back), and renders once. The page runs ``record`` for each click
    # and ``flush`` after it, coalesced: a flush asked for while one runs runs once when it ends, so no click
    # is lost however fast they come, and only the last render waits.
    @_locked
    def click(self, session: Session, x: float, y: float, mode: str | None = None) -> View:
        """A click at pixel ``(x, y)``: add a point (positive / negative) or a box corner, then predict."""
        _, status, error = self.record(session, x, y, mode)
        if error:
            return self.render(session, status, error=True)
        return self.flush(session)

    def record(self, session: Session, x: float, y: float, mode: str | None = None) -> tuple[np.ndarray | None, str, bool]:
        """Record a click without segmenting it; returns ``(overlay, status, error)`` at once: the last shown
        overlay with every recorded click drawn, and a "working" status. :meth:`flush` segments it."""
        image = session.image
        if image is None:
            session.last_status = "Upload an image or pick an example first."
            return None, session.last_status, True
        h, w = image.shape[:2]
        x, y = float(np.clip(x, 0, w - 1)), float(np.clip(y, 0, h - 1))
        with self.guard:
            session.pending.append((x, y, mode or session.mode))
            pending = list(session.pending)
            shown = session.shown
        base, n_points, box, corner = shown if shown is not None and shown[0].shape == image.shape else (image, 0, False, False)
        overlay = draw_pending(base, pending)
        n_points += sum(m != MODES[2] for _, _, m in pending)
        corners = sum(m == MODES[2] for _, _, m in pending) + int(corner)
        info = f"{n_points} point(s)" + (", box" if box else "") + (f", {corners} box corner(s) pending" if corners else "")
        status = (f"**Working…** segmenting {len(pending)} click(s); the mask updates when it is done.\n\n"
                  f"_{session.name}: {info}; adapter: {session.adapter or NONE_CHOICE}._")
        return overlay, status, False

    def record_clicks(self, session: Session, clicks) -> tuple[np.ndarray | None, str, bool] | None:
        """Record the page's clicks: ``clicks`` is the page's list (or its JSON) of ``[seq, x, y, mode]``, every
        click of the tab numbered from 1 (the page resends its recent ones each time); those above
        ``session.click_seq`` are new and recorded in order. Returns :meth:`record`'s answer for the last new
        one, ``None`` when none is new."""
        if isinstance(clicks, str):
            try:
                clicks = json.loads(clicks or "[]")
            except json.JSONDecodeError:
                return None
        result = None
        for item in clicks if isinstance(clicks, list) else []:
            try:
                seq, x, y, mode = int(item[0]), float(item[1]), float(item[2]), item[3]
            except (TypeError, ValueError, IndexError):
                continue
            if seq <= session.click_seq or not (np.isfinite(x) and np.isfinite(y)):
                continue
            session.click_seq = seq
            result = self.record(session, x, y, mode if mode in MODES else None)
        return result

    @_locked
    def flush(self, session: Session) -> View:
        """Segment every recorded click (in order) and render the result once; with nothing recorded, render
        the current result again (the page may show a "working" overlay from a click this flush took)."""
        results = self._drain(session)
        if not results:
            return self.render(session, session.last_status)
        errors = [m for m, e in results if e]
        messages = [m for m, _ in results]
        if len(messages) > 3:
            messages = [f"{len(messages)} clicks segmented:", messages[0], "…", messages[-1]]
        text = " ".join(messages)
        if errors and errors[-1] not in text:
            text = f"{errors[-1]} {text}"
        return self.render(session, text, error=bool(errors))

    def _drain(self, session: Session) -> list[tuple[str, bool]]:
        """Apply the recorded clicks not applied yet (under ``self.lock``); ``[(message, error)]``."""
        out = []
        with self.lock:
            while True:
                with self.guard:
                    if session.applied >= len(session.pending):
                        return out
                    x, y, mode = session.pending[session.applied]
                try:
                    out.append(self._apply_click(session, x, y, mode))
                except Exception as exc:  # a bug must not wedge the queue of clicks
                    log.exception("usam demo: click failed")
                    out.append((f"**Could not segment**: {readable(exc)}", True))
                with self.guard:
                    session.applied += 1

    def _drop_pending(self, session: Session) -> None:
        with self.guard:
            session.pending, session.applied, session.shown = [], 0, None

    def _apply_click(self, session: Session, x: float, y: float, mode: str | None = None) -> tuple[str, bool]:
        """Add a point (positive / negative) or a box corner at ``(x, y)`` and predict; ``(message, error)``."""
        if mode is not None:
            session.mode = mode
        if session.image is None:
            return "Upload an image or pick an example first.", True
        h, w = session.image.shape[:2]
        x = float(np.clip(x, 0, w - 1))
        y = float(np.clip(y, 0, h - 1))
        if session.mode == MODES[2]:
            if session.corner is None:
                session.history.append(session.snapshot())
                session.corner = [x, y]
                return "Box: first corner set. Click the opposite corner.", False
            (cx, cy), session.corner = session.corner, None
            x0, x1 = sorted((cx, x))
            y0, y1 = sorted((cy, y))
            box = [x0, y0, min(x1 + 1, w), min(y1 + 1, h)]
            if box[2] - box[0] < 3 or box[3] - box[1] < 3:
                return "The box is too small: click two opposite corners of the object.", True
            session.box = box
            mask_input = None  # a new box starts the object afresh
            what = "box"
        else:
            label = 0 if session.mode == MODES[1] else 1
            if self._needs_box(session.adapter, [[x, y]], session.box):
                return f"**Point not added**: {BARE_POINTS_MESSAGE}.", True
            session.history.append(session.snapshot())
            session.corner = None
            session.points.append([x, y])
            session.labels.append(label)
            mask_input = session.logits  # SAM convention: refine with the previous best mask's logits
            what = f"{'positive' if label else 'negative'} point ({x:.0f}, {y:.0f})"
        del session.history[:-MAX_HISTORY]
        try:
            self._predict(session, mask_input)
        except Exception as exc:
            self._restore(session, session.history.pop())
            return f"**Could not segment**: {readable(exc)}", True
        return f"Added {what}.", False

    def _restore(self, session: Session, snap: dict) -> None:
        session.points, session.labels = snap["points"], snap["labels"]
        session.box, session.corner = snap["box"], snap["corner"]
        mask_input = None if snap["mask_input"] is None else snap["mask_input"].astype(np.float32)
        if snap["had_result"] and session.has_prompts:
            self._predict(session, mask_input)
            if session.masks is not None and snap["selected"] < len(session.masks):
                session.selected = snap["selected"]
        else:
            session.clear_result()

    @_locked
    def undo(self, session: Session) -> View:
        """Undo the last click (point, box corner or box)."""
        self._drain(session)  # clicks still being segmented come first: undo takes back the last one
        if session.image is None:
            return self.render(session, "Nothing to undo: no image.")
        if not session.history:
            return self.render(session, "Nothing to undo.")
        try:
            self._restore(session, session.history.pop())
        except Exception as exc:
            return self.render(session, f"**Could not undo**: {readable(exc)}", error=True)
        return self.render(session, "Undone.")

    @_locked
    def clear(self, session: Session) -> View:
        """Remove every prompt (the image stays, its embedding too), clicks still being segmented too."""
        with self.guard:
            session.pending, session.applied = [], 0
        session.clear_prompts()
        return self.render(session, "Cleared." if session.image is not None else "Upload an image or pick an example.")

    @_locked
    def choose(self, session: Session, index: int) -> View:
        """Pick multimask candidate ``index`` (its logits are fed back on the next click)."""
        if session.pending:
            self._drain(session)
            return self.render(session, "Not chosen: new clicks changed the candidates; choose again.", error=True)
        if session.masks is None:
            return self.render(session, "No candidates yet: click the image.")
        if index is None or not 0 <= int(index) < len(session.masks):
            return self.render(session, f"No candidate {index}.", error=True)
        session.selected = int(index)
        return self.render(session, f"Candidate {session.selected + 1} chosen (estimated IoU "
                                    f"{session.quality[session.selected]:.2f}: {QUALITY_KINDS[session.quality_kind]}, "
                                    "the model's own estimate, not a measurement).")

    @_locked
    def set_multimask(self, session: Session, multimask: bool) -> View:
        """Three candidates for the ambiguous prompt (one click alone) or always one mask."""
        self._drain(session)
        session.multimask = bool(multimask)
        if session.image is not None and session.has_prompts:
            try:
                self._predict(session, session.mask_input)
            except Exception as exc:
                return self.render(session, f"**Could not segment**: {readable(exc)}", error=True)
        return self.render(session, "Three candidates for one click alone (a box and refining clicks give one mask)."
                           if session.multimask else "One mask per prompt.")

    @_locked
    def set_adapter(self, session: Session, choice: str | None) -> View:
        """Switch the organ adapter (``NONE_CHOICE`` / ``None``: bare backbone); re-runs the prompts and heads."""
        name = None if choice in (None, "", NONE_CHOICE) else str(choice)
        self._drain(session)
        if name is not None and name not in self.adapter_names:
            return self.render(session, f"No adapter named `{name}` is loaded (loaded: {', '.join(self.adapter_names) or 'none'}).", error=True)
        previous = session.adapter
        session.adapter = name
        session.auto = None
        extra = ""
        if name is None and self.bare_needs_box:
            if session.mode != MODES[2]:
                session.mode = MODES[2]
                extra += " Click mode set to box: the bare backbone was trained on boxes only (points need an adapter, or a box first)."
            if self._needs_box(None, session.points, session.box):
                session.clear_prompts()
                extra += " Your points were cleared: without an adapter they need a box."
        if name is not None:
            session.measure_kind = self.measure_kind_for(name, session.measure_kind)
        if session.image is not None:
            try:
                seconds = self._encode(session)
                if session.has_prompts:
                    self._predict(session, None)
            except Exception as exc:
                session.adapter = previous
                return self.render(session, f"**Could not switch to `{choice}`**: {readable(exc)}", error=True)
            self._run_heads(session)
            enc = f" (image re-encoded with its LoRA in {seconds:.1f} s)" if seconds else ""
        else:
            enc = ""
        return self.render(session, f"Adapter: **{name or NONE_CHOICE}**{enc}.{extra}")

    @_locked
    def set_measure(self, session: Session, pixel_size, kind: str | None = None) -> View:
        """Pixel size (mm per pixel, a number or its text; empty / 0: no measurements) and what the
        interactive mask is."""
        if isinstance(pixel_size, str):
            pixel_size = pixel_size.strip().replace(",", ".")
        session.pixel_size = _finite_positive(pixel_size)
        if kind:
            session.measure_kind = kind
        if session.pixel_size is None and pixel_size not in (None, "") and _finite_number(pixel_size) != 0:
            return self.render(session, f"Pixel size must be a positive number of mm, got {pixel_size!r}.", error=True)
        return self.render(session, f"Pixel size: {session.pixel_size} mm." if session.pixel_size else "No pixel size: no measurements.")

    # ------------------------------------------------------------------ API
    @_locked
    def segment(self, image, prompts_json: str | dict | None) -> np.ndarray:
        """API: ``image`` (file path or array) + prompts JSON -> ``(H, W)`` uint8 mask, 255 = object.

        Raises :class:`~usam.errors.UsamError` with a readable message on a bad image or bad prompts.
        """
        if image is None:
            raise InputImageError("no image given")
        if isinstance(image, np.ndarray):
            img = to_rgb_uint8(image)
        else:
            path = Path(image if isinstance(image, (str, os.PathLike)) else getattr(image, "path", None) or image)
            img, _ = read_upload(path, path.name)
        prompts = parse_prompts(prompts_json)
        points, labels, box = prompt_values(prompts)
        adapter = request_adapter(prompts, self.adapter_names)
        if self._needs_box(adapter, points, box):
            raise bare_points_error(points, labels, img.shape[:2], self.adapter_names)
        kwargs = predict_kwargs(prompts, points, labels, box)
        with self.lock:
            self._activate(adapter)
            self.predictor.set_image(img)
            masks, scores, _ = self.predictor.predict(**kwargs)
        return (masks[int(np.argmax(scores))] > 0).astype(np.uint8) * 255

    # ------------------------------------------------------------------ rendering
    def render(self, session: Session, status: str = "", error: bool = False) -> View:
        """The view of ``session``'s current result; clicks recorded but not yet segmented are drawn on the
        overlay, and the status then says the page is still working."""
        image = session.image
        if image is None:
            with self.guard:
                session.pending, session.applied, session.shown, session.last_status = [], 0, None, status
            return View(session, None, [], None, None, status, None, None, "", "", error)
        mask = session.mask
        overlay = draw_prompts(image, session, mask)
        candidates = []
        if session.masks is not None:
            for i, (m, q) in enumerate(zip(session.masks, session.quality)):
                candidates.append((thumbnail(mask_overlay(image, m)), f"#{i + 1} · estimated IoU {float(q):.2f}"))
        mask_file = mask_png(mask, self.workdir, Path(session.name).stem) if mask is not None else None
        lines = []
        if session.pixel_size and mask is not None:
            result, text = measure_mask(mask, session.pixel_size, session.measure_kind)
            lines.append(f"- Your mask ({session.measure_kind.split(' (')[0]}): {text}")
            overlay = draw_measurement(overlay, result)
        auto = self._auto_view(session)
        lines += auto.measurements
        if not session.pixel_size:
            measurements = "Type the pixel size (mm) to measure the masks."
        else:
            measurements = "\n".join(lines) or "Nothing to measure yet: segment something."
        overlay, status = self._status(session, overlay, status, len(candidates))
        return View(session, overlay, candidates, session.selected if candidates else None, mask_file, status,
                    auto.overlay, auto.probabilities, auto.summary, measurements, error, session.prompts_json())

    def _status(self, session: Session, overlay: np.ndarray, status: str, n_candidates: int) -> tuple[np.ndarray, str]:
        """Mark the applied clicks as shown; the overlay with clicks still waiting drawn, and the full status."""
        prompt_info = f"{len(session.points)} point(s)" + (", box" if session.box is not None else "") + (
            ", box corner pending" if session.corner is not None else "")
        with self.guard:  # the clicks applied are in this overlay now; later ones are still to segment
            del session.pending[:session.applied]
            session.applied = 0
            session.shown = (overlay, len(session.points), session.box is not None, session.corner is not None)
            session.last_status = status
            waiting = list(session.pending)
        if waiting:
            overlay = draw_pending(overlay, waiting)
            prompt_info += f" (+{len(waiting)} click(s) being segmented)"
            status = f"**Working…** segmenting {len(waiting)} more click(s). {status}"
        if n_candidates:
            best = float(session.quality[session.selected])
            status += (f"\n\nMask shown: candidate {session.selected + 1} of {n_candidates}, estimated IoU {best:.2f} "
                       f"({QUALITY_KINDS[session.quality_kind]}: the model's own quality estimate, not a measured "
                       "score)." if status else "")
        status = f"{status}\n\n_{session.name}: {prompt_info}; adapter: {session.adapter or NONE_CHOICE}._" if status else status
        return overlay, status

    def _auto_view(self, session: Session) -> AutoView:
        """The adapter's automatic outputs on the session's image (the heads run once per image and adapter)."""
        if session.adapter is None:
            return AutoView(None, None, "Choose an organ adapter for automatic segmentation, classes, box and keypoints.", [])
        if session.auto is None:
            self._run_heads(session)
        if session.auto is None:
            return AutoView(None, None, "", [])
        name, pred, err = session.auto
        if pred is None:
            return AutoView(None, None, f"Adapter `{name}`: no automatic outputs ({err}).", [])
        tasks = getattr(self.model.adapters[name], "tasks", None) if name in self.adapter_names else None
        return auto_view(session.image, name, pred, tasks if isinstance(tasks, dict) else {}, session.pixel_size)
