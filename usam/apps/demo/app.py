"""Interactive Gradio demo: click or box an ultrasound image, see the mask, the organ adapter's heads and measurements.

>>> import usam, usam.apps.demo.app
>>> model = usam.UsamModel.from_pretrained(adapters=["adapters/fetal_head"])
>>> usam.apps.demo.app.launch(model, host="127.0.0.1", port=7860)          # blocks; ``prevent_thread_lock=True`` returns

Everything runs offline: no share links, analytics off, no web fonts. The page has

- an upload (PNG / JPEG / BMP / TIFF, 8 or 16 bit, grey / RGB / RGBA) and bundled examples (credited);
- click modes *positive point*, *negative point*, *box (two corners)*, with undo and clear: the overlay
  (points green / red, box yellow, mask blue) updates after each click; one click or a box alone gives
  three multimask candidates, with their *predicted IoU* (the model's own quality estimate, not a measured
  score), to choose in a gallery; refining clicks give SAM's single mask; the chosen mask downloads as a
  PNG (0 / 255) and its prompts show as JSON;
- no click is lost: each click is recorded and drawn at once (the page's own click capture, in order, also
  while the image reloads) with a "Working…" status; the segmentation then runs on every click recorded,
  coalesced (one run after the current one covers all clicks made meanwhile) and gives the mask the same
  clicks answered one by one give (:meth:`DemoBackend.record` / :meth:`DemoBackend.flush`);
- a keyboard path: pixel X / Y number inputs with *add positive point*, *add negative point* and
  *add box corner* buttons (the same prompts as clicks);
- an organ adapter dropdown, defaulting to the **first adapter loaded** (the first ``--adapters`` argument);
  with an adapter, its automatic segmentation, class probabilities, detected box and keypoints; with a
  pixel size (mm), measurements of the masks through :mod:`usam.measure` (head circumference / BPD / OFD for
  fetal heads, a lesion's long and short axes otherwise; "measure my mask as" follows the adapter);
- point prompts need an organ adapter: the bare LiteMedSAM backbone was trained on boxes only (a lone click
  gives a meaningless speck), so with "none (bare backbone)" a point without a box is refused with that
  explanation (in the page and in the API's error); points added after a box refine it;
- an API endpoint ``/segment`` (``segment(image_file, prompts_json) -> mask PNG``), e.g.::

    from gradio_client import Client, handle_file
    mask_png = Client("http://127.0.0.1:7860/").predict(
        handle_file("scan.png"), '{"box": [220, 100, 500, 370]}', api_name="/segment")

  ``prompts_json`` keys: ``points`` ``[[x, y], ...]``, ``labels`` ``[1, 0, ...]`` (1 positive, default all 1),
  ``box`` ``[x0, y0, x1, y1]``, optional ``adapter`` (a loaded adapter's name; default: the bare backbone,
  which needs a ``box``), optional ``multimask`` (default: true for a single point without box) — the
  best-scoring mask is returned. A bad request is answered with a readable error and logged as one line.

Each image is encoded once (the model's embedding cache): later clicks, undo, candidate choice and adapter
heads reuse the embedding. All handlers live in :class:`DemoBackend` and can be called without a browser.
"""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported anywhere

import argparse
import hashlib
import importlib
import json
import logging
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import cv2
import numpy as np

from ...errors import UsamError
from ...io import read_image, to_rgb_uint8

log = logging.getLogger("usam.apps.demo.app")

NONE_CHOICE = "none (bare backbone)"
MODES = ("positive point", "negative point", "box (two corners)")
MEASURE_KINDS = ("fetal head (HC, BPD, OFD)", "lesion (long / short axis)")
#: The demo refuses images above this many pixels (decoding and redrawing them at every click would crawl).
DEMO_MAX_PIXELS = 40_000_000
#: ... and files above this many bytes (also the server's upload limit).
DEMO_MAX_BYTES = 64 * 1024 * 1024
#: Undo steps kept per session.
MAX_HISTORY = 50
#: Backbones trained on box prompts only: bare (no adapter), they refuse point-only prompts.
BOX_ONLY_BACKBONES = ("litemedsam",)
#: Why the bare backbone refuses point-only prompts (shown in the page and raised by the API).
BARE_POINTS_MESSAGE = (
    "the bare LiteMedSAM backbone was trained on boxes only: a point without a box gives no usable mask. "
    "Draw a box (click mode \"box (two corners)\"; points added after it refine it), or choose an organ adapter "
    "for point clicks"
)

MASK_RGB = (30, 144, 255)
POS_RGB = (0, 210, 0)
NEG_RGB = (235, 30, 30)
BOX_RGB = (255, 210, 0)
CLASS_RGB = ((30, 144, 255), (255, 99, 71), (50, 205, 50), (238, 130, 238), (255, 215, 0), (0, 206, 209), (255, 140, 0))

#: Bundled examples: file name -> (pixel size in mm or None, source). See demo/examples/CREDITS.md.
EXAMPLE_INFO = {
    "hc18_130_HC.png": (0.114776629, "HC18 test image 130_HC (fetal head)"),
    "hc18_626_HC.png": (0.163426995, "HC18 test image 626_HC (fetal head)"),
    "psfhs_03781.png": (None, "PSFHS test image 03781 (pubic symphysis and fetal head)"),
}
EXAMPLES_CREDIT = (
    "Examples: **HC18** — van den Heuvel TLA, de Bruijn D, de Korte CL, van Ginneken B. *Automated measurement of "
    "fetal head circumference using 2D ultrasound images.* PLoS ONE 13(8):e0200412 (2018), CC BY 4.0; "
    "**PSFHS** — Chen G. et al. *PSFHS: Intrapartum ultrasound image dataset for AI-based segmentation of pubic "
    "symphysis and fetal head.* Scientific Data 11:436 (2024), CC BY 4.0. Unmodified test-split images "
    "(see `demo/examples/CREDITS.md`)."
)


def default_examples_dir() -> Path | None:
    """``demo/examples`` of a source checkout, or ``None`` when it is not there (installed wheel)."""
    d = Path(__file__).resolve().parents[1] / "demo" / "examples"
    return d if d.is_dir() else None


