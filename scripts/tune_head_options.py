#!/usr/bin/env python
"""Choose an adapter's inference-time head options on the validation split (never on test).

    .venv/bin/python scripts/tune_head_options.py adapters/breast [--data ../shared/data/fmc_uia_dev] [--split val]

Options (``usam/heads/refine.py``), tried task by task, segmentation first (the others may read its masks):
- segmentation: automatic logits as they are, or refined by prompting the decoder with the box of each class's
  largest component (base or tuned box path, or the box decoder where there is one; 1 or 2 rounds); where the
  adapter has a localisation head
  (``python -m usam.train.locate``), the same from its best peak box (``locate: heatmap``), otherwise it is
  kept as ``locate: off``; then optionally only the largest component,
  and optionally the ellipse fitted to a class (per class);
- detection: the regressed box, its extent after the decoder (base, tuned or box decoder), or the extent of the
  automatic mask of a segmentation task of the same adapter;
- then the logit threshold of each segmentation task's automatic mask (``mask_threshold``, SAM's, 0 by default:
  one of :data:`MASK_THRESHOLDS`) with the options chosen, by the head-circumference error for a task whose rows
  carry one (the threshold places the boundary, which is what HC measures) and by Dice otherwise, and only when
  at least :data:`THRESHOLD_MIN_GAIN` better than 0;
  ``--threshold-only`` chooses it alone;
- 4-point regression next to a segmentation task: the regressed points, or the axis ends of the ellipse fitted
  to the automatic mask (fetal biometry's OFD / BPD landmarks are defined that way);
- the decoder that answers a user's box prompt (``decoder.box_prompts``): the backbone's own, the tuned one, the
  click decoder, or the backbone's own on the bare encoder's embedding (``--box-only`` chooses it alone);
- with ``--clicks N``, how many clicks a corrective prompt shows the click decoder (``decoder.click_window``: all,
  or the first and the latest W - 1, the rest carried by the previous mask fed back), by the mean Dice over the
  1..N curve of the standard click protocol, then on the same curve whether later clicks are answered on a zoomed
  view (``decoder.click_zoom``: never, or from click N + 1 on, on a view E times the mask's extent), then whether
  later clicks change the mask only where they act (``decoder.click_merge``: never, or from click N + 1 on,
  FocalClick's Progressive Merge), then how a first click is answered (``decoder.first_click``: the click decoder's
  candidates ``direct``, or each re-answered from its own box, ``box_refine``); ``--clicks-only`` chooses these four
  alone, ``--first-click-only`` the last alone, ``--zoom-only`` the zoom alone, ``--merge-only`` the merge alone;
- ``--heads-only`` chooses the head options and their threshold alone (e.g. after a new localisation head);
- last, in every run but ``--box-only``, ``--threshold-only``, ``--heads-only`` and ``--merge-only`` ones, the quality estimate
  shown with a mask (``decoder.quality``: the decoder's predicted IoU, SAM's stability score of the logits, their
  mean, or a map of the two fitted on the first ``--quality-train`` train rows, ``decoder.quality_fit``), by the
  Spearman correlation with the measured IoU of the chosen first-click mask, its mean error at most 0.01 above the
  predicted IoU's (:func:`usam.train.calibrate.choose_quality`); ``--quality-only`` chooses it alone.
The variant with the best validation score (ties: the simpler one, listed first) is written into the
adapter's ``config.json`` (``head_options``), with every score under ``training.head_options_validation``.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("adapter")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "fmc_uia_dev"))
    ap.add_argument("--split", default="val")
    ap.add_argument("--limit", type=int, default=None, help="at most N rows per task (quick check)")
    ap.add_argument("--clicks", type=int, default=0, metavar="N",
                    help="also choose decoder.click_window on the Dice-vs-clicks curve of N simulated clicks (e.g. 20)")
    ap.add_argument("--clicks-only", action="store_true",
                    help="choose the click window alone (needs --clicks): head options and box routing stay as they are")
    ap.add_argument("--first-click-only", action="store_true",
                    help="choose decoder.first_click alone (needs --clicks): everything else stays as it is")
    ap.add_argument("--zoom-only", action="store_true",
                    help="choose decoder.click_zoom alone (needs --clicks): everything else stays as it is")
    ap.add_argument("--merge-only", action="store_true",
                    help="choose decoder.click_merge alone (needs --clicks): everything else stays as it is")
    ap.add_argument("--quality-train", type=_non_negative, default=250, metavar="N",
                    help="fit the 'fitted' quality estimate on the first N rows per segmentation task of the train "
                         "split, at most --limit (0: not a candidate)")
    ap.add_argument("--quality-only", action="store_true",
                    help="choose decoder.quality alone (the quality estimate shown): everything else stays as it is")
    ap.add_argument("--threshold-only", action="store_true",
                    help="choose the automatic masks' mask_threshold alone (head options otherwise kept)")
    ap.add_argument("--heads-only", action="store_true",
                    help="choose the head options alone (and their mask_threshold), e.g. after a new localisation "
                         "head: box routing, click settings and the quality estimate stay")
    ap.add_argument("--box-only", action="store_true",
                    help="choose decoder.box_prompts alone (the decoder that answers a user's box): the rest stays")
    args = ap.parse_args(argv)
    if (args.clicks_only or args.first_click_only or args.zoom_only or args.merge_only) and args.clicks < 2:
        ap.error("--clicks-only / --first-click-only / --zoom-only / --merge-only need --clicks N (N >= 2)")

    import usam
    from usam.adapters import rewrite_card
    from usam.data.fmc import read_split
    from usam.heads.refine import pin_box_route

    model = usam.load(adapters=[args.adapter], cache_size=512)
    adapter = model.adapter
    tasks = adapter.tasks
    seg = [t for t, s in tasks.items() if s.kind == "segmentation"]
    split = {t: rows[: args.limit] for t, rows in read_split(Path(args.data) / args.split, tasks=list(tasks)).items()}
    cfg_path = Path(args.adapter) / "config.json"
    cfg = json.loads(cfg_path.read_text())
    before = dict(cfg.get("training", {}).get("head_options_validation") or {})
    only = (args.clicks_only or args.first_click_only or args.zoom_only or args.merge_only or args.quality_only
            or args.box_only or args.threshold_only or args.heads_only)
    report = before if only else {}
    for key in ("click_window", "click_zoom", "click_merge", "first_click"):  # an earlier click choice stays, recorded
        if not args.clicks and key in before:
            report[key] = before[key]
    if args.quality_only or args.box_only or args.threshold_only or args.heads_only:
        args.clicks = 0
    if not only or args.heads_only:
        cfg["head_options"] = tune_heads(model, split, seg, report)
    if not only or args.threshold_only or args.heads_only:
        cfg["head_options"] = tune_mask_threshold(model, split, seg, report)
    if not only or args.box_only:
        heads_route = adapter.decoder.heads_box_route if adapter.decoder is not None else None
        box_route = tune_box_route(model, split, seg, report)
        if box_route:
            cfg["decoder"]["box_prompts"] = box_route
            if adapter.decoder.heads_box_route != heads_route:  # the heads' own boxes keep the decoder they had
                pin_box_route(cfg.setdefault("head_options", {}), heads_route)
    # the click choices this run makes, in order: those named by a --*-only flag, else all four
    alone = [k for k, flag in (("click_zoom", args.zoom_only), ("click_merge", args.merge_only),
                               ("first_click", args.first_click_only)) if flag]
    choices = alone or ["click_window", "click_zoom", "click_merge", "first_click"]
    if args.clicks and adapter.decoder is not None and seg:
        if "click_window" in choices:
            window = tune_click_window(model, split, seg, args.clicks, report)
            cfg["decoder"].pop("click_window", None)
            if window is not None:
                cfg["decoder"]["click_window"] = window
        if "click_zoom" in choices:
            zoom = tune_click_zoom(model, split, seg, args.clicks, report)
            cfg["decoder"].pop("click_zoom", None)
            if zoom is not None:
                cfg["decoder"]["click_zoom"] = {"after": zoom[0], "expand": zoom[1]}
        if "click_merge" in choices:
            merge = tune_click_merge(model, split, seg, args.clicks, report)
            cfg["decoder"].pop("click_merge", None)
            if merge is not None:
                cfg["decoder"]["click_merge"] = merge
        if "first_click" in choices:
            first = tune_first_click(model, split, seg, args.clicks, report)
            cfg["decoder"].pop("first_click", None)
            if first != "direct":
                cfg["decoder"]["first_click"] = first
    # after first_click (its figures follow that answer); a merge does not touch a first click
    if adapter.decoder is not None and seg and not (args.box_only or args.threshold_only or args.merge_only
                                                    or args.heads_only):
        fit_rows = None
        n_fit = min(args.quality_train, args.limit) if args.limit else args.quality_train
        if n_fit:
            fit_rows = {t: rows[:n_fit]
                        for t, rows in read_split(Path(args.data) / "train", tasks=seg).items()}
        quality = tune_quality(model, split, seg, report, fit_rows)
        cfg["decoder"].pop("quality", None)
        cfg["decoder"].pop("quality_fit", None)
        if quality != "predicted":
            cfg["decoder"]["quality"] = quality
        if quality == "fitted":
            cfg["decoder"]["quality_fit"] = list(model.adapter.decoder.quality_fit)
    cfg.setdefault("training", {})["head_options_validation"] = report
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    rewrite_card(args.adapter)
    print(json.dumps(report, indent=1))
    return 0


def _non_negative(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return n


def click_curve(model, split, seg, n_clicks: int) -> tuple[float, dict, int]:
    """Mean Dice over the 1..``n_clicks`` curve of the standard click protocol (``usam.challenge.interactive``) on
    every segmentation object of ``split`` with the adapter's current decoder settings; its detail; the objects."""
    from usam.challenge.interactive import evaluate_clicks

    curves, noc85, noc90 = [], [], []
    for tid in seg:
        res = evaluate_clicks(model, model.adapter.name, split[tid], n_clicks=n_clicks, progress=False)
        curves += [c["dice"] for c in res["cases"]]
        noc85 += [c["noc85"] for c in res["cases"]]
        noc90 += [c["noc90"] for c in res["cases"]]
    curve = np.mean(curves, axis=0)
    detail = {"dice_1_5_10_20": [round(float(curve[k - 1]), 4) for k in (1, 5, 10, 20) if k <= n_clicks],
              "noc85": round(float(np.mean(noc85)), 2), "noc90": round(float(np.mean(noc90)), 2),
              "drops": int((np.diff(curve) < 0).sum())}
    return float(curve.mean()), detail, len(curves)


