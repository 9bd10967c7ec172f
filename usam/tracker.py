"""Follow a prompted object through the frames of a loop (cine / video / multi-frame DICOM).

>>> tracker = usam.Tracker(model)                        # bare LiteMedSAM, or Tracker(model, adapter="carotid")
>>> tracker.add_prompt(0, points=[[x, y]], labels=[1])   # a click on frame 0 ((x, y) original pixels)
>>> result = tracker.propagate(frames)                   # frames: list of (H, W[, C]) arrays, or (T, H, W[, C])
>>> result.masks[t], result.confidence[t], result.lost[t]
>>> tracker.add_prompt(40, box=[x0, y0, x1, y1])        # a correction on frame 40
>>> result = tracker.propagate(frames, start=40)         # re-propagates from frame 40 only

**Method** (no learned memory attention, as MedSAM2 / SAM 2 have; the frozen encoder's per-frame embedding and
SAM's prompt decoder only, with a memory of what the object looks like in that embedding). Each prompted frame gets
its mask from its prompt. Every other frame is *re-prompted from its neighbour's mask*, with one candidate box per
place the object may have gone:

1. **image motion**: the previous mask's box moved by the image motion around it (normalised cross-correlation of
   the previous frame's patch in the new frame, :func:`estimate_shift`; a few ms);
2. **re-detection** (:attr:`TrackSettings.redetect`): the tracker remembers the object as a :class:`Template` (the
   embedding cells around its box, and the mean embedding inside its mask) of the *prompted* frame, kept for the
   whole loop, and of the *latest confident* frame (SAM 2 keeps the prompted frame plus recent frames in its memory
   bank). Each template is cross-correlated with the new frame's whole ``64 x 64`` embedding grid
   (:func:`match_template`, one cross-correlation through the FFT); a peak away from the motion box (by more than
   :attr:`TrackSettings.redetect_radius` of the box size) adds a box of the previous size there.

Each candidate box is grown by :attr:`TrackSettings.margin` of its size on each side, decoded and re-prompted once
with its own tight box (:attr:`TrackSettings.refine`); the most confident candidate wins. Usually the candidates
agree and one box is decoded (2 decoder calls per frame); where they do not (a jump, a neighbour captured), each is
decoded. Optional: the previous mask's innermost point as a click, the previous low-res logits as ``mask_input``,
three candidates per box.

**Why** (``202201121748100022VAS``, looked at frame by frame): the probe slides along the neck and the lumen jumps by
up to 160 px between the sparse frames, more than its own width (113-159 px); the motion box alone then followed
the previous place onto a dark neighbour below-right (frame 35) and never came back (Dice 0 from frame 48 on); at
frames 8-13 the decoder answered a part of the lumen and the tight-box refinement kept the part. The template of
the prompted frame finds the lumen again anywhere in the frame (its correlation peak was within half a box of the
expert mask's centre on 89 / 90, 53 / 54 and 42 / 52 frames of the three sequences); the appearance term below
rejects the neighbour.

What was chosen on what (bare LiteMedSAM, one click on frame 0, mean Dice over all frames; tuned on
``202201121748100022VAS``; ``...0038VAS`` was then looked at once, see below; ``...0033VAS`` never): before
(motion box only) 0.379 / 0.926 / 0.924 (0022 / 0033 / 0038); re-detection with the appearance term measured against
the prompted frame only: 0.889 / 0.926 / 0.765 (on 0038 a featureless dark region at the left edge, where the
prompted frame's lumen lay, looked more like it than the grown lumen did: 9 frames lost); against the mean of the
prompted and the latest confident frame (the default): **0.875 / 0.926 / 0.924**. A wider box (+30 %) tried where
the winner's area changed by > 20 % from its neighbour's (against the shrinking of frames 8-13): 0.881 / 0.902 /
0.758, so it is not used. Earlier, without re-detection: +10 % alone 0.26 on 0022 (no motion compensation);
motion + one tight-box refinement 0.76 on its first 14 frames (two: 0.72; +0 %: 0.47); a retry with other margins
below a confidence 0.906 on its first 30 frames but 0.35 over all 90. Points and ``mask_input`` were not measured on
the bare backbone (it was trained on boxes only) and are off.

A click without a box on a model whose prompt decoder was never trained on clicks (the bare LiteMedSAM backbone:
one click gives Dice ~0.03) is turned into a box first: boxes of several sizes centred on the click are decoded,
each result is re-prompted with its own tight box, and the most self-consistent mask containing the click wins
(:func:`click_to_mask`). With an adapter's tuned decoder a click is answered directly.

**Frames between two prompted frames** take the result propagated from the *nearer* prompted frame (forwards
from the earlier one up to the midpoint, backwards from the later one after it; a tie goes to the earlier one), so
a correction on frame ``k`` re-propagates the frames closer to ``k`` than to any other prompt, in both directions,
and leaves every other frame as it was. Frames before the first prompt are propagated backwards from it, frames
after the last one forwards (``direction`` restricts this).

**Confidence** per frame is ``predicted IoU x temporal consistency x appearance``: the consistency is the area
ratio ``min(a, b) / max(a, b)`` of the frame's mask and its neighbour's (a vessel changes size slowly; a mask that
jumps in size or vanishes is suspect), the appearance the mean cosine between the mask's mean embedding and the
remembered ones (prompted and latest confident frame; :attr:`TrackSettings.appearance` is its exponent, 0: off).
Prompted frames get their prompt's predicted IoU (1 for a given mask). A frame whose confidence is below
:attr:`TrackSettings.lost_threshold` (or whose mask is empty) is flagged ``lost`` and not remembered; the next frame
is then prompted from the *last good* frame's box and logits (the tracker keeps searching there, and the templates
search the whole frame) instead of from the lost mask, and tracking resumes when confidence recovers.
``stop_when_lost=True`` leaves the remaining frames of that direction empty instead.

Each frame is encoded once through :meth:`usam.UsamModel.embed` (cached by content); :meth:`Tracker.propagate`
raises the model's embedding-cache capacity to the number of frames so a second ``propagate`` (after a correction)
encodes nothing again (about 4 MB per frame for LiteMedSAM's 256x64x64 fp32 embedding).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .backbones import LOW_RES
from .errors import AdapterError, InputImageError, PromptError, short_repr
from .io import to_rgb_uint8
from .ops.clicks import innermost_point
from .ops.masks import iou, mask_box
from .predictor import Predictor, check_boxes, check_points

DIRECTIONS = ("both", "forward", "backward")


# ------------------------------------------------------------------------------------------ mask helpers
def expand_box(box: np.ndarray, margin: float, hw: tuple[int, int]) -> np.ndarray:
    """``box`` grown by ``margin`` x its width / height on each side, clipped to an ``(H, W)`` image."""
    h, w = hw
    bw, bh = box[2] - box[0], box[3] - box[1]
    out = np.array([box[0] - margin * bw, box[1] - margin * bh, box[2] + margin * bw, box[3] + margin * bh])
    out = np.clip(out, 0, [w, h, w, h])
    if out[2] - out[0] < 1:
        out[2] = min(w, out[0] + 1)
    if out[3] - out[1] < 1:
        out[3] = min(h, out[1] + 1)
    return out


def estimate_shift(prev: np.ndarray, cur: np.ndarray, box: np.ndarray, context: float = 0.25, search: float = 0.75,
                   scale: float = 0.5) -> tuple[float, float]:
    """``(dx, dy)`` pixels the content around ``box`` moved from frame ``prev`` to frame ``cur`` (greyscale ``(H, W)``).

    Normalised cross-correlation (``cv2.matchTemplate``) of the previous frame's patch (the box grown by ``context``
    of its size on each side) over a window of the new frame ``search`` x the box size larger on each side, on images
    downscaled by ``scale``: a few milliseconds. ``(0, 0)`` when the patch is flat or the window too small.
    """
    h, w = prev.shape
    t = expand_box(box, context, (h, w))
    win = expand_box(box, context + search, (h, w))
    tx0, ty0, tx1, ty1 = np.round(t * scale).astype(int)
    wx0, wy0, wx1, wy1 = np.round(win * scale).astype(int)
    a = cv2.resize(prev, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    b = cv2.resize(cur, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    tmpl, region = a[ty0:ty1, tx0:tx1], b[wy0:wy1, wx0:wx1]
    if tmpl.size == 0 or tmpl.std() < 1e-3 or region.shape[0] <= tmpl.shape[0] or region.shape[1] <= tmpl.shape[1]:
        return 0.0, 0.0
    score = cv2.matchTemplate(region, tmpl, cv2.TM_CCOEFF_NORMED)
    _, _, _, (mx, my) = cv2.minMaxLoc(score)
    return (wx0 + mx - tx0) / scale, (wy0 + my - ty0) / scale


def area_ratio(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = int(np.count_nonzero(a)), int(np.count_nonzero(b))
    return 1.0 if max(na, nb) == 0 else min(na, nb) / max(na, nb)


def mask_logits(mask: np.ndarray, geometry) -> np.ndarray:
    """``(1, 256, 256)`` low-res logits standing for a given binary mask (+-10 inside / outside)."""
    m = geometry.mask_to_input(mask.astype(np.float32), LOW_RES).numpy()
    return ((m - 0.5) * 20.0)[None].astype(np.float32)


# ------------------------------------------------------------------------------------------ appearance memory
@dataclass(frozen=True)
class Template:
    """The object's appearance in one frame's image embedding (the tracker's memory of that frame).

    Attributes:
      patch: ``(C, h, w)`` the embedding cells around the object's box (grown by ``context`` of its size on each
        side), each cell's vector unit-normalised, then the patch mean-centred.
      centre: ``(cx, cy)`` of the object's box inside ``patch``, in cells.
      prototype: ``(C,)`` unit-norm mean embedding inside the mask (what the object itself looks like).
      area: mask area in original pixels.
    """

    patch: torch.Tensor
    centre: tuple[float, float]
    prototype: torch.Tensor
    area: int
    _spectra: dict = field(default_factory=dict, compare=False, repr=False)

    def spectrum(self, grid: tuple[int, int]) -> torch.Tensor:
        """``(C, gh, gw // 2 + 1)`` the patch's 2-D FFT zero-padded to a ``(gh, gw)`` grid, computed once per size."""
        if grid not in self._spectra:
            self._spectra[grid] = torch.fft.rfft2(self.patch, s=grid)
        return self._spectra[grid]


class FrameCells:
    """One frame's embedding as the appearance memory reads it, computed once per frame (every template match,
    prototype and template of that frame shares it).

    Attributes:
      embedded: the frame's :class:`~usam.embedding.Embedded`.
      cells: ``(C, gh, gw)`` its embedding cells, each unit-normalised.
      cell: the size of one cell in model-input pixels.
    """

    def __init__(self, embedded):
        self.embedded = embedded
        self.cells = F.normalize(embedded.embedding[0].float(), dim=0)
        self.cell = embedded.geometry.input_size / self.cells.shape[-1]
        self._spectrum = None

    def spectrum(self) -> torch.Tensor:
        """``(C, gh, gw // 2 + 1)`` the cells' 2-D FFT (for :func:`match_template`), computed on first use."""
        if self._spectrum is None:
            self._spectrum = torch.fft.rfft2(self.cells)
        return self._spectrum


def frame_cells(frame) -> FrameCells:
    """``frame`` as :class:`FrameCells` (an :class:`~usam.embedding.Embedded` is wrapped; FrameCells pass through)."""
    return frame if isinstance(frame, FrameCells) else FrameCells(frame)


def _mask_cells(frame: FrameCells, mask: np.ndarray) -> torch.Tensor:
    """``(gh, gw)`` fraction of each embedding cell covered by ``mask`` (original ``(H, W)``)."""
    return frame.embedded.geometry.mask_to_input(mask.astype(np.float32), frame.cells.shape[-1])


def _prototype(e: torch.Tensor, w: torch.Tensor) -> torch.Tensor | None:
    """``(C,)`` unit-norm mean of cells ``e (C, gh, gw)`` weighted by coverage ``w (gh, gw)`` (``None`` if empty)."""
    if float(w.sum()) < 1e-3:
        return None
    return F.normalize((e * w).sum((1, 2)), dim=0)


def prototype(frame, mask: np.ndarray) -> torch.Tensor | None:
    """``(C,)`` unit-norm mean embedding of the cells inside ``mask`` (``None`` for an empty mask); ``frame``: an
    :class:`~usam.embedding.Embedded` or its :class:`FrameCells`."""
    frame = frame_cells(frame)
    return _prototype(frame.cells, _mask_cells(frame, mask))


def make_template(frame, mask: np.ndarray, context: float = 0.25) -> Template | None:
    """The :class:`Template` of the object ``mask`` (original ``(H, W)``) in ``frame`` (an
    :class:`~usam.embedding.Embedded` or its :class:`FrameCells`; ``None`` if the mask is empty)."""
    frame = frame_cells(frame)
    e = frame.cells
    cover = _mask_cells(frame, mask)
    proto = _prototype(e, cover)
    if proto is None:
        return None
    w = cover.numpy()
    ys, xs = np.nonzero(w > 0.5) if (w > 0.5).any() else np.nonzero(w > 0)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    gh, gw = w.shape
    py0, px0 = max(0, y0 - round(context * (y1 - y0))), max(0, x0 - round(context * (x1 - x0)))
    py1, px1 = min(gh, y1 + round(context * (y1 - y0))), min(gw, x1 + round(context * (x1 - x0)))
    patch = e[:, py0:py1, px0:px1]
    patch = patch - patch.mean((1, 2), keepdim=True)
    centre = ((x0 + x1) / 2 - px0, (y0 + y1) / 2 - py0)
    return Template(patch.contiguous(), centre, proto, int(np.count_nonzero(mask)))


def match_template(frame, template: Template) -> tuple[float, float, float] | None:
    """Where ``template``'s object is in ``frame`` (an :class:`~usam.embedding.Embedded` or its
    :class:`FrameCells`): ``(x, y)`` original pixels of its box centre and the match score (mean cosine of the
    patch's cells, in [-1, 1]). Cross-correlation over the whole embedding grid (``(C, 64, 64)`` against a
    ``(C, h, w)`` patch) through the FFT; the frame's spectrum is computed once per frame and the template's once
    per grid size, so a second template on the same frame costs one inverse FFT. ``None`` if the patch does not fit."""
    frame = frame_cells(frame)
    e, p = frame.cells, template.patch
    if p.shape[1] > e.shape[1] or p.shape[2] > e.shape[2]:
        return None
    corr = _correlate(frame, template)
    i = int(torch.argmax(corr))
    y, x = divmod(i, corr.shape[1])
    score = float(corr[y, x]) / (p.shape[1] * p.shape[2])
    xy = (np.array([x + template.centre[0], y + template.centre[1]]) * frame.cell)[None]
    ox, oy = frame.embedded.geometry.points_to_original(xy)[0]
    return float(ox), float(oy), score


def _correlate(frame: FrameCells, template: Template) -> torch.Tensor:
    """``(gh - h + 1, gw - w + 1)`` valid cross-correlation of the frame's cells ``(C, gh, gw)`` with the template's
    patch ``(C, h, w)``, summed over channels (what ``F.conv2d(e[None], p[None])`` gives), through the FFT."""
    gh, gw = frame.cells.shape[-2:]
    p = template.patch
    spec = (frame.spectrum() * template.spectrum((gh, gw)).conj()).sum(0)
    full = torch.fft.irfft2(spec, s=(gh, gw))  # circular; no wrap-around in the valid part
    return full[: gh - p.shape[1] + 1, : gw - p.shape[2] + 1]


# ------------------------------------------------------------------------------------------ settings / data
@dataclass(frozen=True)
class TrackSettings:
    """How each frame is re-prompted from its neighbour (see the module notes for what was measured).

    Attributes:
      margin: the previous mask's box is grown by this fraction of its width / height on each side.
      motion: move that box first by the image motion around it (:func:`estimate_shift`, template matching).
      points: add the previous mask's innermost point as a positive click (only with a click-trained decoder).
      mask_input: feed the previous low-res logits back as ``mask_input``.
      multimask: ask for three candidates and keep the best (by predicted IoU x IoU with the previous mask).
      refine: re-prompt the result this many more times with its own tight box (0: none).
      redetect: also look for the object where the remembered templates (prompted frame, latest confident frame)
        match the new frame's embedding best, and decode a box there too (:func:`match_template`).
      redetect_radius: a template's match adds a candidate only when its centre is farther than this fraction of
        the box size from every other candidate's.
      appearance: exponent of the appearance term in the confidence (0: predicted IoU x area consistency only).
      lost_threshold: confidence below which a frame is flagged ``lost``.
      stop_when_lost: leave the rest of a direction empty after a lost frame instead of searching on.
    """

    margin: float = 0.1
    motion: bool = True
    points: bool = False
    mask_input: bool = False
    multimask: bool = False
    refine: int = 1
    redetect: bool = True
    redetect_radius: float = 0.25
    appearance: float = 1.0
    lost_threshold: float = 0.5
    stop_when_lost: bool = False

    @classmethod
    def for_model(cls, model) -> TrackSettings:
        """Defaults for ``model``'s active decoder: the bare backbone's box path, or an adapter's tuned decoder."""
        # one set for both until a carotid adapter's tuned decoder is measured (points / mask_input may then help)
        return cls()


def click_trained(model) -> bool:
    """Whether ``model``'s active prompt decoder was tuned on clicks (an adapter's decoder), unlike bare LiteMedSAM."""
    adapter = getattr(model, "adapter", None)
    return adapter is not None and adapter.decoder is not None


@dataclass
class Prompt:
    """What the user gave on one frame: clicks and / or a box, a mask, or ``auto`` (the adapter's automatic mask)."""

    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    box: np.ndarray | None = None
    mask: np.ndarray | None = None
    auto: str | bool = False


@dataclass
class TrackResult:
    """Per-frame output of :meth:`Tracker.propagate` for a loop of ``T`` frames of ``H x W`` pixels.

    Attributes:
      masks: ``(T, H, W)`` bool, at the frames' original resolution (all False where not tracked).
      confidence: ``(T,)`` float in [0, 1] (NaN where not tracked).
      lost: ``(T,)`` bool: confidence below the threshold or an empty mask.
      scores: ``(T,)`` the decoder's predicted IoU of each mask (NaN where not tracked).
      source: ``(T,)`` int: the prompted frame each result was propagated from (-1: not tracked).
      boxes: ``(T, 4)`` xyxy (x1 / y1 exclusive) extent of each mask in original pixels (NaN if empty / untracked).
      timing: seconds spent in the encoder (``encode_s``, new frames only), in prompting / decoding / mask work
        (``propagate_s``), and the number of frames encoded (``encoded``) and propagated (``frames``) by the last call.
    """

    masks: np.ndarray
    confidence: np.ndarray
    lost: np.ndarray
    scores: np.ndarray
    source: np.ndarray
    boxes: np.ndarray
    timing: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.masks)

    @property
    def tracked(self) -> np.ndarray:
        """``(T,)`` bool: frames that have a result."""
        return self.source >= 0

    def masks_uint8(self) -> np.ndarray:
        """``(T, H, W)`` uint8 masks, 0 / 255 (ready to write as PNGs)."""
        return self.masks.astype(np.uint8) * 255


