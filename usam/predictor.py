"""Interactive prompting on one image, in the manner of ``segment_anything.SamPredictor``.

>>> predictor = Predictor(UsamModel.from_pretrained())          # embedded LiteMedSAM
>>> predictor.set_image(image)                                   # runs the encoder once (cached)
>>> masks, scores, logits = predictor.predict(box=np.array([x0, y0, x1, y1]))
>>> masks, scores, logits = predictor.predict(point_coords=np.array([[x, y]]), point_labels=np.array([1]),
...                                           mask_input=logits[np.argmax(scores)][None])

Coordinates are (x, y) in original-image pixels; labels 1 = positive, 0 = negative. One prompt holds at most
:data:`MAX_POINTS` (64) clicks; more raise :class:`~usam.errors.PromptError`. An adapter with a ``click_window``
(:class:`~usam.adapters.config.DecoderSettings`) shows its decoder, when a previous mask is fed back, the first click
and the latest ``click_window - 1`` only. One with a ``click_zoom`` answers a corrective prompt (clicks with a previous
mask fed back, after :meth:`Predictor.set_image`) from its ``after + 1``-th click on a zoomed view of the object
(RITM's Zoom-In, :meth:`Predictor._zoomed`): one more encoder pass whenever the view moves, which it rarely does.
One with a ``click_merge`` N takes a corrective click's answer, from a prompt's N + 1-th click on, only where it acted
(FocalClick's Progressive Merge, :meth:`Predictor._merged`): elsewhere the mask it returned before stays. N counts the
clicks of the prompt, so pass every click so far (as the demo and ``usam evaluate`` do), not the latest alone.

Prompts with clicks, or one box, run on a compiled prompt decoder (:mod:`usam.runtime.decoder`) when the model's
encoder runtime is compiled (``openvino`` / ``onnx``; ``runtime=`` overrides it): the weights that answer them
(:meth:`usam.adapters.adapter.TunedDecoder.answering`) are compiled. Several prompt sets at once and a
transformers backbone stay on PyTorch.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

from .adapters.config import BARE_ROUTES
from .backbones import LOW_RES, Backbone
from .embedding import Embedded
from .errors import PromptError, short_repr
from .io import read_image, to_rgb_uint8
from .model import UsamModel
from .ops.clicks import click_window, merge_region, zoom_window
from .ops.masks import mask_box, stability_score
from .runtime import resolve_runtime
from .runtime.decoder import compiled_decoder

#: Recent answers (masks) a :class:`Predictor` with a ``click_merge`` keeps at the original size, so that merging a
#: click keeps the mask a user saw: the three candidates of a first click and a few single masks.
SHOWN_KEPT = 6

#: Most clicks (positive + negative) in one prompt. SAM was trained with a handful; each click costs decoder
#: time and memory (10,000 took a minute and 7 GB), so more are refused rather than silently slow.
MAX_POINTS = 64


def _finite(arr: np.ndarray, what: str) -> np.ndarray:
    try:
        arr = np.asarray(arr, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PromptError(f"{what} must be numbers, got {short_repr(arr)}") from exc
    bad = ~np.isfinite(arr)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        detail = short_repr(arr) if arr.size <= 8 else f"{int(bad.sum())} of {arr.size} values, first at index {where}"
        raise PromptError(f"{what} contains NaN or infinite values: {detail}")
    return arr


def check_points(point_coords, point_labels, hw: tuple[int, int], name: str = "point_coords") -> tuple[np.ndarray, np.ndarray]:
    """Validate ``(N, 2)`` (x, y) points and ``(N,)`` labels in {0, 1} against an ``(H, W)`` image; messages call
    the points ``name`` (a command line passes its flags)."""
    if point_coords is None or point_labels is None:
        raise PromptError("point prompts need both point_coords (N, 2) and point_labels (N,)")
    coords = _finite(point_coords, name)
    if coords.ndim == 1 and coords.shape[0] == 2:
        coords = coords[None]
    if coords.ndim != 2 or coords.shape[1] != 2 or coords.shape[0] == 0:
        raise PromptError(f"{name} must have shape (N, 2) as (x, y) pixels, got {coords.shape}")
    if coords.shape[0] > MAX_POINTS:
        raise PromptError(f"{coords.shape[0]} points given: at most {MAX_POINTS} clicks per prompt")
    labels = np.asarray(point_labels).reshape(-1)
    if labels.shape[0] != coords.shape[0]:
        raise PromptError(f"{coords.shape[0]} points but {labels.shape[0]} labels: give one label per point")
    if not np.isin(labels, (0, 1)).all():
        raise PromptError(f"point_labels must be 1 (positive) or 0 (negative), got {short_repr(labels)}")
    h, w = hw
    bad = (coords[:, 0] < 0) | (coords[:, 0] > w - 1) | (coords[:, 1] < 0) | (coords[:, 1] > h - 1)
    if bad.any():
        raise PromptError(
            f"point {coords[bad][0].tolist()} is outside the {w}x{h} image: x must be in [0, {w - 1}], y in [0, {h - 1}]"
        )
    return coords, labels.astype(np.int64)


def check_boxes(box, hw: tuple[int, int], name: str = "box") -> np.ndarray:
    """Validate ``(4,)`` or ``(K, 4)`` xyxy boxes against an ``(H, W)`` image; returns ``(K, 4)``; messages call
    the box ``name``."""
    boxes = _finite(box, name)
    if boxes.ndim == 1:
        boxes = boxes[None]
    if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.shape[0] == 0:
        raise PromptError(f"{name} must have shape (4,) or (K, 4) as x0 y0 x1 y1 pixels, got {boxes.shape}")
    h, w = hw
    for b in boxes:
        if b[2] <= b[0] or b[3] <= b[1]:
            raise PromptError(f"{name} {b.tolist()} is inverted or empty: it must be x0 < x1 and y0 < y1 (x0 y0 x1 y1)")
        if b[0] < 0 or b[1] < 0 or b[2] > w or b[3] > h:
            raise PromptError(f"{name} {b.tolist()} goes outside the {w}x{h} image: keep 0 <= x <= {w}, 0 <= y <= {h}")
    return boxes


class Predictor:
    """Prompted segmentation of one image at a time with an embedding cache.

    A prompt is a box and / or up to :data:`MAX_POINTS` (64) clicks (positive and negative together);
    more clicks raise :class:`~usam.errors.PromptError`.

    Args:
      model: a :class:`UsamModel` (its active adapter's decoder answers the prompts) or a bare backbone.
      mask_threshold: logit threshold for binary masks.
      runtime: the prompt decoder's runtime, ``torch``, ``openvino``, ``onnx`` or ``auto``; ``None`` (default):
        the model's encoder runtime. Clicks on a compiled one match PyTorch within 1e-4 (``tests/test_runtime.py``).
    """

    def __init__(self, model: UsamModel | Backbone, mask_threshold: float = 0.0, runtime: str | None = None):
        self.model = model if isinstance(model, UsamModel) else UsamModel(model)
        self.mask_threshold = mask_threshold
        self._runtime = None if runtime is None else resolve_runtime(runtime, self.model.backbone)
        self._embedded: Embedded | None = None
        self._image: np.ndarray | None = None  # set_image's, for a box alone under box_prompts "bare" / "boxes"
        # the latest masks answered under a click_merge, newest first: (embedding, low-res (256, 256) logits as
        # returned, original-size logits (H, W)), so that a merge keeps the mask a user saw (see _previous)
        self._shown: list[tuple[Embedded, np.ndarray, torch.Tensor]] = []

    @property
    def runtime(self) -> str:
        """The prompt decoder's runtime: the one given, else the model's encoder runtime."""
        return self._runtime or self.model.runtime

    @property
    def is_image_set(self) -> bool:
        return self._embedded is not None

    @property
    def original_size(self) -> tuple[int, int]:
        self._require_image()
        return self._embedded.geometry.original_hw

    def set_image(self, image: np.ndarray | str | os.PathLike) -> Embedded:
        """Encode ``image`` (``(H, W)``, ``(H, W, 3|4)``; uint8, uint16 or float), reusing a cached embedding.

        A path (``str`` / ``os.PathLike``) is read with :func:`usam.io.read_image`."""
        if isinstance(image, (str, os.PathLike)):
            image = read_image(image)
        image = to_rgb_uint8(image)
        self._embedded = self.model.embed(image)
        self._image = image
        return self._embedded

    def set_embedding(self, embedded: Embedded) -> Embedded:
        """Use an embedding computed elsewhere (e.g. :class:`usam.train.cache.EmbeddingStore`'s, or another
        :class:`Predictor`'s) instead of encoding an image; it must come from this model's encoder. It answers every
        prompt, a box alone too (``box_prompts: bare`` needs :meth:`set_image`: there is no image to encode bare)."""
        if not isinstance(embedded, Embedded):
            raise PromptError(f"set_embedding takes an Embedded (model.embed's result), got {type(embedded).__name__}")
        shape, want = tuple(embedded.embedding.shape), (1, *self.model.backbone.embedding_shape)
        if shape != want:
            raise PromptError(f"the embedding must have this model's encoder's shape {want}, got {shape}")
        self._embedded = Embedded(embedded.embedding.to(self.model.device, torch.float32), embedded.geometry,
                                  embedded.key)
        self._image = None
        return self._embedded

    def get_image_embedding(self) -> torch.Tensor:
        """``(1, C, h, w)`` embedding of the current image."""
        self._require_image()
        return self._embedded.embedding

    def reset_image(self) -> None:
        self._embedded = self._image = None
        self._shown = []

    def _require_image(self) -> None:
        if self._embedded is None:
            raise PromptError("no image is set: call set_image(image) before predict(...)")

    @torch.inference_mode()
    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for the current image from points and/or boxes.

        Args:
          point_coords: ``(N, 2)`` (x, y) pixels of the original image, ``N <= MAX_POINTS`` (64).
          point_labels: ``(N,)`` 1 positive / 0 negative.
          box: ``(4,)`` one box, or ``(K, 4)`` K boxes answered in one call (the points, if any, go with each box).
          mask_input: ``(1, 256, 256)`` (or ``(K, 1, 256, 256)``) low-res logits of a previous call.
          multimask_output: three candidates (True) or one.
          return_logits: return logits instead of booleans.

        Returns:
          masks ``(M, H, W)`` (``(K, M, H, W)`` for a ``(K, 4)`` box), scores ``(M,)`` / ``(K, M)`` (the decoder's
          predicted IoU: its argmax chooses among candidates; the estimate to show a user is
          :meth:`quality` of these scores and logits),
          low-res logits ``(M, 256, 256)`` / ``(K, M, 256, 256)``.
        """
        self._require_image()
        emb = self._embedded
        geo = emb.geometry
        if point_coords is None and point_labels is None and box is None:
            raise PromptError("give at least one prompt: a point (point_coords + point_labels) or a box")
        batched = box is not None and np.asarray(box).ndim == 2
        dev = self.model.device
        decoder = self.model.prompt_decoder()  # its inference settings (DecoderSettings) shape the answer below
        points = boxes_t = boxes = coords = labels = None
        k, n_clicks = 1, 0
        if box is not None:
            boxes = check_boxes(box, geo.original_hw)
            k = boxes.shape[0]
            boxes_t = _boxes_tensor(geo, boxes, dev)
        if point_coords is not None or point_labels is not None:
            coords, labels = check_points(point_coords, point_labels, geo.original_hw)
            n_clicks = len(coords)
            window = getattr(decoder, "click_window", None)
            if mask_input is not None and window is not None:  # the adapter's click window (DecoderSettings)
                keep = click_window(len(coords), window)
                coords, labels = coords[keep], labels[keep]
            points = _points_tensors(geo, coords, labels, dev, k)
        mask_t = None
        if mask_input is not None:
            m = _finite(mask_input, "mask_input")
            if m.shape == (1, LOW_RES, LOW_RES):
                m = np.broadcast_to(m[None], (k, 1, LOW_RES, LOW_RES))
            if m.shape != (k, 1, LOW_RES, LOW_RES):
                raise PromptError(f"mask_input must have shape (1, {LOW_RES}, {LOW_RES}) (a previous call's low-res logits), got {m.shape}")
            mask_t = torch.tensor(m, dtype=torch.float32, device=dev)  # a copy: m may be a read-only broadcast view
        zoomed = None
        zoom = getattr(decoder, "click_zoom", None)
        if zoom is not None and mask_t is not None and k == 1 and n_clicks > zoom[0]:
            box0 = None if boxes is None else boxes[0]
            zoomed = self._zoomed(coords, labels, box0, mask_t, multimask_output, zoom[1])
        if zoomed is not None:  # DecoderSettings.click_zoom
            masks, iou, low_res = zoomed
        else:
            low_res, iou = self._decode(emb.embedding, points, boxes_t, mask_t, multimask_output)
            masks = geo.masks_to_original(low_res.float())
        merge = getattr(decoder, "click_merge", None)
        if merge is not None and mask_t is not None and k == 1 and n_clicks > merge:  # DecoderSettings.click_merge
            masks, low_res = self._merged(masks, mask_t, coords[-1])
        if (points is not None and boxes_t is None and mask_t is None and multimask_output
                and getattr(decoder, "first_click", "direct") == "box_refine"):
            masks, iou, low_res = self._box_refine(masks, iou, low_res)
        low_res = low_res.float()
        if merge is not None and not batched:  # what this answer looks like, for the next click's merge
            out = low_res.cpu().numpy()
            self._shown = ([(emb, out[0, i].copy(), masks[0, i].clone()) for i in range(masks.shape[1])]
                           + self._shown)[:SHOWN_KEPT]
        if not return_logits:
            masks = masks > self.mask_threshold
        masks, iou, low_res = masks.cpu().numpy(), iou.float().cpu().numpy(), low_res.cpu().numpy()
        if not batched:
            return masks[0], iou[0], low_res[0]
        return masks, iou, low_res

    def quality(self, scores: np.ndarray, low_res: np.ndarray) -> np.ndarray:
        """The quality estimate of masks :meth:`predict` returned, in [0, 1], as the adapter's ``decoder.quality``
        names it (:func:`quality_estimate`): ``predicted`` (the default, and without an adapter) the decoder's
        predicted IoU ``scores``; ``stability`` SAM's stability score of the low-res logits ``low_res`` (IoU of the
        mask at logit > +1 and at logit > -1, :func:`usam.ops.masks.stability_score`); ``mean`` the mean of the two;
        ``fitted`` the map of the two in ``decoder.quality_fit``.

        ``scores`` ``(M,)`` / ``(K, M)`` and ``low_res`` ``(M, 256, 256)`` / ``(K, M, 256, 256)`` as :meth:`predict`
        returns them; returns an array shaped like ``scores``. The scores still choose among candidates (argmax);
        this is what to show a user beside the chosen mask. Chosen on val by the Spearman correlation with the
        measured IoU of the chosen first-click mask (``scripts/tune_head_options.py --quality-only``; the figures
        are on each adapter's card)."""
        scores = np.asarray(scores, dtype=np.float32)
        low_res = np.asarray(low_res, dtype=np.float32)
        if low_res.shape[:-2] != scores.shape or low_res.shape[-2:] != (LOW_RES, LOW_RES):
            raise PromptError(f"low_res {low_res.shape} does not match scores {scores.shape} (low-res logits are "
                              f"{LOW_RES}x{LOW_RES}): pass what predict returned")
        decoder = self.model.prompt_decoder()
        how = getattr(decoder, "quality", "predicted")
        stable = None if how == "predicted" else stability_score(low_res, self.mask_threshold)
        return quality_estimate(how, scores, stable, getattr(decoder, "quality_fit", None))

    def _zoomed(self, coords: np.ndarray, labels: np.ndarray, box: np.ndarray | None, mask_input: torch.Tensor,
                multimask_output: bool, expand: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """A corrective prompt answered on a zoomed view (``decoder.click_zoom``, RITM's Zoom-In): the window
        :func:`usam.ops.clicks.zoom_window` puts around the previous mask (``mask_input`` ``(1, 1, 256, 256)``
        logits) and the positive clicks is encoded on its own (cached by content like any image; the window is
        snapped so that it rarely moves), the clicks inside it (original px ``coords (N, 2)``, ``labels (N,)``)
        and the box clipped to it are decoded there with the previous mask cut to it, and the answer is pasted into
        the previous logits at the original size. Returns logits ``(1, M, H, W)``, scores ``(1, M)`` and low-res
        logits ``(1, M, 256, 256)`` of the whole image, or ``None`` where there is no window (nothing to zoom on,
        or it would span nearly the whole image) or no image to cut it from (:meth:`set_embedding`)."""
        if self._image is None:
            return None
        geo, dev = self._embedded.geometry, self.model.device
        previous = geo.masks_to_original(mask_input.float())[0, 0]  # (H, W) logits
        window = zoom_window((previous > self.mask_threshold).cpu().numpy(), coords[labels == 1], expand)
        if window is None:
            return None
        x0, y0, x1, y1 = window
        inside = (coords[:, 0] >= x0) & (coords[:, 0] <= x1 - 1) & (coords[:, 1] >= y0) & (coords[:, 1] <= y1 - 1)
        if not inside[-1]:  # the latest click is what the view is for
            return None
        view = self.model.embed(self._image[y0:y1, x0:x1])
        sub = view.geometry
        points = _points_tensors(sub, coords[inside] - (x0, y0), labels[inside], dev)
        boxes = None
        if box is not None:
            clipped = np.clip(box - (x0, y0, x0, y0), 0, (x1 - x0, y1 - y0, x1 - x0, y1 - y0))
            if clipped[2] > clipped[0] and clipped[3] > clipped[1]:
                boxes = _boxes_tensor(sub, clipped[None], dev)
        cut = sub.mask_to_input(previous[y0:y1, x0:x1], LOW_RES)[None, None].to(dev)
        low, iou = self._decode(view.embedding, points, boxes, cut, multimask_output)
        answer = sub.masks_to_original(low.float())  # (1, M, h, w)
        full = previous[None, None].expand(1, answer.shape[1], -1, -1).clone()
        full[..., y0:y1, x0:x1] = answer
        return full, iou, geo.mask_to_input(full, LOW_RES)

    def _merged(self, logits: torch.Tensor, mask_input: torch.Tensor, click: np.ndarray
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """A corrective click's answer merged into the previous mask (``decoder.click_merge``, FocalClick's
        Progressive Merge): each candidate of ``logits`` ``(1, M, H, W)`` (original size) is kept only in
        :func:`usam.ops.clicks.merge_region`, the connected region of its change from the previous mask that holds
        the latest ``click`` ``(x, y)``; elsewhere the previous logits stay. The previous mask is the one a recent
        call returned with the low-res logits ``mask_input`` ``(1, 1, 256, 256)`` (:meth:`_previous`), else those
        logits at the original size. The scores stay the decoder's, of its whole answer. Returns the merged logits
        ``(1, M, H, W)`` and their low-res ``(1, M, 256, 256)``."""
        geo = self._embedded.geometry
        previous = self._previous(mask_input)
        if previous is None:  # not an answer of this predictor's: its 256x256 logits at the original size
            previous = geo.masks_to_original(mask_input.float())[0, 0]
        previous = previous.to(logits.dtype)  # (H, W) logits
        before = (previous > self.mask_threshold).cpu().numpy()
        out = logits.clone()
        for i in range(logits.shape[1]):
            region = merge_region(before, (logits[0, i] > self.mask_threshold).cpu().numpy(), click)
            out[0, i] = torch.where(torch.from_numpy(region).to(out.device), logits[0, i], previous)
        return out, geo.mask_to_input(out.float(), LOW_RES)

    def _previous(self, mask_input: torch.Tensor) -> torch.Tensor | None:
        """The original-size logits ``(H, W)`` of the mask a recent :meth:`predict` on this image returned with these
        low-res logits (``mask_input`` ``(1, 1, 256, 256)``, fed back as returned), or ``None``. A merge keeps
        that mask where the click did not act, not its 256x256 round trip, which would move the outline a little
        at every click."""
        fed = mask_input[0, 0].cpu().numpy()
        for emb, low, logits in self._shown:
            if emb is self._embedded and np.array_equal(low, fed):
                return logits
        return None

    def _box_refine(self, masks: torch.Tensor, scores: torch.Tensor, low_res: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A first click's candidates, each re-answered from its own tight box (``first_click: box_refine``).

        The click decoder proposes ``M`` candidates: logits ``masks (1, M, H, W)`` at the original size, predicted
        IoUs ``scores (1, M)``, ``low_res (1, M, 256, 256)``. The decoder that answers a box alone (``box_prompts``:
        e.g. the backbone's, ``base``, LiteMedSAM was trained on boxes; or the adapter's box decoder, ``boxes``, on
        the bare encoder's embedding) answers each candidate's tight box (one batch on
        PyTorch, one box at a time on a compiled decoder: there a first click costs ~3.7x a direct one, 446 vs
        119 ms p50 on 1 busy AVX2 thread, ``benchmarks/bench_click.py``). Each answer replaces its candidate,
        scored ``sqrt(clip(score, 0, 1) * agreement)``, ``agreement`` = IoU of
        the candidate with its box's answer: a candidate that does not outline what its box holds scores low.
        Measured on val (first click at the innermost point), Dice of the chosen mask: breast 0.815 -> 0.858
        (63 lesions), intrapartum 0.933 -> 0.939 (120 objects). An empty candidate stays, scored 0. Returns the
        three tensors, same shapes."""
        geo = self._embedded.geometry
        candidates = (masks[0] > self.mask_threshold).cpu().numpy()
        boxes = [mask_box(m) for m in candidates]
        full = [i for i, b in enumerate(boxes) if b is not None]
        masks, low_res, out = masks.clone(), low_res.clone(), torch.zeros_like(scores)
        if not full:
            return masks, out, low_res
        b = _boxes_tensor(geo, np.stack([boxes[i] for i in full]), self.model.device)
        answer, _ = self._decode(self._embedded.embedding, None, b, None, False)  # (F, 1, 256, 256)
        answer = answer.float()
        answered = geo.masks_to_original(answer[:, 0][None])[0]  # (F, H, W)
        for j, i in enumerate(full):
            a, c = (answered[j] > self.mask_threshold).cpu().numpy(), candidates[i]
            agreement = float((a & c).sum()) / max(1, int((a | c).sum()))
            masks[0, i], low_res[0, i] = answered[j].to(masks.dtype), answer[j, 0].to(low_res.dtype)
            out[0, i] = float(np.sqrt(min(1.0, max(0.0, float(scores[0, i]))) * agreement))
        return masks, out, low_res

    def _decode(self, embedding, points, boxes, mask_input, multimask_output: bool):
        """Low-res logits ``(K, M, 256, 256)`` and scores ``(K, M)`` (``M`` = 3 or 1) from model-input prompts
        (``K`` prompt sets: ``K`` boxes, each with the same clicks): on the compiled decoder one set at a time (a
        set there costs less than its share of an eager batch: 6 boxes ~2x faster), else ``model.decode``. A box
        alone under ``box_prompts: bare`` or ``boxes`` is answered on the bare encoder's embedding of the image (see
        :class:`~usam.adapters.config.DecoderSettings`)."""
        decoder = self.model.prompt_decoder()
        if (boxes is not None and points is None and mask_input is None and self._image is not None
                and getattr(decoder, "box_prompts", None) in BARE_ROUTES):
            embedding = self.model.embed_bare(self._image).embedding
        compiled = (self.runtime in ("openvino", "onnx") and hasattr(decoder, "mask_decoder")
                    and not hasattr(decoder, "model") and embedding.device.type == "cpu")
        if not compiled:
            return self.model.decode(embedding, points=points, boxes=boxes, mask_input=mask_input,
                                     multimask_output=multimask_output)
        # an adapter's click decoder, the backbone's decoder for a box alone (box_prompts: base), ...: the route
        # depends only on which kinds of prompt are given, the same for every set
        pe, md = (decoder.answering(points=points, boxes=boxes, mask_input=mask_input) if hasattr(decoder, "answering")
                  else (decoder.prompt_encoder, decoder.mask_decoder))
        precision = self.model.decoder_precision()  # bf16 where the encoder runs it (or int8, bf16 being faster)
        run = compiled_decoder(pe, md, self.model.backbone.input_size, self.runtime,
                               log=lambda m: print(m, file=sys.stderr), precision=precision)
        k = boxes.shape[0] if boxes is not None else points[0].shape[0]
        out = [_decode_set(run, embedding, None if points is None else (points[0][i:i + 1], points[1][i:i + 1]),
                           None if boxes is None else boxes[i:i + 1],
                           None if mask_input is None else mask_input[i:i + 1], multimask_output)
               for i in range(k)]
        return torch.cat([m for m, _ in out]), torch.cat([s for _, s in out])


def _points_tensors(geo, coords: np.ndarray, labels: np.ndarray, device, k: int = 1):
    """Clicks ``(N, 2)`` in original pixels and labels ``(N,)`` -> model-input ``(k, N, 2)`` coordinates and
    ``(k, N)`` labels (the same clicks for each of ``k`` prompt sets)."""
    c = torch.as_tensor(geo.points_to_input(coords), dtype=torch.float32, device=device)[None].expand(k, -1, -1)
    return c, torch.as_tensor(labels, device=device)[None].expand(k, -1)


def _boxes_tensor(geo, boxes: np.ndarray, device) -> torch.Tensor:
    """Boxes ``(K, 4)`` xyxy in original pixels -> ``(K, 4)`` model-input pixels."""
    return torch.as_tensor(geo.boxes_to_input(boxes), dtype=torch.float32, device=device)


def quality_estimate(how: str, predicted: np.ndarray, stability: np.ndarray | None,
                     fit: tuple[float, float, float] | None = None) -> np.ndarray:
    """A mask's quality estimate in [0, 1] from the decoder's predicted IoU and its logits' stability score (arrays
    of one shape; ``stability`` may be ``None`` for ``predicted``), as ``how`` (``decoder.quality``) names it:
    ``predicted``, ``stability``, ``mean`` of the two, or ``fitted``: ``a * predicted + b * stability + c`` with
    ``fit = (a, b, c)`` (``decoder.quality_fit``, :func:`usam.train.calibrate.fit_quality`). Clipped to [0, 1]."""
    predicted = np.nan_to_num(np.asarray(predicted, dtype=np.float64), nan=0.0)
    if how == "predicted":
        out = predicted
    elif stability is None:
        raise PromptError(f"quality {how!r} needs the stability score of the logits")
    else:
        stability = np.asarray(stability, dtype=np.float64)
        if how == "stability":
            out = stability
        elif how == "mean":
            out = (np.clip(predicted, 0.0, 1.0) + stability) / 2
        elif how == "fitted":
            if fit is None:
                raise PromptError("quality 'fitted' needs its fit (a, b, c): decoder.quality_fit")
            a, b, c = fit
            out = a * predicted + b * stability + c
        else:
            raise PromptError(f"unknown quality estimate {how!r}")
    return np.clip(np.nan_to_num(out, nan=0.0), 0.0, 1.0).astype(np.float32)


def _decode_set(run, embedding, points, boxes, mask_input, multimask_output: bool):
    """One prompt set (clicks ``(1, N, 2)`` / ``(1, N)`` and / or one box ``(1, 4)``) on the compiled decoder ``run``."""
    coords, labels = (points[0], points[1].float()) if points is not None else (torch.zeros(1, 0, 2), torch.zeros(1, 0))
    if boxes is not None:  # box corners are points labelled 2 / 3, after the clicks (PromptEncoder's order)
        coords = torch.cat([coords, boxes.reshape(1, 2, 2)], dim=1)
        labels = torch.cat([labels, torch.tensor([[2.0, 3.0]])], dim=1)
    else:  # segment-anything pads a click-only prompt with one "not a point" (0, 0)
        coords = torch.cat([coords, torch.zeros(1, 1, 2)], dim=1)
        labels = torch.cat([labels, torch.tensor([[-1.0]])], dim=1)
    masks, iou = run(embedding, coords, labels, mask_input)
    sl = slice(1, None) if multimask_output else slice(0, 1)
    return masks[:, sl], iou[:, sl]
