"""One browser tab's state (:class:`Session`), what every handler returns (:class:`View`), and the page's choices."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

NONE_CHOICE = "none (bare backbone)"
MODES = ("positive point", "negative point", "box (two corners)")
MEASURE_KINDS = ("fetal head (HC, BPD, OFD)", "lesion (long / short axis)")
#: Undo steps kept per session.
MAX_HISTORY = 50
#: Why the bare backbone refuses point-only prompts (shown in the page and raised by the API).
BARE_POINTS_MESSAGE = (
    "the bare LiteMedSAM backbone was trained on boxes only: a point without a box gives no usable mask. "
    "Draw a box (click mode \"box (two corners)\"; points added after it refine it), or choose an organ adapter "
    "for point clicks"
)


@dataclass(repr=False)
class Session:
    """One browser tab's state (kept in a ``gr.State``)."""

    image: np.ndarray | None = None  # (H, W, 3) uint8 RGB
    name: str = ""
    adapter: str | None = None
    mode: str = MODES[0]
    multimask: bool = True
    pixel_size: float | None = None
    measure_kind: str = MEASURE_KINDS[0]
    points: list[list[float]] = field(default_factory=list)  # [[x, y], ...] original-image pixels
    labels: list[int] = field(default_factory=list)  # 1 positive, 0 negative
    box: list[float] | None = None  # [x0, y0, x1, y1]
    corner: list[float] | None = None  # first corner of a box being drawn
    history: list[dict] = field(default_factory=list)
    # result of the current prompts
    mask_input: np.ndarray | None = None  # (1, 256, 256) logits fed to get the current result
    masks: np.ndarray | None = None  # (M, H, W) bool
    scores: np.ndarray | None = None  # (M,) the decoder's predicted IoUs: they choose the candidate
    quality: np.ndarray | None = None  # (M,) the quality estimate shown (Predictor.quality: the adapter's setting)
    quality_kind: str = "predicted"  # which estimate ``quality`` is (decoder.quality)
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
        self.mask_input = self.masks = self.scores = self.quality = self.lowres = None
        self.selected = 0

    @property
    def multimask_now(self) -> bool:
        """Three candidates for the current prompts: the *Three candidates* option for the ambiguous prompt, one
        click alone. A box and refining clicks (a second point, points on a box) use the single-mask output, SAM's
        convention and the one the adapters were trained and benchmarked with: picking among the multimask
        candidates after several clicks undid the corrections (Dice fell with each negative click), and LiteMedSAM's
        box path was trained single-mask (40 breast val boxes: its three candidates' best-scored IoU 0.864 against
        0.894, predicted IoU off by 0.60 against 0.03)."""
        return bool(self.multimask) and len(self.points) == 1 and self.box is None

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
    overlay: np.ndarray | None  # (H, W, 3) uint8: prompts and chosen mask on the image
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