def _choose(decoder, key: str, options: tuple, model, split, seg, n_clicks: int, report: dict,
            min_gain: float = 0.0):
    """Set ``decoder.<key>`` to each of ``options`` in turn (simplest first: ties keep it), keep the best by
    :func:`click_curve` (the first, simplest one unless the best beats it by at least ``min_gain``), record every
    score in ``report[key]``; returns the chosen option."""
    scores, detail = {}, {}
    for option in options:
        name = _option_name(key, option)
        with decoder.using(**{key: option}):
            scores[name], detail[name], objects = click_curve(model, split, seg, n_clicks)
        print(f"{key} {name}: mean Dice over {n_clicks} clicks {scores[name]:.4f} {detail[name]}", file=sys.stderr)
    best = max(scores, key=scores.get)
    first = _option_name(key, options[0])
    if scores[best] - scores[first] < min_gain:
        best = first
    chosen = options[list(scores).index(best)]
    setattr(decoder, key, chosen)
    report[key] = {"metric": f"mean Dice over 1..{n_clicks} clicks", "images": sum(len(split[t]) for t in seg),
                   "objects": objects, **{k: round(v, 4) for k, v in scores.items()}, "curves": detail, "chosen": best}
    return chosen


#: click windows tried by ``--clicks`` (``None``: every click), simplest first (ties keep it)
CLICK_WINDOWS = (None, 4, 5, 6, 8, 10)
#: zoomed views tried by ``--clicks`` (``decoder.click_zoom``: ``None`` never; ``(N, E)`` from click N + 1 on, on a
#: view E times the mask's extent), simplest first
CLICK_ZOOMS = (None, (1, 2.0), (2, 1.5), (2, 2.0), (2, 2.5), (3, 2.0))
#: a zoom must raise the curve's mean Dice by at least this much over none: it costs an encoder pass per object
#: (on fetal_head val, 50 heads, the best zoom scored 0.9701 against 0.9698 without; on breast val 0.9405 against 0.9348)
ZOOM_MIN_GAIN = 0.002
#: merges tried by ``--clicks`` (``decoder.click_merge``: ``None`` the answer taken whole; ``N`` from click N + 1 on,
#: only the changed region that holds the click), simplest first
CLICK_MERGES = (None, 3, 5, 8, 10)
#: first-click answers tried by ``--clicks`` (``decoder.first_click``), simplest first
FIRST_CLICKS = ("direct", "box_refine")