def _example_list(examples) -> list[Path]:
    if examples is None:
        examples = default_examples_dir()
    if not examples:
        return []
    if isinstance(examples, (str, os.PathLike)):
        d = Path(examples)
        if d.is_dir():
            return sorted(p for p in d.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"))
        return [d]
    return [Path(p) for p in examples]


# ---------------------------------------------------------------------------------------------- session state
@dataclass(repr=False)
class Session:
    """One browser tab's state (kept in a ``gr.State``)."""

    image: np.ndarray | None = None
    name: str = ""
    adapter: str | None = None
    mode: str = MODES[0]
    multimask: bool = True
    pixel_size: float | None = None
    measure_kind: str = MEASURE_KINDS[0]
    points: list[list[float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    box: list[float] | None = None
    corner: list[float] | None = None  # first corner of a box being drawn
    history: list[dict] = field(default_factory=list)
    # result of the current prompts
    mask_input: np.ndarray | None = None  # (1, 256, 256) logits fed to get the current result
    masks: np.ndarray | None = None  # (M, H, W) bool
    scores: np.ndarray | None = None  # (M,)
    lowres: np.ndarray | None = None  # (M, 256, 256) logits
    selected: int = 0
    # adapter heads on the current image: (adapter, Prediction or None, error message)
    auto: tuple | None = None
    notes: list[str] = field(default_factory=list)
    # clicks recorded at once (DemoBackend.record) and segmented later (DemoBackend.flush), in order:
    # [(x, y, mode)]; the first ``applied`` of them are already in the prompts but not yet rendered
    pending: list[tuple] = field(default_factory=list)
    applied: int = 0
    # the last rendered overlay without the pending clicks, and its prompt counts (points, box, corner)
    shown: tuple | None = None
    last_status: str = ""  # the last status rendered (without its prompt line)
    click_seq: int = 0  # the page's click counter already recorded (DemoBackend.record_clicks)

    def __repr__(self) -> str:
        shape = None if self.image is None else self.image.shape
        return (f"Session(name={self.name!r}, image={shape}, adapter={self.adapter!r}, mode={self.mode!r}, "
                f"points={self.points}, labels={self.labels}, box={self.box}, corner={self.corner}, "
                f"candidates={None if self.masks is None else len(self.masks)}, selected={self.selected}, "
                f"history={len(self.history)}, pending={len(self.pending)})")

    @property
    def has_prompts(self) -> bool:
        return bool(self.points) or self.box is not None

    @property
    def mask(self) -> np.ndarray | None:
        """The chosen candidate, ``(H, W)`` bool."""
        return None if self.masks is None else self.masks[self.selected]

    @property
    def logits(self) -> np.ndarray | None:
        """Low-res logits ``(1, 256, 256)`` of the chosen candidate (fed back on the next click)."""
        return None if self.lowres is None else self.lowres[self.selected][None]

    def snapshot(self) -> dict:
        return {
            "points": [list(p) for p in self.points], "labels": list(self.labels),
            "box": None if self.box is None else list(self.box),
            "corner": None if self.corner is None else list(self.corner),
            "mask_input": None if self.mask_input is None else self.mask_input.astype(np.float16),
            "selected": self.selected, "had_result": self.masks is not None,
        }

    def clear_prompts(self) -> None:
        self.points, self.labels, self.box, self.corner, self.history = [], [], None, None, []
        self.clear_result()

    def clear_result(self) -> None:
        self.mask_input = self.masks = self.scores = self.lowres = None
        self.selected = 0

    @property
    def multimask_now(self) -> bool:
        """Three candidates for the current prompts: the *Three candidates* option for an ambiguous prompt
        (one click, or a box alone). Refining clicks (a second point, points on a box) use the single-mask
        output, SAM's convention and the one the adapters were trained and benchmarked with: picking among the
        multimask candidates after several clicks undid the corrections (Dice fell with each negative click)."""
        return bool(self.multimask) and (len(self.points) == 1 and self.box is None
                                          or not self.points and self.box is not None)

    def prompts_json(self) -> str:
        """The prompts of the current mask as JSON (the ``prompts_json`` of ``/segment``)."""
        def num(v):
            return int(v) if float(v).is_integer() else round(float(v), 2)

        d: dict[str, Any] = {}
        if self.points:
            d["points"] = [[num(x), num(y)] for x, y in self.points]
            d["labels"] = [int(v) for v in self.labels]
        if self.box is not None:
            d["box"] = [num(v) for v in self.box]
        if d and self.adapter:
            d["adapter"] = self.adapter
        return json.dumps(d) if d else ""


class View(NamedTuple):
    """What every handler returns: the session and the value of each output component."""

    session: Session
    overlay: np.ndarray | None  # prompts and chosen mask on the image
    candidates: list  # [(thumbnail, "caption")] multimask candidates
    selected: int | None  # index of the chosen candidate
    mask_file: str | None  # PNG of the chosen mask
    status: str  # Markdown
    auto_overlay: np.ndarray | None  # adapter's automatic segmentation, box, keypoints
    probabilities: dict | None  # {class name: probability} for gr.Label
    auto_summary: str  # Markdown
    measurements: str  # Markdown
    error: bool  # the status is an error (shown as a warning too)
    prompts: str = ""  # the prompts of the shown mask as JSON (Session.prompts_json)


# ---------------------------------------------------------------------------------------------- drawing
def _radius(shape) -> int:
    return max(3, int(round(min(shape[:2]) / 90)))


def _blend(image: np.ndarray, mask: np.ndarray, rgb, alpha: float = 0.45, contour: bool = True) -> np.ndarray:
    out = image.copy()
    m = mask.astype(bool)
    if m.any():
        color = np.array(rgb, dtype=np.float32)
        out[m] = (out[m].astype(np.float32) * (1 - alpha) + color * alpha).round().astype(np.uint8)
        if contour:
            cs, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(out, cs, -1, tuple(int(c) for c in rgb), max(1, _radius(image.shape) // 3))
    return out


def _draw_point(img: np.ndarray, xy, rgb, r: int) -> None:
    c = (int(round(xy[0])), int(round(xy[1])))
    cv2.circle(img, c, r + max(1, r // 3), (255, 255, 255), -1, cv2.LINE_AA)
    cv2.circle(img, c, r, tuple(int(v) for v in rgb), -1, cv2.LINE_AA)


def _draw_box(img: np.ndarray, box, rgb, thickness: int) -> None:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    cv2.rectangle(img, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), tuple(int(v) for v in rgb), thickness, cv2.LINE_AA)


def draw_prompts(image: np.ndarray, session: Session, mask: np.ndarray | None = None) -> np.ndarray:
    """The overlay: ``mask`` in blue, the box in yellow, positive points green, negative red, a pending corner."""
    out = _blend(image, mask, MASK_RGB) if mask is not None else image.copy()
    r = _radius(image.shape)
    if session.box is not None:
        _draw_box(out, session.box, BOX_RGB, max(2, r // 2))
    if session.corner is not None:
        x, y = (int(round(v)) for v in session.corner)
        cv2.drawMarker(out, (x, y), BOX_RGB, cv2.MARKER_CROSS, 4 * r, max(2, r // 2), cv2.LINE_AA)
    for xy, lab in zip(session.points, session.labels):
        _draw_point(out, xy, POS_RGB if lab == 1 else NEG_RGB, r)
    return out


def draw_pending(image: np.ndarray, pending: Sequence[tuple]) -> np.ndarray:
    """``image`` with clicks that are recorded but not yet segmented: points as dots, box corners as crosses."""
    if not pending:
        return image
    out = image.copy()
    r = _radius(image.shape)
    for x, y, mode in pending:
        if mode == MODES[2]:
            cv2.drawMarker(out, (int(round(x)), int(round(y))), BOX_RGB, cv2.MARKER_CROSS, 4 * r, max(2, r // 2), cv2.LINE_AA)
        else:
            _draw_point(out, (x, y), NEG_RGB if mode == MODES[1] else POS_RGB, r)
    return out


def _thumbnail(image: np.ndarray, side: int = 256) -> np.ndarray:
    h, w = image.shape[:2]
    s = side / max(h, w)
    if s >= 1:
        return image
    return cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def _mask_png(mask: np.ndarray, directory: Path, stem: str) -> str:
    """Write ``mask`` as a 0 / 255 PNG named by its content; returns the path."""
    m = mask.astype(np.uint8) * 255
    digest = hashlib.sha1(np.packbits(mask.astype(bool)).tobytes() + str(mask.shape).encode()).hexdigest()[:12]
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in (stem or "image"))[:60]
    path = directory / f"{safe}_mask_{digest}.png"
    if not path.exists():
        ok, buf = cv2.imencode(".png", m)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(buf.tobytes())
        os.replace(tmp, path)
    return str(path)


# ---------------------------------------------------------------------------------------------- measurements
def _measure_module():
    """``usam.measure`` or ``None`` when it is not installed (the demo then skips measurements)."""
    try:
        return importlib.import_module("usam.measure")
    except ImportError:
        return None


def _format_result(result: dict) -> str:
    parts = []
    for key, value in result.items():
        if key.endswith("_mm") and key != "pixel_size_mm" and isinstance(value, (int, float, np.floating, np.integer)) and np.isfinite(value):
            parts.append(f"{key[:-3].upper()} **{float(value):.1f} mm**")
    return " · ".join(parts) or "no measurement"


def measure_mask(mask: np.ndarray, pixel_size: float, kind: str) -> tuple[dict | None, str]:
    """Measure a binary mask; returns (result or None, Markdown line)."""
    mod = _measure_module()
    if mod is None:
        return None, "measurements unavailable: `usam.measure` is not installed"
    if not mask.any():
        return None, "the mask is empty"
    head = kind == MEASURE_KINDS[0] or "head" in kind.lower()
    fn = getattr(mod, "head_biometry" if head else "lesion_axes", None)
    if fn is None:
        return None, f"measurements unavailable: `usam.measure` has no `{'head_biometry' if head else 'lesion_axes'}`"
    try:
        result = fn(mask.astype(np.uint8), pixel_size)
    except UsamError as exc:
        return None, f"could not measure: {exc}"
    except Exception as exc:  # a measurement bug must not take the demo down
        return None, f"could not measure ({type(exc).__name__}: {exc})"
    return result, _format_result(result)


def _class_name(task_id: str, names: Sequence[str], k: int, num_classes: int | None = None) -> str:
    """Name of class ``k`` of segmentation task ``task_id``: its class name, else (a binary task without
    class names, e.g. ``fetal_head``) the task id itself, else ``class k``."""
    if k < len(names) and names[k]:
        return str(names[k])
    if not names and k == 1 and num_classes in (None, 2):
        return str(task_id)
    return f"class {k}"


def _draw_measurement(image: np.ndarray, result: dict | None) -> np.ndarray:
    mod = _measure_module()
    if result is None or mod is None or not hasattr(mod, "draw_measurements"):
        return image
    try:
        drawn = mod.draw_measurements(image, result)
        drawn = to_rgb_uint8(np.asarray(drawn))
        return drawn if drawn.shape == image.shape else image
    except Exception:
        return image


# ---------------------------------------------------------------------------------------------- backend
def _readable(exc: BaseException) -> str:
    msg = str(exc).strip() or type(exc).__name__
    return msg if isinstance(exc, UsamError) else f"{type(exc).__name__}: {msg}"


def _locked(method):
    """Run a handler under the backend's lock: sessions share one model, and events of one tab may overlap."""
    import functools

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


def _pixel_size_text(value: float | None) -> str:
    """The pixel-size box's text: empty for none (never "0")."""
    return "" if value is None else repr(float(value))


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
        from ...predictor import Predictor

        self.model = model
        self.predictor = Predictor(model)
        self.examples = [p for p in _example_list(examples) if p.is_file()]
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
            if getattr(spec, "kind", None) in ("segmentation", "segment"):
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
            from ...errors import PromptError

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
            session.auto = (name, None, _readable(exc))

    # ------------------------------------------------------------------ handlers
    def example_pixel_size(self, path: Path, name: str) -> float | None:
        """The pixel size (mm) of a bundled example (same name and bytes), else ``None``."""
        for ex in self.examples:
            if ex.name == name and name in EXAMPLE_INFO:
                try:
                    if ex.stat().st_size == path.stat().st_size and ex.read_bytes() == path.read_bytes():
                        return EXAMPLE_INFO[name][0]
                except OSError:
                    return None
        return None

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
        path = Path(file if isinstance(file, (str, os.PathLike)) else getattr(file, "path", None) or getattr(file, "name", file))
        name = Path(getattr(file, "orig_name", None) or path.name).name
        try:
            image, notes = self._read_upload(path, name)
        except UsamError as exc:
            return self.render(session, f"**Could not load `{name}`**: {exc}", error=True)
        except Exception as exc:
            return self.render(session, f"**Could not load `{name}`**: {_readable(exc)}", error=True)
        self._drop_pending(session)  # clicks made on the previous image
        session.image, session.name, session.notes, session.auto = image, name, notes, None
        session.pixel_size = _finite_positive(pixel_size) if pixel_size is not None else self.example_pixel_size(path, name)
        session.clear_prompts()
        try:
            seconds = self._encode(session)
        except Exception as exc:
            session.image = None
            return self.render(session, f"**Could not encode `{name}`**: {_readable(exc)}", error=True)
        self._run_heads(session)
        h, w = image.shape[:2]
        enc = f"encoded in {seconds:.1f} s" if seconds else "embedding reused from the cache"
        note = "".join(f"\n\nNote: {n}" for n in notes)
        return self.render(session, f"Loaded `{name}` ({w}x{h}), {enc}. Click the image to prompt.{note}")

    def _read_upload(self, path: Path, name: str) -> tuple[np.ndarray, list[str]]:
        if not path.is_file():
            raise UsamError(f"`{name}` is not a file")
        size = path.stat().st_size
        if size > DEMO_MAX_BYTES:
            raise UsamError(f"the file is {size / 2**20:.0f} MB, over the demo's {DEMO_MAX_BYTES / 2**20:.0f} MB limit: downscale or crop it first")
        notes: list[str] = []
        try:  # header only: refuse huge images before decoding them, and learn the bit depth / alpha
            from PIL import Image

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    w, h = im.size
                    mode = im.mode
                    transparent = "transparency" in im.info
            if w * h > DEMO_MAX_PIXELS:
                raise UsamError(
                    f"the image is {w}x{h} pixels ({w * h / 1e6:.0f} MP), over the demo's "
                    f"{DEMO_MAX_PIXELS / 1e6:.0f} MP limit: downscale it first"
                )
            if mode.startswith("I;16") or mode in ("I", "F"):
                notes.append(f"a {'16-bit' if mode.startswith('I;16') or mode == 'I' else 'floating-point'} image: scaled to 8 bits for display and segmentation.")
            if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and transparent):
                notes.append("the image has an alpha channel (transparency): it was dropped.")
        except UsamError:
            raise
        except Exception as exc:
            if type(exc).__name__ == "DecompressionBombError":
                raise UsamError("the image is too large to decode safely: downscale it first") from exc
            # PIL does not know it: let read_image decide (TIFF variants, ...)
        try:
            image = read_image(path)
        except UsamError as exc:  # name the upload, not the server's temporary copy
            raise type(exc)(str(exc).replace(repr(str(path)), f"'{name}'").replace(str(path), name)) from exc
        if image.shape[0] * image.shape[1] > DEMO_MAX_PIXELS:
            raise UsamError(f"the image is {image.shape[1]}x{image.shape[0]} pixels, over the demo's {DEMO_MAX_PIXELS / 1e6:.0f} MP limit")
        return image, notes

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
                    out.append((f"**Could not segment**: {_readable(exc)}", True))
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
            return f"**Could not segment**: {_readable(exc)}", True
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
            return self.render(session, f"**Could not undo**: {_readable(exc)}", error=True)
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
        return self.render(session, f"Candidate {session.selected + 1} chosen (predicted IoU "
                                    f"{session.scores[session.selected]:.2f}: the model's own estimate, not a measurement).")

    @_locked
    def set_multimask(self, session: Session, multimask: bool) -> View:
        """Three candidates for an ambiguous prompt (one click, or a box alone) or always one mask."""
        self._drain(session)
        session.multimask = bool(multimask)
        if session.image is not None and session.has_prompts:
            try:
                self._predict(session, session.mask_input)
            except Exception as exc:
                return self.render(session, f"**Could not segment**: {_readable(exc)}", error=True)
        return self.render(session, "Three candidates for one click or a box alone (refining clicks give one mask)."
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
                return self.render(session, f"**Could not switch to `{choice}`**: {_readable(exc)}", error=True)
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
        from ...errors import InputImageError, PromptError

        if image is None:
            raise InputImageError("no image given")
        if isinstance(image, np.ndarray):
            img = to_rgb_uint8(image)
        else:
            path = Path(image if isinstance(image, (str, os.PathLike)) else getattr(image, "path", None) or image)
            img, _ = self._read_upload(path, path.name)
        if isinstance(prompts_json, dict):
            prompts = prompts_json
        else:
            try:
                prompts = json.loads(prompts_json or "{}")
            except json.JSONDecodeError as exc:
                raise PromptError(f"prompts_json is not valid JSON ({exc.msg} at character {exc.pos}): e.g. "
                                  '{"points": [[120, 80]], "labels": [1], "box": [50, 40, 200, 160]}') from exc
        if not isinstance(prompts, dict):
            raise PromptError('prompts_json must be a JSON object like {"points": [[x, y]], "labels": [1], "box": [x0, y0, x1, y1]}')
        unknown = set(prompts) - {"points", "labels", "box", "adapter", "multimask"}
        if unknown:
            raise PromptError(f"unknown keys in prompts_json: {sorted(unknown)} (use points, labels, box, adapter, multimask)")
        points, labels, box = prompts.get("points") or None, prompts.get("labels"), prompts.get("box") or None
        if points is not None and not isinstance(points, list):
            raise PromptError(f'"points" must be a list of [x, y] pairs, got {points!r}')
        if points is not None and labels is None:
            labels = [1] * len(points)
        if points is None and box is None:
            raise PromptError('give "points" and/or "box" in prompts_json')
        adapter = prompts.get("adapter")
        if adapter in ("", NONE_CHOICE):
            adapter = None
        if adapter is not None and adapter not in self.adapter_names:
            raise PromptError(f"no adapter named {adapter!r} is loaded (loaded: {', '.join(self.adapter_names) or 'none'})")
        if self._needs_box(adapter, points, box):
            from ...predictor import check_points

            check_points(points, labels, img.shape[:2])  # a bad point is reported as such first
            if self.adapter_names:
                hint = (f'Add "box": [x0, y0, x1, y1], or name an adapter: "adapter": "{self.adapter_names[0]}" '
                        f"(loaded: {', '.join(self.adapter_names)})")
            else:
                hint = 'Add "box": [x0, y0, x1, y1] (no organ adapter is loaded: start the demo with --adapters for points)'
            raise PromptError(f"no adapter given, and {BARE_POINTS_MESSAGE.split(': ', 1)[0]}: a point without a box "
                              f"gives no usable mask. {hint}.")
        single_point = points is not None and len(points) == 1 and box is None
        multimask = prompts.get("multimask", single_point)
        if not isinstance(multimask, bool):
            raise PromptError(f'"multimask" must be true or false, got {multimask!r}')
        kwargs: dict[str, Any] = {"multimask_output": multimask}
        if points is not None:
            kwargs["point_coords"], kwargs["point_labels"] = points, labels
        if box is not None:
            kwargs["box"] = box
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
            for i, (m, s) in enumerate(zip(session.masks, session.scores)):
                candidates.append((_thumbnail(_blend(image, m, MASK_RGB)), f"#{i + 1} · predicted IoU {float(s):.2f}"))
        mask_file = _mask_png(mask, self.workdir, Path(session.name).stem) if mask is not None else None
        lines = []
        if session.pixel_size and mask is not None:
            result, text = measure_mask(mask, session.pixel_size, session.measure_kind)
            lines.append(f"- Your mask ({session.measure_kind.split(' (')[0]}): {text}")
            overlay = _draw_measurement(overlay, result)
        auto_overlay, probs, summary, auto_lines = self._render_auto(session)
        lines += auto_lines
        if not session.pixel_size:
            measurements = "Type the pixel size (mm) to measure the masks."
        else:
            measurements = "\n".join(lines) or "Nothing to measure yet: segment something."
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
        if candidates:
            best = float(session.scores[session.selected])
            status += (f"\n\nMask shown: candidate {session.selected + 1} of {len(candidates)}, predicted IoU {best:.2f} "
                       "(the model's own quality estimate, not a measured score)." if status else "")
        status = f"{status}\n\n_{session.name}: {prompt_info}; adapter: {session.adapter or NONE_CHOICE}._" if status else status
        return View(session, overlay, candidates, session.selected if candidates else None, mask_file, status,
                    auto_overlay, probs, summary, measurements, error, session.prompts_json())

    def _render_auto(self, session: Session):
        if session.adapter is None:
            return None, None, "Choose an organ adapter for automatic segmentation, classes, box and keypoints.", []
        if session.auto is None:
            self._run_heads(session)
        if session.auto is None:
            return None, None, "", []
        name, pred, err = session.auto
        if pred is None:
            return None, None, f"Adapter `{name}`: no automatic outputs ({err}).", []
        image = session.image
        out = image.copy()
        lines, mlines, probs = [f"**Adapter `{name}`**"], [], None
        tasks = getattr(self.model.adapters[name], "tasks", None) if name in self.adapter_names else None
        tasks = tasks if isinstance(tasks, dict) else {}
        for tid, cmap in (getattr(pred, "masks", None) or {}).items():
            cmap = np.asarray(cmap)
            names = (getattr(pred, "class_names", None) or {}).get(tid) or []
            present = []
            for k in [int(v) for v in np.unique(cmap) if v > 0]:
                cname = _class_name(tid, names, k, getattr(tasks.get(tid), "num_classes", None))
                out = _blend(out, cmap == k, CLASS_RGB[(k - 1) % len(CLASS_RGB)])
                present.append(f"{cname} ({int((cmap == k).sum())} px)")
                if session.pixel_size:
                    kind = MEASURE_KINDS[0] if "head" in cname.lower() else MEASURE_KINDS[1]
                    result, text = measure_mask(cmap == k, session.pixel_size, kind)
                    mlines.append(f"- `{tid}` {cname}: {text}")
                    out = _draw_measurement(out, result)
            lines.append(f"- `{tid}` segmentation: {', '.join(present) or 'nothing found'}")
        r = _radius(image.shape)
        for tid, box in (getattr(pred, "boxes", None) or {}).items():
            b = np.asarray(box, dtype=float).reshape(-1)[:4]
            _draw_box(out, b, BOX_RGB, max(2, r // 2))
            lines.append(f"- `{tid}` box: [{', '.join(f'{v:.0f}' for v in b)}]")
        for tid, kps in (getattr(pred, "keypoints", None) or {}).items():
            kps = np.asarray(kps, dtype=float).reshape(-1, 2)
            for i, (x, y) in enumerate(kps):
                _draw_point(out, (x, y), (255, 0, 255), r)
                cv2.putText(out, str(i + 1), (int(x) + r + 2, int(y) - r), cv2.FONT_HERSHEY_SIMPLEX, max(0.4, r / 8), (255, 0, 255), max(1, r // 4), cv2.LINE_AA)
            lines.append(f"- `{tid}` keypoints: " + ", ".join(f"{i + 1}: ({x:.0f}, {y:.0f})" for i, (x, y) in enumerate(kps)))
        for tid, p in (getattr(pred, "probabilities", None) or {}).items():
            p = np.asarray(p, dtype=float).reshape(-1)
            names = (getattr(pred, "class_names", None) or {}).get(tid) or [f"class {k}" for k in range(len(p))]
            kind = getattr(tasks.get(tid), "kind", None)
            if kind not in (None, "classification", "classify") and tid in (getattr(pred, "masks", None) or {}):
                continue
            d = {str(names[k]) if k < len(names) else f"class {k}": float(p[k]) for k in range(len(p))}
            if probs is None:
                probs = d
            top = max(d, key=d.get) if d else "?"
            lines.append(f"- `{tid}` class: **{top}** ({d.get(top, 0):.2f})")
        if len(lines) == 1:
            lines.append("- no automatic outputs")
        return out, probs, "\n".join(lines), mlines


# ---------------------------------------------------------------------------------------------- Gradio app
def _theme():
    import gradio as gr

    sans = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Helvetica", "Arial", "sans-serif"]
    mono = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]
    return gr.themes.Default(font=sans, font_mono=mono)  # no Google fonts: the demo runs offline


CSS = ("#usam-overlay img { cursor: crosshair; } .usam-small, .usam-small p { font-size: 0.8em !important; } "
       "#usam-clicks { display: none !important; }")

#: Page script (``Blocks.load(js=...)``): the page's own click capture on the image. Gradio's ``select`` event
#: on an image is lost whenever the image is being replaced (it maps the click with the new image's size, 0
#: until it has loaded: every click made while a result arrives was dropped). Here each click on the image
#: keeps its position and the click mode at once, waits (in order) until the image has loaded, is mapped to
#: a pixel as Gradio maps it (``object-fit``, never enlarged), numbered and added to the list the hidden
#: ``#usam-clicks`` box sends on each change (always the latest list, so a send coalesced with another loses
#: nothing; the server records the numbers it has not seen).
CLICKS_JS = """() => {
  if (window.usamClicks) return;
  const st = window.usamClicks = {seq: 0, sent: [], chain: Promise.resolve()};
  const image = () => document.querySelector('#usam-overlay img');
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const loaded = async () => {
    for (let i = 0; i < 1500; i++) {
      const im = image();
      if (im && im.complete && im.naturalWidth > 0) return im;
      await sleep(20);
    }
    return null;
  };
  const send = () => {
    const box = document.querySelector('#usam-clicks textarea, #usam-clicks input');
    if (!box) return;
    box.value = JSON.stringify(st.sent.slice(-200));
    box.dispatchEvent(new Event('input', {bubbles: true}));
  };
  document.addEventListener('click', ev => {
    const t = ev.target;
    if (!(t instanceof Element) || !t.closest('#usam-overlay')) return;
    const im = image();
    if (!im || (t !== im && !t.contains(im))) return;  // the image (or its wrapper), not a toolbar button
    const r = im.getBoundingClientRect();
    const at = {dx: ev.clientX - r.left, dy: ev.clientY - r.top, w: r.width, h: r.height,
                mode: (document.querySelector('#usam-mode input:checked') || {}).value || null};
    st.chain = st.chain.then(async () => {
      const cur = await loaded();
      if (!cur) return;
      const nw = cur.naturalWidth, nh = cur.naturalHeight, s = Math.min(at.w / nw, at.h / nh, 1);
      const x = Math.round((at.dx - (at.w - nw * s) / 2) / s), y = Math.round((at.dy - (at.h - nh * s) / 2) / s);
      if (x < 0 || y < 0 || x >= nw || y >= nh) return;  // beside the picture (letterbox)
      st.sent.push([++st.seq, x, y, at.mode]);
      send();
    }).catch(() => {});
  }, true);
}"""

#: Page script (``launch(js=...)``): give every button an accessible name. Gradio's clickable images are
#: ``<button>`` elements with neither text nor label; they get one here (and again whenever the page changes).
A11Y_JS = """() => {
  const names = {
    "usam-overlay": "Image: click to place a prompt (keyboard: type X and Y below it and press an Add button)",
    "usam-auto": "Adapter's automatic segmentation image",
    "usam-api-mask": "Mask returned by the API",
  };
  const label = () => {
    for (const b of document.querySelectorAll("button:not([aria-label])")) {
      if ((b.innerText || "").trim() || b.title || b.getAttribute("aria-labelledby")) continue;
      const host = b.closest("[id^='usam-']");
      const img = b.querySelector("img");
      b.setAttribute("aria-label", (host && names[host.id]) || (img && img.alt) || (host ? host.id.slice(5) : "button"));
    }
  };
  label();
  new MutationObserver(label).observe(document.body, {childList: true, subtree: true});
}"""


def build_app(model, examples=None, title: str = "usam — ultrasound Segment Anything", workdir=None):
    """The Gradio Blocks of the demo (not launched). ``examples``: paths, a folder, ``[]`` or ``None`` (bundled)."""
    import gradio as gr

    backend = DemoBackend(model, examples=examples, workdir=workdir)

    def outputs_of(view: View, *extra):
        if view.error and view.status:
            try:
                gr.Warning(view.status.split("\n\n")[0].replace("**", ""))
            except Exception:
                pass
        cands = view.candidates
        captions = [c for _, c in cands]
        return (
            view.session, view.overlay,
            gr.Gallery(value=cands or None, selected_index=view.selected),
            gr.Radio(choices=captions, value=captions[view.selected] if captions else None),
            view.mask_file, view.status, view.auto_overlay, view.probabilities, view.auto_summary, view.measurements,
            view.prompts, *extra,
        )

    def recorded(result):
        """Outputs of a recorded click: the overlay with it drawn and the "working" status."""
        overlay_value, text, error = result
        if error:
            try:
                gr.Warning(text.replace("**", ""))
            except Exception:
                pass
        return overlay_value, text

    bare_hint = (
        "Without an adapter (\"none (bare backbone)\") draw a **box**: the bare LiteMedSAM backbone was trained on "
        "boxes only, so a lone point is refused; points added after a box refine it."
        if backend.bare_needs_box else ""
    )
    with gr.Blocks(title=title, analytics_enabled=False) as app:
        app.usam_backend = backend  # for tests and embedding
        gr.Markdown(
            f"## {title}\n"
            "Upload an ultrasound image or pick an example, choose a click mode and click the image: "
            "**positive** / **negative** points, or a **box** (two opposite corners); keyboard: type X / Y below "
            "the image and press a button. Point clicks need an **organ adapter** (default: the first one "
            f"loaded). {bare_hint}"
        )
        first = backend.new_session()
        state = gr.State(first)
        with gr.Row():
            with gr.Column(scale=3):
                # first in the page's order: on a narrow screen the columns stack and the upload stays on top
                upload = gr.File(label="Upload an image (PNG, JPEG, BMP, TIFF; 8 or 16 bit) — × clears it",
                                 type="filepath", file_types=["image", ".tif", ".tiff"], elem_id="usam-upload",
                                 height=130)
                overlay = gr.Image(label="Image — click to prompt", type="numpy", format="png", interactive=False,
                                   elem_id="usam-overlay", buttons=["fullscreen"], height=520)
                with gr.Row():
                    mode = gr.Radio(list(MODES), value=first.mode, label="Click mode", elem_id="usam-mode", scale=3)
                    undo_btn = gr.Button("Undo", elem_id="usam-undo", scale=1)
                    clear_btn = gr.Button("Clear prompts", elem_id="usam-clear", scale=1)
                with gr.Row(elem_id="usam-keyboard"):
                    key_x = gr.Number(label="X (pixel, 0 = left)", value=None, precision=0, placeholder="x",
                                      elem_id="usam-x", min_width=90)
                    key_y = gr.Number(label="Y (pixel, 0 = top)", value=None, precision=0, placeholder="y",
                                      elem_id="usam-y", min_width=90)
                    key_pos = gr.Button("Add positive point at X, Y", elem_id="usam-add-pos", min_width=120)
                    key_neg = gr.Button("Add negative point at X, Y", elem_id="usam-add-neg", min_width=120)
                    key_box = gr.Button("Add box corner at X, Y", elem_id="usam-add-corner", min_width=120)
                status = gr.Markdown("Upload an image or pick an example.", elem_id="usam-status")
                # hidden: the page script (CLICKS_JS) writes the image clicks here
                clicks = gr.Textbox(value="", elem_id="usam-clicks", lines=1, max_lines=1, container=False,
                                    show_label=False, label="clicks")
                prompts = gr.Textbox(label="Prompts of the mask shown (JSON; /segment takes the same keys)", value="",
                                     interactive=False, lines=1, max_lines=4, elem_id="usam-prompts")
                choice = gr.Radio([], type="index", elem_id="usam-choice",
                                  label="Chosen candidate — predicted IoU: the model's own quality estimate, not a measured score")
                candidates = gr.Gallery(label="Candidates with their predicted IoU (the model's estimate) — click one to choose it",
                                        columns=3, height=200, allow_preview=False, format="png", elem_id="usam-candidates",
                                        interactive=False)
                with gr.Row():
                    multimask = gr.Checkbox(value=True, elem_id="usam-multimask",
                                            label="Three candidates for one click or a box (refining clicks give one mask)")
                    mask_file = gr.File(label="Chosen mask (PNG, 0 / 255)", interactive=False, elem_id="usam-mask-file")
            with gr.Column(scale=2):
                if backend.examples:
                    gr.Examples(
                        examples=[[str(p)] for p in backend.examples],
                        example_labels=[EXAMPLE_INFO.get(p.name, (None, p.name))[1] or p.name for p in backend.examples],
                        inputs=[upload], label="Examples (click to load; HC18 ones set their pixel size)",
                        examples_per_page=6, cache_examples=False, api_visibility="private",
                    )
                    gr.Markdown(EXAMPLES_CREDIT, elem_id="usam-credits", elem_classes=["usam-small"])
                adapter = gr.Dropdown(backend.adapter_choices, value=first.adapter or NONE_CHOICE,
                                      label="Organ adapter (default: the first loaded)", elem_id="usam-adapter")
                # a Textbox, not gr.Number: Number shows "0" when empty
                pixel_size = gr.Textbox(label="Pixel size (mm per pixel) for measurements — Enter to apply", value="",
                                        placeholder="empty: no measurements (e.g. 0.115)", lines=1, max_lines=1,
                                        elem_id="usam-pixel-size")
                measure_kind = gr.Radio(list(MEASURE_KINDS), value=first.measure_kind,
                                        label="Measure my mask as (follows the adapter)", elem_id="usam-measure-kind")
                measurements = gr.Markdown("Type the pixel size (mm) to measure the masks.", elem_id="usam-measurements")
                auto_overlay = gr.Image(label="Adapter: automatic segmentation, box, keypoints", type="numpy",
                                        format="png", interactive=False, elem_id="usam-auto")
                probs = gr.Label(label="Adapter: class probabilities", num_top_classes=5, elem_id="usam-probs")
                auto_summary = gr.Markdown(elem_id="usam-auto-summary")
        with gr.Accordion("API: segment(image, prompts_json) -> mask", open=False):
            gr.Markdown(
                "Call it with `gradio_client`: `Client(url).predict(handle_file('scan.png'), "
                "'{\"box\": [x0, y0, x1, y1], \"adapter\": \"fetal_head\"}', api_name='/segment')` "
                "returns the best mask as a PNG (0 / 255). Keys: `box`, `points` `[[x, y], ...]` with `labels` "
                "(1 positive, 0 negative), `adapter` (a loaded adapter; default none), `multimask`. "
                "Without an adapter give a `box`: the bare backbone refuses points alone."
            )
            with gr.Row():
                api_image = gr.File(label="image", type="filepath", elem_id="usam-api-image")
                api_prompts = gr.Textbox(label="prompts_json", value='{"box": [220, 100, 500, 370]}', elem_id="usam-api-prompts")
                api_mask = gr.Image(label="mask", type="numpy", format="png", interactive=False, elem_id="usam-api-mask")
            api_btn = gr.Button("Run segment", elem_id="usam-api-run")

        outs = [state, overlay, candidates, choice, mask_file, status, auto_overlay, probs, auto_summary, measurements,
                prompts]

        def on_upload(file, session):
            # a new image (or x: none) never keeps the previous pixel size: it shows empty or the example's
            view = backend.load(file, session)
            return outputs_of(view, _pixel_size_text(view.session.pixel_size))

        # A click is recorded at once (cheap, in order: one at a time, every trigger runs) and segmented by a
        # flush that follows it (``always_last``: a flush asked for while one is pending runs once after it, and
        # segments every click recorded meanwhile). Before, a click made while the previous one was being
        # answered was dropped (Gradio's default trigger mode runs nothing while the event is pending).
        def on_clicks(session, clicks_json):
            result = backend.record_clicks(session, clicks_json)
            return (gr.skip(), gr.skip()) if result is None else recorded(result)

        def on_key(session, x, y, key_mode):
            if x is None or y is None:
                session.last_status = "Type the pixel X and Y first (0, 0 is the top-left corner)."
                return recorded((gr.skip(), session.last_status, True))
            return recorded(backend.record(session, x, y, key_mode))

        def on_flush(session):
            return outputs_of(backend.flush(session))

        def on_choose(session, evt: gr.SelectData):
            return outputs_of(backend.choose(session, evt.index))

        def on_adapter(session, value):
            view = backend.set_adapter(session, value)
            return outputs_of(view, view.session.mode, view.session.measure_kind)

        # ``from __future__ import annotations`` turns hints into strings: give Gradio the real class so it
        # injects the event data
        on_choose.__annotations__["evt"] = gr.SelectData

        def on_segment(image, prompts_json):
            try:
                return backend.segment(image, prompts_json)
            except UsamError as exc:  # the caller's mistake: one log line, a clean message, no traceback
                log.warning("usam demo: bad /segment request: %s", str(exc).replace("\n", " "))
                raise gr.Error(str(exc), print_exception=False) from None
            except Exception as exc:  # a bug: full traceback in the log, a readable message for the client
                log.exception("usam demo: /segment failed")
                raise gr.Error(_readable(exc), print_exception=False) from exc

        quiet = {"show_progress": "minimal"}
        upload.change(on_upload, [upload, state], outs + [pixel_size], api_visibility="private", **quiet)
        record = {"api_visibility": "private", "show_progress": "hidden", "trigger_mode": "multiple",
                  "concurrency_limit": 1, "concurrency_id": "usam-record"}
        flush = {"api_visibility": "private", "show_progress": "hidden", "trigger_mode": "always_last"}
        app.load(None, None, None, js=CLICKS_JS)
        # the page's clicks on the image (see CLICKS_JS): every change carries all recent ones
        clicks.change(on_clicks, [state, clicks], [overlay, status], **{**record, "trigger_mode": "always_last"}).then(
            on_flush, [state], outs, **flush)
        for btn, key_mode in ((key_pos, MODES[0]), (key_neg, MODES[1]), (key_box, MODES[2])):
            btn.click(lambda s, x, y, m=key_mode: on_key(s, x, y, m), [state, key_x, key_y], [overlay, status],
                      **record).then(on_flush, [state], outs, **flush)
        candidates.select(on_choose, [state], outs, api_visibility="private", **quiet)
        choice.input(lambda s, i: outputs_of(backend.choose(s, i)), [state, choice], outs, api_visibility="private", **quiet)
        undo_btn.click(lambda s: outputs_of(backend.undo(s)), [state], outs, api_visibility="private", **quiet)
        clear_btn.click(lambda s: outputs_of(backend.clear(s)), [state], outs, api_visibility="private", **quiet)
        multimask.change(lambda s, v: outputs_of(backend.set_multimask(s, v)), [state, multimask], outs, api_visibility="private", **quiet)
        adapter.change(on_adapter, [state, adapter], outs + [mode, measure_kind], api_visibility="private")
        # user edits only (``input``): the handlers above set these components without re-triggering them
        for event in (pixel_size.submit, pixel_size.blur):
            event(lambda s, px, k: outputs_of(backend.set_measure(s, px, k)), [state, pixel_size, measure_kind], outs, api_visibility="private", **quiet)
        measure_kind.input(lambda s, px, k: outputs_of(backend.set_measure(s, px, k)), [state, pixel_size, measure_kind], outs, api_visibility="private", **quiet)
        mode.change(lambda s, m: setattr(s, "mode", m) or s, [state, mode], [state], api_visibility="private", **quiet)
        api_btn.click(on_segment, [api_image, api_prompts], api_mask, api_name="segment",
                      api_description="Segment an image from point / box prompts; returns the best mask (PNG, 0 / 255).")
    return app


def launch(
    model=None,
    *,
    adapters: Sequence[str] = (),
    backbone: str | None = None,
    checkpoint: str | None = None,
    device: str | None = None,
    precision: str = "auto",
    host: str = "127.0.0.1",
    port: int | None = 7860,
    examples=None,
    prevent_thread_lock: bool = False,
    quiet: bool = False,
    **launch_kwargs,
):
    """Build (if ``model`` is None) the model, then serve the demo offline; returns the launched ``gr.Blocks``.

    Args:
      model: a :class:`~usam.model.UsamModel`, or ``None`` to build one from ``backbone`` / ``checkpoint`` /
        ``adapters`` / ``device`` / ``precision`` (defaults: bundled LiteMedSAM, no adapter).
      host, port: where to listen (``port=None``: the first free port from 7860).
      examples: image paths or a folder (default: the bundled ``demo/examples``).
      prevent_thread_lock: return at once (server in a background thread; ``app.local_url``, ``app.close()``).
      launch_kwargs: passed to ``gr.Blocks.launch`` (``share`` is always off).
    """
    from ...backbones import DEFAULT_BACKBONE
    from ...model import UsamModel

    if model is None:
        model = UsamModel.from_pretrained(backbone=backbone or DEFAULT_BACKBONE, checkpoint=checkpoint,
                                          adapters=list(adapters), device=device, precision=precision)
    else:
        for ref in adapters:
            model.load_adapter(ref)
    app = build_app(model, examples=examples)
    app.queue(default_concurrency_limit=4)
    launch_kwargs.pop("share", None)
    ex_dirs = sorted({str(p.parent.resolve()) for p in app.usam_backend.examples})
    allowed = list(launch_kwargs.pop("allowed_paths", None) or []) + ex_dirs + [str(app.usam_backend.workdir)]
    launch_kwargs.setdefault("max_file_size", DEMO_MAX_BYTES)
    launch_kwargs.setdefault("ssr_mode", False)
    launch_kwargs.setdefault("mcp_server", False)
    launch_kwargs.setdefault("theme", _theme())
    launch_kwargs.setdefault("css", CSS)
    launch_kwargs.setdefault("js", A11Y_JS)
    app.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=prevent_thread_lock,
               quiet=quiet, allowed_paths=allowed, **launch_kwargs)
    return app


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Options of ``usam demo`` (also used by ``demo/app.py``)."""
    from ...backbones import DEFAULT_BACKBONE

    p = parser or argparse.ArgumentParser(prog="usam demo", description="Interactive ultrasound segmentation demo (Gradio, offline).")
    p.add_argument("--adapters", nargs="*", default=[], metavar="ADAPTER", help="adapter directories or Hub ids (offline) to load; the page starts on the first one")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, help=f"backbone name (default: {DEFAULT_BACKBONE})")
    p.add_argument("--checkpoint", default=None, help="backbone weights file (default: bundled)")
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: the backbone's)")
    p.add_argument("--precision", default="auto", choices=["fp32", "bf16", "auto"],
                   help="encoder precision (auto: bf16 where the hardware has it)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: all; default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--examples", default=None, help="folder of example images (default: bundled)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    launch(adapters=args.adapters, backbone=args.backbone, checkpoint=args.checkpoint, device=args.device,
           precision=args.precision, host=args.host, port=args.port, examples=args.examples)
    return 0
