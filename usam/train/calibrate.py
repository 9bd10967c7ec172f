"""Calibrate an adapter's quality score on simulated click sessions: an increasing map of its click decoder's
scores, or a refit of that decoder's IoU head.

    OMP_NUM_THREADS=1 python -m usam.train.calibrate adapters/breast [--fit affine|head] [--clicks 10] [--limit N]

The score :meth:`usam.Predictor.predict` returns with each mask (and the demo shows as "predicted IoU") is SAM's
IoU head, ``mask_decoder.iou_prediction_head``: an MLP from the IoU token's output ``(256,)`` to one IoU per mask
token ``(4,)``; on the first click it also chooses among the three candidates. Trained jointly with the masks on
low-res targets it is poorly calibrated (breast test: |predicted - measured| 0.154 on the chosen first-click mask,
Spearman 0.60). Here only that MLP of the click decoder (``decoder.clicks: separate``) is refit, everything else
frozen, against the IoU measured as ``usam evaluate --clicks`` measures it: at the original resolution, on the
binary mask the predictor returns.

1. Sessions: for every object (each foreground class present) of the train and val splits, ``--clicks`` clicks by
   the standard protocol (:func:`usam.challenge.interactive.click_session`'s), starting once at the innermost
   point and ``--starts - 1`` times at a random point among the most interior ones, on the cached embedding
   (:class:`~usam.train.cache.EmbeddingStore`), in fp32 on PyTorch, the first click answered ``direct``
   (``decoder.first_click``), every click on the whole image (no ``decoder.click_zoom``) and taken whole (no
   ``decoder.click_merge``). Each decoder pass gives the IoU token's output and the measured IoU of every mask it
   returned (three candidates on the first click, one after).
2. Fit, two kinds (``--fit``):

   - ``affine`` (default): one increasing map ``a * score + b`` (``a > 0``) for every mask token, least squares
     on those IoUs, folded into the MLP's last layer (``W <- a W``, ``c <- a c + b``). It cannot change which
     candidate the scores choose, so the masks and the whole click curve stay exactly as they were; it removes the
     score's bias and scale, not its ranking (Spearman is unchanged). Kept if the val error of the chosen
     first-click mask falls.
   - ``head``: the whole MLP, from its current weights, by MSE on those IoUs (AdamW, full batch). Kept: the epoch
     with the lowest val error of the chosen first-click mask, scored as ``usam evaluate --clicks`` scores it,
     among those that choose first-click masks at least as good as before (the argmax of the scores picks the
     candidate), else the original head.
3. The first click's choice feeds every later click, so with ``--fit head`` the val sessions are run again with
   the new head: it is kept only if the mean of the val Dice-vs-clicks curve is not lower (``kept``; breast: the
   first-click figures improved on val, yet on test the curve fell 0.005-0.011 after 3-10 clicks with a head
   chosen on them alone).
4. The head is saved into the adapter (``heads.safetensors``, the click decoder's tensors); ``config.json`` gets
   ``training.calibration`` with the val figures before and after, and the card (``README.md``) says so. The
   adapter's other files are kept.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..adapters.validate import local_adapter_dir, rewrite_card
from ..adapters.config import QUALITIES, QUALITY_FIT_LIMIT
from ..challenge.interactive import click_session, spearman
from ..data.fmc import Sample
from ..errors import UsamError
from ..io import read_mask
from ..ops.clicks import innermost_point
from ..ops.masks import iou, stability_score
from ..predictor import Predictor, quality_estimate
from .cache import EmbeddingStore
from .rows import segmentation_rows


@dataclass
class Passes:
    """Decoder passes of click sessions: IoU-token outputs ``features (N, C)``, measured IoUs ``targets (N, 4)``
    (NaN for mask tokens the pass did not return), ``first (N,)`` whether the pass was a session's first click."""

    features: torch.Tensor
    targets: torch.Tensor
    first: torch.Tensor

    def __len__(self) -> int:
        return len(self.features)


def click_decoder(model):
    """The click decoder of the model's active adapter (:class:`~usam.adapters.adapter.PromptDecoder`)."""
    adapter = model.adapter
    decoder = None if adapter is None or adapter.decoder is None else adapter.decoder.clicks
    if decoder is None:
        raise UsamError("calibration refits the IoU head of an adapter's click decoder: this adapter has none "
                        "(train it with decoder.clicks: separate, as configs/default.yaml does)")
    return decoder