def tune_click_window(model, split, seg, n_clicks: int, report: dict) -> int | None:
    """``decoder.click_window`` with the best mean Dice over the 1..``n_clicks`` click curve; scores into ``report``."""
    return _choose(model.adapter.decoder, "click_window", CLICK_WINDOWS, model, split, seg, n_clicks, report)


def tune_click_zoom(model, split, seg, n_clicks: int, report: dict) -> tuple[int, float] | None:
    """``decoder.click_zoom`` with the best mean Dice over the 1..``n_clicks`` click curve, if it beats no zoom by
    :data:`ZOOM_MIN_GAIN`; scores into ``report``."""
    return _choose(model.adapter.decoder, "click_zoom", CLICK_ZOOMS, model, split, seg, n_clicks, report,
                   ZOOM_MIN_GAIN)


def tune_click_merge(model, split, seg, n_clicks: int, report: dict) -> int | None:
    """``decoder.click_merge`` with the best mean Dice over the 1..``n_clicks`` click curve (after the window and
    the zoom: it merges their answers); scores into ``report``."""
    return _choose(model.adapter.decoder, "click_merge", CLICK_MERGES, model, split, seg, n_clicks, report)


def _option_name(key: str, option) -> str:
    """How ``report[key]`` names ``option``: ``all`` / ``off`` for ``None``, ``after 2, x2`` for a zoom."""
    if option is None:
        return "off" if key in ("click_zoom", "click_merge") else "all"
    if key == "click_zoom":
        return f"after {option[0]}, x{option[1]:g}"
    if key == "click_merge":
        return f"after {option}"
    return str(option)