@dataclass
class _State:
    mask: np.ndarray
    logits: np.ndarray
    score: float


# ------------------------------------------------------------------------------------------ decoding
def _best(masks, scores, prev: np.ndarray | None) -> int:
    if prev is None or len(scores) == 1:
        return int(np.argmax(scores))
    return int(np.argmax([s * (0.5 + 0.5 * iou(m, prev)) for m, s in zip(masks, scores)]))


def refine_with_box(predictor: Predictor, state: _State, rounds: int) -> _State:
    """Re-prompt ``state``'s mask with its own tight box ``rounds`` times (keeps the previous one if one empties)."""
    for _ in range(rounds):
        box = mask_box(state.mask)
        if box is None:
            break
        m, s, low = predictor.predict(box=box, multimask_output=False)
        if not m[0].any():
            break
        state = _State(m[0], low[0], float(s[0]))
    return state


def click_to_mask(predictor: Predictor, point: tuple[float, float], sizes=(0.04, 0.06, 0.09, 0.13, 0.18, 0.25)) -> _State:
    """A mask from one positive click for a decoder trained on boxes only (bare LiteMedSAM).

    Square boxes centred on the click, each side ``size x`` the image's shorter side, are decoded in one batch; each
    mask that contains the click is re-prompted with its own tight box, and the one with the highest
    ``predicted IoU x IoU(first mask, re-prompted mask)`` (a self-consistent box) is returned.
    """
    h, w = predictor.original_size
    x, y = point
    side = min(h, w)
    boxes = []
    for s in sizes:
        r = s * side / 2
        boxes.append([max(0.0, x - r), max(0.0, y - r), min(float(w), x + r + 1), min(float(h), y + r + 1)])
    masks, scores, lows = predictor.predict(box=np.array(boxes), multimask_output=False)
    best, best_key = None, -1.0
    xi, yi = round(min(max(x, 0), w - 1)), round(min(max(y, 0), h - 1))
    for k in range(len(boxes)):
        m = masks[k, 0]
        if not m[yi, xi]:
            continue
        first = _State(m, lows[k, 0], float(scores[k, 0]))
        again = refine_with_box(predictor, first, 1)
        key = again.score * iou(first.mask, again.mask)
        if key > best_key:
            best, best_key = again, key
    if best is None:  # no box gave a mask on the click: take the best-scored one anyway
        k = int(np.argmax(scores[:, 0]))
        best = refine_with_box(predictor, _State(masks[k, 0], lows[k, 0], float(scores[k, 0])), 1)
    return best