def collect_passes(model, samples: list[Sample], n_clicks: int = 10, starts: int = 2, seed: int = 0,
                   desc: str = "sessions") -> Passes:
    """Run click sessions on segmentation ``samples`` with the active adapter and record every decoder pass.

    The first click is answered ``direct`` (the adapter's ``first_click`` is set aside for the sessions): the IoU
    head is fitted to the click decoder's own candidates, not to ``box_refine``'s box answers of them. Every click is
    answered on the whole image (``click_zoom`` set aside too: the sessions run on stored embeddings, with no image
    to cut a zoomed view from), and taken whole (``click_merge`` set aside: the IoU head scores the decoder's own
    answer, not a merge of it)."""
    head = click_decoder(model).mask_decoder.iou_prediction_head
    seen: list[torch.Tensor] = []
    predictor, rng = Predictor(model, runtime="torch"), np.random.default_rng(seed)
    feats, targets, first = [], [], []
    hook = head.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach().float().clone()))
    try:
        with model.adapter.decoder.using(first_click="direct", click_zoom=None, click_merge=None):
            for truth in _objects(model, predictor, samples, desc):

                def record(k, masks, scores, truth=truth):
                    # SAM's decoder returns mask tokens 1..3 with multimask output (the first click), else token 0
                    t = np.full(4, np.nan, dtype=np.float32)
                    measured = [iou(m, truth) for m in masks]
                    if k == 0:
                        t[1:] = measured
                    else:
                        t[0] = measured[0]
                    feats.append(seen.pop()[0])
                    targets.append(torch.from_numpy(t))
                    first.append(k == 0)

                for start in range(starts):
                    p0 = innermost_point(truth) if start == 0 else innermost_point(truth, rng, top_fraction=0.5)
                    click_session(predictor, truth, n_clicks, first_point=p0, on_pass=record)
    finally:
        hook.remove()
    return Passes(torch.stack(feats), torch.stack(targets), torch.tensor(first))


#: how much larger a quality estimate's mean |estimate - measured| IoU error may be than the predicted IoU's and
#: the estimate still be chosen for its ranking (:func:`choose_quality`)
QUALITY_SLACK = 0.01
#: fewest first clicks :func:`fit_quality` fits its three coefficients to (three would fit any three points exactly)
QUALITY_FIT_MIN_OBJECTS = 10


def first_click_quality(model, samples: list[Sample], desc: str = "first clicks") -> dict[str, list[float]]:
    """One first click at the innermost point of every object (each foreground class present) of segmentation
    ``samples``, answered as the active adapter answers it (its ``first_click``), on the cached embedding.
    Returns ``{"measured": [...], "predicted": [...], "stability": [...]}``: the chosen mask's IoU against the
    truth, its predicted IoU (the decoder's score) and its logits' stability score, one value per object; every
    quality estimate is made of the last two (:func:`usam.predictor.quality_estimate`)."""
    predictor = Predictor(model, runtime="torch")
    out: dict[str, list[float]] = {"measured": [], "predicted": [], "stability": []}
    for truth in _objects(model, predictor, samples, desc):
        masks, scores, low_res = predictor.predict(point_coords=np.array([innermost_point(truth)]),
                                                   point_labels=np.array([1]))
        best = int(np.argmax(scores))
        out["measured"].append(iou(masks[best], truth))
        out["predicted"].append(float(scores[best]))
        out["stability"].append(float(stability_score(low_res[best], predictor.mask_threshold)))
    return out


def _objects(model, predictor: Predictor, samples: list[Sample], desc: str):
    """Each object (foreground class present) of segmentation ``samples``: sets ``predictor`` to its image's
    embedding (cached, through the adapter's encoder LoRA where it has one) and yields its binary truth ``(H, W)``."""
    store = EmbeddingStore(model)
    for s in tqdm(samples, desc=desc, unit="img"):
        predictor.set_embedding(store.get(s.image_path))
        gt = read_mask(s.mask_path)
        for c in range(1, s.num_classes):
            truth = gt == c
            if truth.any():
                yield truth