def tune_first_click(model, split, seg, n_clicks: int, report: dict) -> str:
    """``decoder.first_click`` with the best mean Dice over the 1..``n_clicks`` click curve; scores into ``report``."""
    return _choose(model.adapter.decoder, "first_click", FIRST_CLICKS, model, split, seg, n_clicks, report)


def tune_quality(model, split, seg, report: dict, train_split=None) -> str:
    """``decoder.quality`` by :func:`usam.train.calibrate.choose_quality` on the first clicks of every segmentation
    object of ``split``, ``fitted`` among the candidates when ``train_split`` is given (its map fitted there by
    :func:`usam.train.calibrate.fit_quality`, never on ``split``); figures into ``report["quality"]``."""
    from usam.errors import UsamError
    from usam.train.calibrate import (QUALITY_FIT_MIN_OBJECTS, QUALITY_SLACK, choose_quality, first_click_quality,
                                      fit_quality)

    def figures_of(rows_by_task, what):
        figures: dict[str, list[float]] = {}
        for tid in seg:
            for k, v in first_click_quality(model, rows_by_task[tid], desc=f"quality {what} {tid}").items():
                figures.setdefault(k, []).extend(v)
        return figures

    train = figures_of(train_split, "fit") if train_split else None
    fit = None
    if train and len(train["measured"]) >= QUALITY_FIT_MIN_OBJECTS:
        try:
            fit = fit_quality(train)
        except UsamError as exc:
            print(f"quality fitted: not a candidate, {exc}", file=sys.stderr)
    elif train:
        print(f"quality fitted: not a candidate, {len(train['measured'])} train objects "
              f"({QUALITY_FIT_MIN_OBJECTS} needed)", file=sys.stderr)
    figures = figures_of(split, "choose")
    chosen, table = choose_quality(figures, fit=fit)
    for k, row in table.items():
        print(f"quality {k}: first-click IoU error {row['iou_error']} Spearman {row['iou_spearman']}", file=sys.stderr)
    report["quality"] = {"metric": f"Spearman with the measured IoU of the chosen first-click mask (error at most "
                                   f"{QUALITY_SLACK} above the predicted IoU's)", "objects": len(figures["measured"]),
                         **table, "chosen": chosen}
    if fit is not None:
        report["quality"]["fit"] = {"quality_fit": list(fit), "train_objects": len(train["measured"]),
                                    "how": "least mean absolute error on the train split's first clicks"}
    model.adapter.decoder.quality = chosen
    model.adapter.decoder.quality_fit = fit if chosen == "fitted" else None
    return chosen