# ------------------------------------------------------------------------------------------ the tracker
class Tracker:
    """Prompt some frames of a loop, propagate the object to every frame (see the module notes).

    Args:
      model: a :class:`usam.UsamModel`.
      adapter: name of a loaded adapter whose decoder answers the prompts (``None``: the model's active adapter at
        each :meth:`propagate`, the bare backbone if none is active). The model's active adapter is restored after.
      settings: :class:`TrackSettings` (default: :meth:`TrackSettings.for_model` for the decoder in use).
      progress: show a tqdm progress bar while propagating.
    """

    def __init__(self, model, adapter: str | None = None, settings: TrackSettings | None = None, progress: bool = True):
        from .model import UsamModel

        if not isinstance(model, UsamModel):
            raise AdapterError(f"Tracker needs a usam.UsamModel (e.g. usam.load()), got {type(model).__name__}")
        if adapter is not None and adapter not in model.adapters:
            raise AdapterError(f"no adapter named {adapter!r} is loaded (loaded: {sorted(model.adapters) or 'none'})")
        self.model = model
        self.adapter = adapter
        self.settings = settings
        self.progress = progress
        self.prompts: dict[int, Prompt] = {}
        self.result: TrackResult | None = None
        self._n_frames: int | None = None
        self.debug: list | None = None  # a list: every candidate of every frame is appended to it (development)

    # ---------------------------------------------------------------- prompts
    def add_prompt(self, frame_index: int, points=None, labels=None, box=None, mask=None, auto: str | bool = False) -> None:
        """Prompt (or correct) frame ``frame_index``; replaces an earlier prompt on that frame.

        Args:
          frame_index: 0-based index into the frames given to :meth:`propagate`.
          points: ``(N, 2)`` (x, y) original pixels, ``N <= 64``; with ``labels`` ``(N,)`` 1 positive / 0 negative
            (default: all positive).
          box: ``(4,)`` x0 y0 x1 y1 original pixels.
          mask: ``(H, W)`` binary mask of the object on that frame (bool / 0-1 / 0-255), used as it is; not combined
            with points or a box.
          auto: ``True`` or a task name: the active adapter's automatic mask of that frame (its only segmentation
            task when ``True``); needs an adapter.

        Coordinates are checked against the frame size when :meth:`propagate` receives the frames.

        Raises:
          PromptError: no prompt, a malformed one, or a negative / non-integer frame index.
        """
        idx = self._check_index(frame_index)
        given = [points is not None, box is not None, mask is not None, bool(auto)]
        if not any(given) and labels is None:
            raise PromptError(f"frame {idx}: give a prompt: points (+ labels), a box, a mask or auto=True")
        if (mask is not None or auto) and (points is not None or box is not None or labels is not None):
            raise PromptError(f"frame {idx}: a mask or auto prompt stands alone: do not combine it with points or a box")
        if mask is not None and auto:
            raise PromptError(f"frame {idx}: give either mask= or auto=, not both")
        prompt = Prompt(auto=auto)
        if points is not None or labels is not None:
            if points is None:
                raise PromptError(f"frame {idx}: labels given without points: give points as (N, 2) (x, y) pixels")
            pts = np.asarray(points, dtype=np.float64) if not isinstance(points, np.ndarray) else points
            if pts.ndim == 1 and pts.shape[0] == 2:
                pts = pts[None]
            if labels is None:
                labels = np.ones(len(pts) if pts.ndim == 2 else 0, dtype=np.int64)
            # format only (the image size is not known yet): a huge box stands in for the frame
            prompt.points, prompt.labels = check_points(pts, labels, (1 << 30, 1 << 30))
        if box is not None:
            prompt.box = check_boxes(box, (1 << 30, 1 << 30))
            if prompt.box.shape[0] != 1:
                raise PromptError(f"frame {idx}: one box per frame, got {prompt.box.shape[0]}")
            prompt.box = prompt.box[0]
        if mask is not None:
            m = np.asarray(mask)
            if m.ndim != 2:
                raise PromptError(f"frame {idx}: mask must be (H, W), got shape {m.shape}")
            if m.dtype != bool and not np.isin(np.unique(m), (0, 1, 255)).all():
                raise PromptError(f"frame {idx}: mask must be binary (bool, 0/1 or 0/255), got values {short_repr(np.unique(m))}")
            if not m.any():
                raise PromptError(f"frame {idx}: the mask is empty: give the object's mask, or a click or box")
            prompt.mask = m > 0
        self.prompts[idx] = prompt

    def remove_prompt(self, frame_index: int) -> None:
        """Forget the prompt on ``frame_index`` (the next :meth:`propagate` recomputes without it)."""
        idx = self._check_index(frame_index)
        if idx not in self.prompts:
            raise PromptError(f"frame {idx} has no prompt (prompted frames: {sorted(self.prompts) or 'none'})")
        del self.prompts[idx]

    def reset(self) -> None:
        """Forget every prompt and result."""
        self.prompts.clear()
        self.result = None
        self._n_frames = None

    @staticmethod
    def _check_index(frame_index) -> int:
        if isinstance(frame_index, bool) or not isinstance(frame_index, (int, np.integer)):
            raise PromptError(f"frame index must be an integer, got {short_repr(frame_index)}")
        if frame_index < 0:
            raise PromptError(f"frame index {int(frame_index)} is negative: frames are numbered from 0")
        return int(frame_index)

    # ---------------------------------------------------------------- propagation
    def propagate(self, frames, direction: str = "both", start: int | None = None) -> TrackResult:
        """Propagate the prompts through ``frames``.

        Args:
          frames: a list of ``(H, W)`` / ``(H, W, 3|4)`` images (any dtype :func:`usam.io.to_rgb_uint8` takes), or
            one ``(T, H, W[, C])`` array; all frames the same size, in time order.
          direction: ``both``, ``forward`` (only frames after a prompted frame, up to the next one) or ``backward``.
          start: a prompted frame: re-propagate only the frames that prompt owns (see the module notes), keeping the
            previous results elsewhere (after a correction on ``start``). ``None``: every prompt.

        Returns:
          :class:`TrackResult` (also kept as ``self.result``).

        Raises:
          InputImageError: no frames, an unreadable frame, frames of different sizes.
          PromptError: no prompt, a prompted frame out of range, a prompt outside the frame, a ``start`` that is not a
            prompted frame, an unknown ``direction``.
        """
        from tqdm.auto import tqdm

        if direction not in DIRECTIONS:
            raise PromptError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
        frames = self._check_frames(frames)
        n = len(frames)
        hw = frames[0].shape[:2]
        self._check_prompts(n, hw)
        if start is not None:
            start = self._check_index(start)
            if start not in self.prompts:
                raise PromptError(f"start={start} is not a prompted frame (prompted: {sorted(self.prompts)})")

        model = self.model
        previous_adapter = model.active_adapter
        if self.adapter is not None:
            model.set_adapter(self.adapter)
        try:
            for k, p in sorted(self.prompts.items()):
                if p.auto:
                    self._auto_task(k, p.auto)
            settings = self.settings or TrackSettings.for_model(model)
            model.cache.capacity = max(model.cache.capacity, n + 2)
            keep = self.result if (self.result is not None and self._n_frames == n and len(self.result) == n
                                   and self.result.masks.shape[1:] == hw) else None
            res = keep if keep is not None else _empty_result(n, hw)
            if keep is not None and start is None:
                res = _empty_result(n, hw)
            plan = self._plan(n, direction, start)
            timing = {"encode_s": 0.0, "propagate_s": 0.0, "encoded": 0, "frames": 0}
            predictor = Predictor(model)
            clicks = click_trained(model)
            total = sum(1 + sum(len(c) for c in chains) for _, chains in plan)  # prompted frames + followed frames
            bar = tqdm(total=total, desc="track", unit="frame", disable=not self.progress)
            try:
                for k, chains in plan:
                    for t in [k] + [t for c in chains for t in c]:
                        res.masks[t] = False
                        res.confidence[t] = res.scores[t] = np.nan
                        res.lost[t] = False
                        res.source[t] = -1
                        res.boxes[t] = np.nan
                    seed = self._prompted(predictor, frames, k, clicks, timing)
                    self._store(res, k, k, seed, 1.0 if self.prompts[k].mask is not None else seed.score, settings)
                    bar.update(1)
                    for chain in chains:
                        self._follow(predictor, frames, k, seed, chain, res, settings, timing, bar)
            finally:
                bar.close()
        finally:
            if self.adapter is not None:
                model.set_adapter(previous_adapter)
        res.timing = timing
        self.result, self._n_frames = res, n
        return res

    def _plan(self, n: int, direction: str, start: int | None) -> list[tuple[int, list[list[int]]]]:
        """``[(prompted frame, [backward chain, forward chain]), ...]``: frames each prompt propagates to, in order."""
        keys = sorted(self.prompts)
        plan = []
        for i, k in enumerate(keys):
            prev_k = keys[i - 1] if i > 0 else None
            next_k = keys[i + 1] if i + 1 < len(keys) else None
            chains = []
            if direction in ("both", "backward"):
                if prev_k is None:
                    lo = 0
                elif direction == "both":
                    lo = (prev_k + k) // 2 + 1  # the midpoint goes to the earlier prompt
                else:
                    lo = prev_k + 1
                chains.append(list(range(k - 1, lo - 1, -1)))
            if direction in ("both", "forward"):
                if next_k is None:
                    hi = n - 1
                elif direction == "both":
                    hi = (k + next_k) // 2
                else:
                    hi = next_k - 1
                chains.append(list(range(k + 1, hi + 1)))
            if start is None or k == start:
                plan.append((k, [c for c in chains if c]))
        return plan

    def _embed(self, predictor: Predictor, frame: np.ndarray, timing: dict) -> None:
        before = self.model.encoder_calls
        t0 = time.perf_counter()
        predictor.set_image(frame)
        if self.model.encoder_calls > before:
            timing["encode_s"] += time.perf_counter() - t0
            timing["encoded"] += 1

    def _prompted(self, predictor: Predictor, frames, k: int, clicks: bool, timing: dict) -> _State:
        """The mask of prompted frame ``k``."""
        p = self.prompts[k]
        self._embed(predictor, frames[k], timing)
        t0 = time.perf_counter()
        geo = predictor._embedded.geometry
        if p.mask is not None:
            state = _State(p.mask, mask_logits(p.mask, geo)[0], 1.0)
        elif p.auto:
            state = self._auto(frames[k], k, p.auto, geo)
            state = refine_with_box(predictor, state, 1) if state.mask.any() else state
        elif p.box is None and not clicks:
            pos = p.points[p.labels == 1]
            if len(pos) == 0:
                raise PromptError(f"frame {k}: only negative clicks and no box: add a positive click or a box")
            state = click_to_mask(predictor, tuple(pos[0]))
            if len(p.points) > 1:  # further clicks refine the box-derived mask
                m, s, low = predictor.predict(point_coords=p.points, point_labels=p.labels, box=mask_box(state.mask),
                                              mask_input=state.logits[None], multimask_output=False)
                state = _State(m[0], low[0], float(s[0]))
        else:
            multi = p.box is None and len(p.points) == 1
            m, s, low = predictor.predict(point_coords=p.points, point_labels=p.labels, box=p.box, multimask_output=multi)
            b = int(np.argmax(s))
            state = _State(m[b], low[b], float(s[b]))
        timing["propagate_s"] += time.perf_counter() - t0
        return state

    def _auto_task(self, k: int, task) -> str:
        """The segmentation task of the active adapter that answers ``auto`` on frame ``k``."""
        adapter = self.model.adapter
        if adapter is None:
            raise PromptError(f"frame {k}: auto=True needs an adapter with a segmentation head (the bare backbone has none)")
        seg = [t for t, spec in adapter.tasks.items() if spec.kind == "segmentation"]
        if task is True:
            if len(seg) != 1:
                raise PromptError(f"frame {k}: adapter {adapter.name!r} has segmentation tasks {seg}: name one with auto='TASK'")
            task = seg[0]
        if task not in seg:
            raise PromptError(f"frame {k}: adapter {adapter.name!r} has no segmentation task {task!r} (has {seg})")
        return task

    def _auto(self, frame, k: int, task, geo) -> _State:
        task = self._auto_task(k, task)
        m = np.asarray(self.model.predict(frame).masks[task]) > 0
        return _State(m, mask_logits(m, geo)[0], 1.0 if m.any() else 0.0)

    def _follow(self, predictor, frames, k, seed: _State, chain, res: TrackResult, settings: TrackSettings, timing, bar) -> None:
        """Propagate from prompted frame ``k`` along ``chain`` (consecutive frame indices, one direction)."""
        prev = good = seed
        prev_t = good_t = k
        hw = seed.mask.shape
        grey = _Grey(frames)
        memory = _Memory(make_template(self.model.embed(frames[k]), seed.mask) if seed.mask.any() else None)
        for t in chain:
            self._embed(predictor, frames[t], timing)
            t0 = time.perf_counter()
            cells = FrameCells(predictor._embedded)  # frame t's cells: every match / prototype / template shares them
            ref, ref_t = (prev, prev_t) if prev.mask.any() else (good, good_t)
            if mask_box(ref.mask) is None:  # nothing to follow (an empty seed)
                state, conf = _State(np.zeros(hw, bool), ref.logits, 0.0), 0.0
            else:
                state, conf = self._step(predictor, grey, cells, ref, ref_t, t, memory, settings)
            lost = self._store(res, t, k, state, conf, settings)
            if not lost:
                memory.remember(cells, state.mask)
            timing["propagate_s"] += time.perf_counter() - t0
            timing["frames"] += 1
            bar.update(1)
            if lost:
                if settings.stop_when_lost:
                    break
                prev, prev_t = good, good_t  # keep searching from the last good frame's box
            else:
                prev = good = state
                prev_t = good_t = t

    def _step(self, predictor, grey, cells: FrameCells, ref: _State, ref_t: int, t: int, memory: _Memory,
              settings: TrackSettings) -> tuple[_State, float]:
        """Frame ``t``'s mask from the reference frame ``ref_t``'s mask: one candidate box per place the object may
        have gone (image motion, and with ``settings.redetect`` the memory's matches), the most confident wins."""
        hw = ref.mask.shape
        box = mask_box(ref.mask)
        candidates = [_moved(box, grey[ref_t], grey[t], hw) if settings.motion else box]
        if settings.redetect:
            size = box[2:] - box[:2]
            for tmpl in memory.templates():
                hit = match_template(cells, tmpl)
                if hit is None:
                    continue
                c = np.array(hit[:2])
                near = [np.all(np.abs((b[:2] + b[2:]) / 2 - c) < settings.redetect_radius * size) for b in candidates]
                if not any(near):
                    candidates.append(np.clip(np.r_[c - size / 2, c + size / 2], 0, [hw[1], hw[0], hw[1], hw[0]]))
        best, best_conf = None, -1.0
        for cand in candidates:
            state = self._decode_box(predictor, cand, ref, settings)
            conf = self._confidence(cells, state, ref, memory, settings)
            if self.debug is not None:
                self.debug.append({"t": t, "box": cand.tolist(), "score": state.score, "conf": conf,
                                   "area": area_ratio(state.mask, ref.mask), "redetected": cand is not candidates[0],
                                   "appearance": memory.similarity(cells, state.mask)})
            if conf > best_conf:
                best, best_conf = state, conf
        return best, best_conf

    @staticmethod
    def _decode_box(predictor, box: np.ndarray, ref: _State, settings: TrackSettings) -> _State:
        """Decode ``box`` grown by the margin (+ the optional click / ``mask_input``), then refine with tight boxes."""
        hw = ref.mask.shape
        kw = {"box": expand_box(box, settings.margin, hw), "multimask_output": settings.multimask}
        if settings.points:
            kw["point_coords"], kw["point_labels"] = np.array([innermost_point(ref.mask)]), np.array([1])
        if settings.mask_input:
            kw["mask_input"] = ref.logits[None]
        m, s, low = predictor.predict(**kw)
        b = _best(m, s, ref.mask)
        return refine_with_box(predictor, _State(m[b], low[b], float(s[b])), settings.refine)

    @staticmethod
    def _confidence(cells: FrameCells, state: _State, ref: _State, memory: _Memory, settings: TrackSettings) -> float:
        """``predicted IoU x area consistency with the reference x appearance`` (see the module notes), in [0, 1]."""
        if not state.mask.any():
            return 0.0
        conf = float(np.clip(state.score, 0, 1)) * area_ratio(state.mask, ref.mask)
        if settings.appearance:
            conf *= float(np.clip(memory.similarity(cells, state.mask), 0, 1)) ** settings.appearance
        return conf

    @staticmethod
    def _store(res: TrackResult, t: int, k: int, state: _State, conf: float, settings: TrackSettings) -> bool:
        res.masks[t] = state.mask
        res.scores[t] = state.score
        res.confidence[t] = conf
        res.lost[t] = lost = bool(conf < settings.lost_threshold or not state.mask.any())
        res.source[t] = k
        box = mask_box(state.mask)
        res.boxes[t] = np.nan if box is None else box
        return lost

    @staticmethod
    def _check_frames(frames) -> list[np.ndarray]:
        if frames is None:
            raise InputImageError("no frames given: pass a list of (H, W[, C]) images or a (T, H, W[, C]) array")
        if isinstance(frames, np.ndarray):
            if frames.ndim not in (3, 4):
                raise InputImageError(f"frames array must be (T, H, W) or (T, H, W, C), got shape {frames.shape}")
            frames = list(frames)
        try:
            frames = list(frames)
        except TypeError as exc:
            raise InputImageError(f"frames must be a list of images or a (T, H, W[, C]) array, got {type(frames).__name__}") from exc
        if not frames:
            raise InputImageError("no frames given: the loop is empty")
        out = []
        for i, f in enumerate(frames):
            try:
                rgb = to_rgb_uint8(f)
            except InputImageError as exc:
                raise InputImageError(f"frame {i}: {exc}") from exc
            if out and rgb.shape != out[0].shape:
                raise InputImageError(f"frame {i} is {rgb.shape[1]}x{rgb.shape[0]} but frame 0 is "
                                      f"{out[0].shape[1]}x{out[0].shape[0]}: every frame of a loop must have the same size")
            out.append(rgb)
        return out

    def _check_prompts(self, n: int, hw: tuple[int, int]) -> None:
        if not self.prompts:
            raise PromptError("no prompt: call add_prompt(frame, points=..., box=... or mask=...) on at least one frame first")
        h, w = hw
        for k, p in sorted(self.prompts.items()):
            if k >= n:
                raise PromptError(f"prompted frame {k} is out of range: the loop has {n} frames (0..{n - 1})")
            try:
                if p.points is not None:
                    check_points(p.points, p.labels, hw)
                if p.box is not None:
                    check_boxes(p.box, hw)
            except PromptError as exc:
                raise PromptError(f"frame {k}: {exc}") from exc
            if p.mask is not None and p.mask.shape != (h, w):
                raise PromptError(f"frame {k}: the mask is {p.mask.shape[1]}x{p.mask.shape[0]} but the frames are {w}x{h}")