def fit_quality(figures: dict[str, list[float]]) -> tuple[float, float, float]:
    """``(a, b, c)`` of the ``fitted`` quality estimate ``clip(a * predicted + b * stability + c, 0, 1)`` with the
    least mean absolute error against the measured IoU of :func:`first_click_quality`'s ``figures`` (the train
    split's; the mean absolute error is what ``usam evaluate --clicks`` reports): least squares, then refined on
    that error (``scipy.optimize.minimize``, Powell)."""
    from scipy.optimize import minimize

    measured = np.asarray(figures["measured"], dtype=np.float64)
    x = np.stack([np.asarray(figures["predicted"], dtype=np.float64), np.asarray(figures["stability"], dtype=np.float64),
                  np.ones_like(measured)], axis=1)
    if len(measured) < QUALITY_FIT_MIN_OBJECTS:
        raise UsamError(f"fitting the quality estimate needs at least {QUALITY_FIT_MIN_OBJECTS} objects, "
                        f"got {len(measured)}")
    start = np.linalg.lstsq(x, measured, rcond=None)[0]
    err = lambda w: float(np.abs(np.clip(x @ w, 0.0, 1.0) - measured).mean())  # noqa: E731
    best = minimize(err, start, method="Powell", options={"xtol": 1e-4, "ftol": 1e-7})
    w = best.x if best.fun <= err(start) else start
    if not np.isfinite(w).all() or np.abs(w).max() > QUALITY_FIT_LIMIT:
        raise UsamError(f"the quality fit is degenerate ({w.tolist()}): the two signals do not predict the IoU here")
    return tuple(round(float(v), 4) for v in w)


def choose_quality(figures: dict[str, list[float]], slack: float = QUALITY_SLACK,
                   fit: tuple[float, float, float] | None = None) -> tuple[str, dict]:
    """The quality estimate to show (``decoder.quality``) from :func:`first_click_quality`'s ``figures``: the
    highest Spearman with the measured IoU among the estimates whose mean absolute error is at most the
    predicted IoU's + ``slack`` (a better ranking must not come with a worse level); ties keep the earlier of
    :data:`QUALITIES` (the predicted IoU first). ``fitted`` is a candidate with ``fit`` (fitted on other images:
    :func:`fit_quality` on the train split). Returns it and ``{kind: {"iou_error", "iou_spearman"}}``."""
    measured = np.asarray(figures["measured"], dtype=np.float64)
    table = {}
    for kind in QUALITIES:
        if kind == "fitted" and fit is None:
            continue
        est = quality_estimate(kind, figures["predicted"], figures["stability"], fit).astype(np.float64)
        rank = spearman(est.tolist(), measured.tolist())
        table[kind] = {"iou_error": round(float(np.abs(est - measured).mean()), 4),
                       "iou_spearman": None if np.isnan(rank) else round(rank, 4)}
    limit = table["predicted"]["iou_error"] + slack
    allowed = [k for k in table if table[k]["iou_error"] <= limit and table[k]["iou_spearman"] is not None]
    chosen = max(allowed, key=lambda k: table[k]["iou_spearman"], default="predicted")  # max keeps the first tie
    return chosen, table


def first_click_choice(head: torch.nn.Module, passes: Passes) -> tuple[torch.Tensor, torch.Tensor]:
    """``head``'s scores ``(S, 3)`` of the three first-click candidates of the ``S`` sessions in ``passes`` and the
    candidate it chooses ``(S,)`` (0..2: mask tokens 1..3)."""
    with torch.no_grad():
        pred = head(passes.features[passes.first])[:, 1:].float()
    return pred, pred.argmax(dim=1)


def first_click_scores(head: torch.nn.Module, passes: Passes) -> dict:
    """How ``head`` scores the chosen first-click masks of ``passes``, as ``usam evaluate --clicks`` does: mean
    |predicted - measured| IoU, Spearman, and the mean measured IoU / Dice of the masks it chooses."""
    pred, pick = first_click_choice(head, passes)
    true = passes.targets[passes.first][:, 1:]
    rows = torch.arange(len(pick))
    p, t = pred[rows, pick].numpy(), true[rows, pick].numpy()
    return {"objects": int(len(t)), "iou_error": round(float(np.abs(p - t).mean()), 4),
            "iou_spearman": round(spearman(p.tolist(), t.tolist()), 4), "iou": round(float(t.mean()), 4),
            "dice": round(float(np.mean(2 * t / (1 + t))), 4)}