def tune_heads(model, split, seg, report: dict) -> dict:
    """Head options task by task, segmentation first, each variant scored on ``split``; scores into ``report``."""
    from usam.heads.refine import postprocess_classes
    from usam.io import read_image, read_mask
    from usam.ops.masks import dice
    from usam.ops.metrics import box_iou

    adapter = model.adapter
    tasks = adapter.tasks
    choices, images = {}, {}
    truth = functools.lru_cache(maxsize=None)(read_mask)  # each mask read once, whatever the variants

    def predictions(tid, opts):
        adapter.config.head_options = {**choices, **({tid: opts} if opts else {})}
        out = []
        for s in split[tid]:
            if s.image_path not in images:
                images[s.image_path] = read_image(s.image_path)
            out.append(model.predict(images[s.image_path]))
        return out

    def score(spec, tid, preds, post=None):
        vals = []
        for s, pred in zip(split[tid], preds):
            if spec.kind == "detection":
                vals.append(box_iou(pred.boxes[tid], s.box))
            elif spec.kind == "segmentation":
                gt = truth(s.mask_path)
                m = pred.masks[tid] if post is None else postprocess_classes(pred.masks[tid], post)
                vals.append(float(np.mean([dice(m == c, gt == c) for c in range(1, spec.num_classes)])))
            else:
                vals.append(float(np.linalg.norm(pred.keypoints[tid] - s.points, axis=1).mean()))
        return float(np.mean(vals))

    order = sorted(tasks, key=lambda t: tasks[t].kind != "segmentation")
    for tid in order:
        spec = tasks[tid]
        refine = [{}]
        if adapter.decoder is not None:
            refine += [{"refine_decoder": r} for r in ("base", "tuned") + ("boxes",) * (adapter.decoder.boxes is not None)]
        if spec.kind == "detection":
            variants = {"raw": {}}
            for r in refine[1:]:
                variants[f"refine_{r['refine_decoder']}"] = {"refine_with_decoder": True, **r}
            variants.update({f"box_from_{t}": {"box_from": t} for t in seg})
        elif spec.kind == "segmentation":
            variants = segmentation_variants(refine, getattr(adapter.heads[tid], "locator", None) is not None)
        elif spec.kind == "regression" and spec.num_classes == 4 and seg:
            variants = {"raw": {}, f"ellipse_from_{seg[0]}": {"ellipse_from": seg[0]}}
        else:
            continue
        scores, cached = {}, {}
        for label, opts in variants.items():
            cached[label] = predictions(tid, opts)
            scores[label] = score(spec, tid, cached[label])
        better = min if spec.kind == "regression" else max
        best = better(scores, key=scores.get)
        opts = dict(variants[best])
        if spec.kind == "segmentation":
            # post-processing on the chosen masks: largest component, then an ellipse per class
            post_scores = {}
            for lc in (False, True):
                fills = [[]] + [[c] for c in range(1, spec.num_classes)]
                for fill in fills:
                    post = {**({"largest_component": True} if lc else {}), **({"ellipse_fill": fill} if fill else {})}
                    post_scores[json.dumps(post, sort_keys=True)] = score(spec, tid, cached[best], post)
            best_post = max(post_scores, key=post_scores.get)
            opts.update(json.loads(best_post))
            scores.update({f"{best}+{k}": v for k, v in post_scores.items() if k != "{}"})
            best = best if best_post == "{}" else f"{best}+{best_post}"
        report[tid] = {"metric": {"detection": "iou", "segmentation": "dice"}.get(spec.kind, "mre_px"),
                       **{k: round(v, 4) for k, v in scores.items()}, "chosen": best}
        if getattr(adapter.heads[tid], "locator", None) is not None:
            opts.setdefault("locate", "off")  # a trained localisation head stays in heads.safetensors
        if opts:
            choices[tid] = opts
        adapter.config.head_options = dict(choices)  # later tasks (box_from, ellipse_from) see the chosen masks
    return choices


#: ``mask_threshold`` candidates (logits; ties go to the one listed first, SAM's 0)
MASK_THRESHOLDS = (0.0, -0.5, 0.5, 1.0, 1.5)
#: a threshold other than SAM's 0 must score at least this much better than 0, relatively (val noise: on breast val,
#: 63 lesions, -0.5 scored Dice 0.7758 against 0.7750)
THRESHOLD_MIN_GAIN = 0.01