class _Memory:
    """The object's appearance: the prompted frame's :class:`Template` (kept) and the latest confident frame's."""

    def __init__(self, first: Template | None):
        self.first, self.recent = first, None

    def templates(self) -> list[Template]:
        return [x for x in (self.first, self.recent) if x is not None]

    def remember(self, embedded, mask: np.ndarray) -> None:
        self.recent = make_template(embedded, mask)

    def similarity(self, embedded, mask: np.ndarray) -> float:
        """Mean cosine of ``mask``'s mean embedding and the remembered objects' (1 when there is no memory)."""
        kept = self.templates()
        if not kept:
            return 1.0
        proto = prototype(embedded, mask)  # once, for every remembered object (0 for an empty mask)
        return 0.0 if proto is None else float(np.mean([float(proto @ x.prototype) for x in kept]))


def _moved(box: np.ndarray, prev: np.ndarray, cur: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """``box`` moved by the image motion around it from greyscale frame ``prev`` to ``cur`` (:func:`estimate_shift`)."""
    dx, dy = estimate_shift(prev, cur, box)
    moved = np.clip(box + [dx, dy, dx, dy], 0, [hw[1], hw[0], hw[1], hw[0]])
    return box if moved[2] - moved[0] < 2 or moved[3] - moved[1] < 2 else moved


class _Grey:
    """Greyscale uint8 copies of the frames, made on first use."""

    def __init__(self, frames):
        self.frames, self._cache = frames, {}

    def __getitem__(self, t: int) -> np.ndarray:
        if t not in self._cache:
            self._cache[t] = cv2.cvtColor(self.frames[t], cv2.COLOR_RGB2GRAY)
        return self._cache[t]


def _empty_result(n: int, hw: tuple[int, int]) -> TrackResult:
    return TrackResult(
        masks=np.zeros((n, *hw), bool), confidence=np.full(n, np.nan), lost=np.zeros(n, bool),
        scores=np.full(n, np.nan), source=np.full(n, -1, np.int64), boxes=np.full((n, 4), np.nan),
    )


__all__ = ["DIRECTIONS", "FrameCells", "Template", "TrackResult", "TrackSettings", "Tracker", "click_to_mask", "match_template"]