def click_curve(head: torch.nn.Module, passes: Passes, n_clicks: int) -> list[float]:
    """Mean Dice of the chosen mask after clicks 1..``n_clicks`` of the sessions in ``passes`` (recorded with
    ``head`` as the click decoder's IoU head: it chose the first click's candidate); a session that reached a
    perfect mask early keeps its last value, as ``usam evaluate --clicks`` counts it."""
    _, first_pick = first_click_choice(head, passes)
    starts = torch.nonzero(passes.first).flatten().tolist() + [len(passes)]
    curves = []
    for i, (a, b) in enumerate(zip(starts[:-1], starts[1:])):
        ious = [float(passes.targets[a, 1 + first_pick[i]])] + passes.targets[a + 1:b, 0].tolist()
        ious += [ious[-1]] * (n_clicks - len(ious))
        curves.append([2 * v / (1 + v) for v in ious[:n_clicks]])
    return [round(float(v), 4) for v in np.mean(curves, axis=0)]


def fit_iou_head(head: torch.nn.Module, train: Passes, val: Passes, epochs: int = 300, lr: float = 1e-3,
                 weight_decay: float = 1e-2, log=print) -> tuple[torch.nn.Module, list[dict]]:
    """Refit a copy of ``head`` on ``train`` (MSE on every measured IoU). Kept: the epoch with the lowest val error
    of the chosen first-click mask among those whose chosen masks' val Dice is at least the original head's (the
    scores also choose the first-click mask; a better-calibrated score must not choose worse masks), else the
    original head. Returns it and the history (every 10th epoch, then ``{"kept_epoch": e}``, 0 = the original)."""
    head = copy.deepcopy(head).float().train()
    for p in head.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    known = ~torch.isnan(train.targets)
    target = torch.nan_to_num(train.targets)
    start = first_click_scores(head.eval(), val)
    best, history = (start["iou_error"], copy.deepcopy(head.state_dict()), 0), []
    for epoch in range(1, epochs + 1):
        head.train()
        loss = F.mse_loss(head(train.features)[known], target[known])
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss = float(loss.detach())
        score = first_click_scores(head.eval(), val)
        if score["iou_error"] < best[0] and score["dice"] >= start["dice"]:
            best = (score["iou_error"], copy.deepcopy(head.state_dict()), epoch)
        if epoch % 10 == 0 or epoch == epochs:
            history.append({"epoch": epoch, "loss": round(loss, 5), **score})
            log(f"epoch {epoch}/{epochs} loss {loss:.5f} val first click: IoU error {score['iou_error']:.4f} "
                f"Spearman {score['iou_spearman']:.3f} Dice {score['dice']:.4f}")
    head.load_state_dict(best[1])
    return head.eval(), history + [{"kept_epoch": best[2]}]


def fit_affine(head: torch.nn.Module, train: Passes) -> tuple[torch.nn.Module, dict]:
    """A copy of ``head`` whose scores are ``a * score + b``: least squares of every measured IoU of ``train`` on
    ``head``'s score of that mask, ``a`` and ``b`` shared by the mask tokens and folded into the last linear layer.
    Increasing (``a > 0``), so every choice among candidates stays; ``a <= 0`` (scores that do not rise with the
    IoU) raises :class:`~usam.errors.UsamError`. Returns the head and ``{"a", "b"}``."""
    if getattr(head, "sigmoid_output", False):
        raise UsamError("--fit affine folds a linear map into the IoU head's last layer: this head ends in a sigmoid")
    with torch.no_grad():
        scores = head(train.features).float()
    known = ~torch.isnan(train.targets)
    x, t = scores[known].double().numpy(), train.targets[known].double().numpy()
    if len(x) < 2 or np.ptp(x) == 0:
        raise UsamError(f"{len(x)} measured masks with constant scores: nothing to calibrate against")
    a, b = np.polyfit(x, t, 1)
    if a <= 0:
        raise UsamError(f"the scores do not rise with the measured IoU (slope {a:.3f}): an affine map cannot "
                        "calibrate them; try --fit head")
    new = copy.deepcopy(head)
    last = [m for m in new.modules() if isinstance(m, torch.nn.Linear)][-1]  # SAM's MLP: the layer that ends it
    with torch.no_grad():
        last.weight.mul_(float(a))
        last.bias.mul_(float(a)).add_(float(b))
    return new.eval(), {"a": round(float(a), 5), "b": round(float(b), 5)}


