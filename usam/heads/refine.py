"""Inference-time refinements of head outputs, switched per task by an adapter's ``head_options``.

Each option is chosen on the validation split (``scripts/tune_head_options.py``), never by default:

- segmentation ``refine_with_box``: the box around each class's largest component is given back to the
  decoder as a box prompt, and its mask replaces the class's logits (``refine_rounds`` times);
- segmentation ``largest_component``: keep only the largest 8-connected component of each class;
- segmentation ``ellipse_fill``: class ids whose mask is replaced by the filled ellipse fitted to it
  (fetal heads are annotated as ellipses);
- segmentation ``mask_threshold``: the logit above which a pixel is foreground (SAM's ``mask_threshold``, 0.0 when
  absent; a number in [-:data:`MAX_THRESHOLD`, :data:`MAX_THRESHOLD`]): a positive one moves the boundary inwards
  (the fetal-head masks came out ~1 % too large in perimeter, which head circumference inherits);
- detection ``refine_with_decoder``: the regressed box is given to the decoder and replaced by the extent
  of the mask it returns;
- detection ``box_from``: the box is the extent of the largest component of another task's automatic mask;
- regression ``ellipse_from``: 4 landmarks = ends of the major then minor axis of the ellipse fitted to
  another task's automatic mask (fetal OFD / BPD);
- segmentation ``locate``: ``"heatmap"``: the automatic logits come from the best peak box of the task's
  localisation head through the decoder (``usam/heads/locate.py``), before any ``refine_with_box``;
  ``"off"``: a trained localisation head is kept unused;
- ``refine_decoder``: ``"base"`` (the backbone's own box path, default for a tuned decoder with
  ``box_prompts: base``), ``"tuned"`` or ``"boxes"`` (the adapter's box decoder, ``python -m usam.train.boxes``, on
  the embedding given): which decoder answers the box prompts of the refinements and of ``locate``.

Shapes: low-res logits ``(1, K - 1, 256, 256)``; boxes ``(4,)`` xyxy; masks ``(H, W)``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..backbones import LOW_RES
from ..errors import ConfigError
from ..ops.masks import ellipse_axis_ends, fill_ellipse, fit_ellipse, largest_component, mask_extent
from .automask import logits_to_classes

#: largest ``mask_threshold`` magnitude accepted (a logit of 8 is a probability of 0.9997)
MAX_THRESHOLD = 8.0
#: values of ``refine_decoder`` (``boxes`` only for an adapter with a box decoder, checked with its config)
REFINE_DECODERS = ("base", "tuned", "boxes")
#: values of the segmentation option ``locate`` (``usam/heads/locate.py``)
LOCATE_VALUES = ("heatmap", "off")
OPTIONS = {
    "segmentation": {"locate", "refine_with_box", "refine_rounds", "refine_decoder", "largest_component", "ellipse_fill",
                     "mask_threshold"},
    "detection": {"refine_with_decoder", "refine_decoder", "box_from"},
    "regression": {"ellipse_from"},
    "classification": set(),
}


def check_head_options(options: dict, kinds: dict[str, str], where: str = "head_options") -> None:
    """Raise :class:`ConfigError` for an option that is unknown, misspelt, or names a missing task.

    ``kinds``: ``task_id -> kind`` of the adapter's tasks.
    """
    if not isinstance(options, dict):
        raise ConfigError(f"{where} must be a mapping task_id -> options, got {type(options).__name__}")
    for tid, opts in options.items():
        if tid not in kinds:
            raise ConfigError(f"{where}: {tid!r} is not a task of this adapter (tasks: {sorted(kinds)})")
        if not isinstance(opts, dict):
            raise ConfigError(f"{where}.{tid} must be a mapping, got {type(opts).__name__}")
        unknown = set(opts) - OPTIONS[kinds[tid]]
        if unknown:
            raise ConfigError(f"{where}.{tid}: unknown options {sorted(unknown)} for a {kinds[tid]} task "
                              f"(known: {sorted(OPTIONS[kinds[tid]])})")
        if opts.get("refine_decoder", "base") not in REFINE_DECODERS:
            raise ConfigError(f"{where}.{tid}.refine_decoder must be one of {list(REFINE_DECODERS)}, "
                              f"got {opts['refine_decoder']!r}")
        if "locate" in opts and opts["locate"] not in LOCATE_VALUES:
            raise ConfigError(f"{where}.{tid}.locate must be one of {list(LOCATE_VALUES)}, got {opts['locate']!r}")
        if "mask_threshold" in opts:
            t = opts["mask_threshold"]
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not abs(t) <= MAX_THRESHOLD:
                raise ConfigError(f"{where}.{tid}.mask_threshold must be a number in [-{MAX_THRESHOLD:g}, "
                                  f"{MAX_THRESHOLD:g}] (a logit; 0 is SAM's), got {t!r}")
        for key in ("box_from", "ellipse_from"):
            if key in opts and kinds.get(opts[key]) != "segmentation":
                raise ConfigError(f"{where}.{tid}.{key}: {opts[key]!r} is not a segmentation task of this adapter")


def sends_boxes(opts: dict) -> bool:
    """Whether a task's head options prompt a decoder with boxes of the heads' own (``locate: heatmap``, the two
    refinements)."""
    return bool(opts.get("refine_with_box") or opts.get("refine_with_decoder")) or opts.get("locate") == "heatmap"


def pin_box_route(options: dict, route: str) -> list[str]:
    """Name ``route`` as ``refine_decoder`` in every task's ``options`` that sends boxes and names none (in place),
    before a change of ``decoder.box_prompts`` would move them to another decoder; returns the tasks pinned."""
    pinned = []
    for tid, opts in options.items():
        if sends_boxes(opts) and "refine_decoder" not in opts:
            opts["refine_decoder"] = route
            pinned.append(tid)
    return pinned


def decode_box(decoder, embedding, boxes, route: str | None):
    """Box-only prompt ``(N, 4)`` in model-input pixels -> low-res logits ``(N, 1, 256, 256)`` and predicted IoU
    ``(N, 1)``; ``route`` (``"base"`` / ``"tuned"`` / ``"boxes"``) picks a tuned decoder's box path (a backbone has
    one);
    ``None``: the tuned decoder's ``heads_box_route``, its ``box_prompts`` except that the heads use neither the
    click decoder nor the bare encoder's embedding (``"clicks"`` / ``"bare"`` / ``"boxes"``, routes of a user's
    box): theirs is then the backbone's decoder on the embedding given."""
    if route is None:  # a tuned decoder names the heads' route (TunedDecoder.heads_box_route); a backbone has one
        route = getattr(decoder, "heads_box_route", None)
    kwargs = {"box_prompts": route} if route and hasattr(decoder, "box_prompts") else {}
    return decoder.decode(embedding, boxes=boxes, multimask_output=False, **kwargs)