def tune_mask_threshold(model, split, seg, report: dict) -> dict:
    """The automatic masks' ``mask_threshold`` per segmentation task, with its other head options as chosen: by mean
    head-circumference error (mm) where every row of the task carries one and a pixel size, else by mean Dice.
    Returns the adapter's head options with the choices (0 is left out); scores into ``report["mask_threshold"]``."""
    from usam.io import read_image, read_mask
    from usam.ops.masks import dice
    from usam.tasks.cells import finite
    from usam.tasks.segmentation import mask_hc_mm

    options = model.adapter.config.head_options
    records = {}
    for tid in seg:
        rows = split[tid]
        truth = [finite(s.extra.get("head_circumference_mm")) if s.pixel_size_mm else None for s in rows]
        hc = bool(rows) and all(t is not None for t in truth)
        if not hc:
            truth = [read_mask(s.mask_path) for s in rows]
        images = [read_image(s.image_path) for s in rows]  # read once for every threshold
        n_fg = model.adapter.tasks[tid].num_classes - 1
        own = dict(options.get(tid, {}))
        own.pop("mask_threshold", None)
        scores = {}
        for t in MASK_THRESHOLDS:
            options[tid] = {**own, **({"mask_threshold": t} if t else {})}
            vals = []
            for s, image, true in zip(rows, images, truth):
                mask = model.predict(image).masks[tid]  # embeddings cached by content
                if hc:
                    vals.append(abs(mask_hc_mm(s, mask) - true))
                else:
                    vals.append(float(np.mean([dice(mask == c, true == c) for c in range(1, n_fg + 1)])))
            scores[str(t)] = float(np.mean(vals))
        best = (min if hc else max)(scores, key=scores.get)  # ties: the first listed (0)
        gain = (scores["0.0"] - scores[best]) if hc else (scores[best] - scores["0.0"])
        if gain < THRESHOLD_MIN_GAIN * abs(scores["0.0"]):
            best = "0.0"
        options[tid] = {**own, **({"mask_threshold": float(best)} if float(best) else {})}
        if not options[tid]:
            del options[tid]
        records[tid] = {"metric": "hc_abs_err_mm" if hc else "dice", "images": len(rows),
                        **{k: round(v, 4) for k, v in scores.items()}, "chosen": best}
    report["mask_threshold"] = records
    return dict(options)


def tune_box_route(model, split, seg, report: dict) -> str | None:
    """The decoder that answers a user's box alone (backbone's ``base`` / ``tuned`` / the click decoder, ``clicks``,
    where there is one / the backbone's on the bare encoder's embedding, ``bare``, for an adapter with encoder LoRA /
    the box decoder, ``boxes``, where there is one) by Dice from ground-truth boxes on every segmentation object of
    ``split``; ``None`` without a tuned decoder. Scores into ``report``."""
    from usam.train.boxes import box_dices

    adapter = model.adapter
    if adapter.decoder is None or not seg:
        return None
    samples = [s for tid in seg for s in split[tid]]
    images = {str(s.image_path) for s in samples}
    routes = (["base", "tuned"] + ["clicks"] * (adapter.decoder.clicks is not None) + ["bare"] * bool(adapter.lora_name)
              + ["boxes"] * (adapter.decoder.boxes is not None))
    route_scores = {}
    for route in routes:  # ties: the one listed first ("bare" costs an encoder pass more)
        vals = box_dices(model, samples, route)
        route_scores[route] = float(np.mean(vals))
    box_route = max(route_scores, key=route_scores.get)  # ties: base (listed first)
    adapter.decoder.box_prompts = box_route
    report["box_prompts"] = {"metric": "dice from ground-truth boxes", "images": len(images), "objects": len(vals),
                             **{k: round(v, 4) for k, v in route_scores.items()}, "chosen": box_route}
    return box_route


def segmentation_variants(refine: list[dict], locator: bool) -> dict[str, dict]:
    """Automatic-mask variants: the learned tokens' logits as they are or refined by their box (base / tuned
    box path or the box decoder, 1 or 2 rounds); with a localisation head also its best peak box (``locate: heatmap``,
    answered by each decoder of ``refine``, or by the backbone's where it has no tuned decoder), alone or refined once
    more by the box of its mask."""
    variants = {"raw": {}}
    starts = {"": {}, **({"locate_": {"locate": "heatmap"}} if locator else {})}
    for prefix, start in starts.items():
        if prefix:  # named by its decoder where there is a choice: a later box_prompts change must not move it
            if not refine[1:]:
                variants[prefix + "raw"] = dict(start)
            for r in refine[1:]:
                variants[f"{prefix}raw_{r['refine_decoder']}"] = {**start, **r}
        for r in refine[1:]:
            for rounds in (1, 2):
                variants[f"{prefix}refine_{r['refine_decoder']}_x{rounds}"] = {
                    **start, "refine_with_box": True, **r, **({"refine_rounds": 2} if rounds == 2 else {})}
    return variants


if __name__ == "__main__":
    sys.exit(main())
