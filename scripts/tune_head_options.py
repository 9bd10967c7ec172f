#!/usr/bin/env python
"""Choose an adapter's inference-time head options on the validation split (never on test).

    .venv/bin/python scripts/tune_head_options.py adapters/breast [--data ../shared/data/fmc_uia_dev] [--split val]

Options (``usam/heads/refine.py``), tried task by task, segmentation first (the others may read its masks):
- segmentation: automatic logits as they are, or refined by prompting the decoder with the box of each class's
  largest component (base or tuned box path, 1 or 2 rounds); where the adapter has a localisation head
  (``python -m usam.train.locate``), the same from its best peak box (``locate: heatmap``), otherwise it is
  kept as ``locate: off``; then optionally only the largest component,
  and optionally the ellipse fitted to a class (per class);
- detection: the regressed box, its extent after the decoder (base or tuned box path), or the extent of the
  automatic mask of a segmentation task of the same adapter;
- 4-point regression next to a segmentation task: the regressed points, or the axis ends of the ellipse fitted
  to the automatic mask (fetal biometry's OFD / BPD landmarks are defined that way);
- the decoder that answers a user's box prompt (``decoder.box_prompts``): the backbone's own or the tuned one.
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
    args = ap.parse_args(argv)

    import usam
    from usam.ops.masks import dice
    from usam.ops.metrics import box_iou
    from usam.data.fmc import read_split
    from usam.heads.refine import postprocess_classes
    from usam.io import read_image, read_mask

    model = usam.load(adapters=[args.adapter], cache_size=512)
    adapter = model.adapter
    tasks = adapter.tasks
    seg = [t for t, s in tasks.items() if s.kind == "segmentation"]
    split = {t: rows[: args.limit] for t, rows in read_split(Path(args.data) / args.split, tasks=list(tasks)).items()}
    choices, report = {}, {}
    images = {}
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
            refine += [{"refine_decoder": r} for r in ("base", "tuned")]
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
    box_route = None
    if adapter.decoder is not None and seg:
        # user box prompts: the backbone's own box path or the tuned decoder's, by Dice from ground-truth boxes
        from usam.predictor import Predictor
        from usam.ops.masks import mask_box

        predictor, route_scores = Predictor(model), {}
        for route in ("base", "tuned"):
            adapter.decoder.box_prompts = route
            vals = []
            for tid in seg:
                for s in split[tid]:
                    gt = truth(s.mask_path)
                    predictor.set_image(images[s.image_path])
                    for c in range(1, tasks[tid].num_classes):
                        if (gt == c).any():
                            m, _, _ = predictor.predict(box=mask_box(gt == c), multimask_output=False)
                            vals.append(dice(m[0], gt == c))
            route_scores[route] = float(np.mean(vals))
        box_route = max(route_scores, key=route_scores.get)  # ties: base (listed first)
        report["box_prompts"] = {"metric": "dice from ground-truth boxes", **{k: round(v, 4) for k, v in route_scores.items()},
                                 "chosen": box_route}
    cfg_path = Path(args.adapter) / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["head_options"] = choices
    if box_route:
        cfg["decoder"]["box_prompts"] = box_route
    cfg.setdefault("training", {})["head_options_validation"] = report
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    print(json.dumps(report, indent=1))
    return 0


def segmentation_variants(refine: list[dict], locator: bool) -> dict[str, dict]:
    """Automatic-mask variants: the learned tokens' logits as they are or refined by their box (base / tuned
    box path, 1 or 2 rounds); with a localisation head also its best peak box (``locate: heatmap``), alone or
    refined once more by the box of its mask."""
    variants = {"raw": {}}
    starts = {"": {}, **({"locate_": {"locate": "heatmap"}} if locator else {})}
    for prefix, start in starts.items():
        if prefix:
            variants[prefix + "raw"] = dict(start)
        for r in refine[1:]:
            for rounds in (1, 2):
                variants[f"{prefix}refine_{r['refine_decoder']}_x{rounds}"] = {
                    **start, "refine_with_box": True, **r, **({"refine_rounds": 2} if rounds == 2 else {})}
    return variants


if __name__ == "__main__":
    sys.exit(main())