def refine_box(decoder, embedding, box: np.ndarray, input_size: int, route: str | None = None) -> np.ndarray:
    """Refine a regressed ``(4,)`` box (model-input pixels): prompt the decoder with it and take the
    extent of the mask it returns; the regressed box is kept when the mask is empty."""
    logits, _ = decode_box(decoder, embedding, torch.as_tensor(box[None], dtype=torch.float32, device=embedding.device), route)
    extent = mask_extent((logits[0, 0] > 0).cpu().numpy())
    return box if extent is None else extent * (input_size / LOW_RES)


def refine_with_box(decoder, embedding, logits, input_size: int, route: str | None = None, rounds: int = 1):
    """Refine automatic per-class logits ``(1, K - 1, 256, 256)``: the box around each class's largest
    component is given to the decoder as a box prompt, and its mask replaces the class's logits."""
    s = input_size / LOW_RES
    out = logits
    for _ in range(max(1, int(rounds))):
        classes = logits_to_classes(out)[0].cpu().numpy()
        out = out.clone()
        for c in range(out.shape[1]):
            extent = mask_extent(classes == c + 1)
            if extent is None:
                continue
            box = torch.as_tensor(extent[None] * s, dtype=torch.float32, device=embedding.device)
            out[:, c] = decode_box(decoder, embedding, box, route)[0][:, 0]
    return out


def postprocess_classes(classes: np.ndarray, opts: dict) -> np.ndarray:
    """Apply ``largest_component`` / ``ellipse_fill`` to an ``(H, W)`` class-id map."""
    fill = set(opts.get("ellipse_fill") or [])
    if not opts.get("largest_component") and not fill:
        return classes
    out = np.zeros_like(classes)
    for c in np.unique(classes):
        if c == 0:
            continue
        m = classes == c
        if opts.get("largest_component"):
            m = largest_component(m)
        if int(c) in fill:
            m = fill_ellipse(m)
        out[m & (out == 0)] = c
    return out


def ellipse_axis_points(mask: np.ndarray) -> np.ndarray | None:
    """``(4, 2)`` ends of the major axis (left -> right) then of the minor axis (top -> bottom) of the
    ellipse fitted to a head mask: fetal biometry's OFD and BPD landmarks. ``None`` for an empty mask."""
    if mask.sum() < 5:
        return None
    ellipse = fit_ellipse(mask)
    if ellipse is None:
        return None
    ofd, bpd = ellipse_axis_ends(ellipse)
    ofd = sorted(map(tuple, ofd), key=lambda p: p[0])
    bpd = sorted(map(tuple, bpd), key=lambda p: p[1])
    return np.array([*ofd, *bpd], dtype=np.float64)