def calibrate_adapter(adapter_dir: str, data: str, n_clicks: int = 10, starts: int = 2, epochs: int = 300,
                      limit: int | None = None, fit: str = "affine", log=print) -> dict:
    """Calibrate the IoU head of the click decoder of the adapter at ``adapter_dir`` on its segmentation tasks'
    train split (``fit``: ``affine`` or ``head``, see the module's docstring), checked on val, and save it there.
    Returns the report written to ``training.calibration``."""
    if fit not in ("affine", "head"):
        raise UsamError(f"fit must be 'affine' or 'head', got {fit!r}")
    local_adapter_dir(adapter_dir, "python -m usam.train.calibrate writes the calibrated IoU head into it")
    import usam  # the facade's load (backbone + adapter), imported here: usam imports this package

    model = usam.load(adapters=[adapter_dir], precision="fp32", runtime="torch")
    decoder = click_decoder(model)
    seg, splits = segmentation_rows(adapter_dir, model.adapter.tasks, data, limit, "to run click sessions on")
    t0 = time.time()
    train, val = (collect_passes(model, splits[n], n_clicks, starts if n == "train" else 1, desc=f"{n} sessions")
                  for n in ("train", "val"))
    log(f"{len(train)} train / {len(val)} val decoder passes ({time.time() - t0:.0f} s)")
    old = decoder.mask_decoder.iou_prediction_head
    before = first_click_scores(old, val)
    original = copy.deepcopy(old.state_dict())
    curve_before = click_curve(old, val, n_clicks)
    if fit == "affine":
        new, history = fit_affine(old, train)
        after = first_click_scores(new, val)
        curve_after = click_curve(new, val, n_clicks)  # the same choices, hence the same sessions and curve
        kept = after["iou_error"] < before["iou_error"]
        why = f"the affine map does not lower the val IoU error ({before['iou_error']} -> {after['iou_error']})"
    else:
        new, history = fit_iou_head(old, train, val, epochs=epochs, log=log)
        after = first_click_scores(new, val)
        # the first click's choice feeds every later click: the val sessions again with the new head, whole curves
        old.load_state_dict({k: v.to(original[k].dtype) for k, v in new.state_dict().items()})
        curve_after = click_curve(new, collect_passes(model, splits["val"], n_clicks, 1,
                                                      desc="val sessions, new head"), n_clicks)
        kept = float(np.mean(curve_after)) >= float(np.mean(curve_before))
        why = (f"the refit head lowers the val click curve's mean ({np.mean(curve_before):.4f} -> "
               f"{np.mean(curve_after):.4f})")
    old.load_state_dict({k: v.to(original[k].dtype) for k, v in (new.state_dict() if kept else original).items()})
    if not kept:  # a score no better on val, or one that makes the click curve worse, is not worth it
        log(f"{why}: the adapter keeps its IoU head")
    report = {"fit": fit, "tasks": seg, "train_images": len(splits["train"]), "val_images": len(splits["val"]),
              "clicks": n_clicks, "starts": starts, "train_passes": len(train), "val_passes": len(val),
              **({"epochs": epochs} if fit == "head" else {}), "val_first_click_before": before,
              "val_first_click_after": after, "val_curve_before": curve_before, "val_curve_after": curve_after,
              "kept": kept, "seconds": round(time.time() - t0), "history": history}
    model.adapter.config.training["calibration"] = report
    model.adapter.save_pretrained(adapter_dir, model.backbone.image_encoder)
    rewrite_card(adapter_dir)  # from the config just saved and the adapter's metrics.json
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("adapter")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[3] / "shared" / "data" / "fmc_uia_dev"))
    ap.add_argument("--clicks", type=int, default=10, help="clicks per simulated session (default 10)")
    ap.add_argument("--starts", type=int, default=2, help="sessions per train object: the innermost first click, "
                                                         "then random interior ones (default 2)")
    ap.add_argument("--fit", choices=("affine", "head"), default="affine",
                    help="affine: one increasing map of the scores (keeps every mask choice; default); "
                         "head: refit the whole IoU head (may change the first click's choice)")
    ap.add_argument("--epochs", type=int, default=300, help="--fit head: full-batch epochs")
    ap.add_argument("--limit", type=int, default=None, help="at most N images per task and split")
    args = ap.parse_args(argv)
    try:
        report = calibrate_adapter(args.adapter, args.data, args.clicks, args.starts, args.epochs, args.limit,
                                   args.fit)
    except UsamError as exc:
        print(f"usam calibrate: {exc}", file=sys.stderr)
        return 2
    print({k: report[k] for k in ("val_first_click_before", "val_first_click_after", "val_curve_before",
                                  "val_curve_after", "kept")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
