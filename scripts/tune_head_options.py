#!/usr/bin/env python
"""Choose an adapter's inference-time head options on the validation split (never on test).

    .venv/bin/python scripts/tune_head_options.py adapters/breast [--data ../shared/data/fmc_uia_dev] [--split val]

- detection: the regressed box, or the extent of the mask the tuned decoder returns for it (``refine_with_decoder``);
- 4-point regression next to a segmentation task: the regressed points, or the axis ends of the ellipse fitted
  to the automatic mask (``ellipse_from``; fetal biometry's OFD / BPD landmarks are defined that way).
The option with the better validation score is written into the adapter's ``config.json`` (``head_options``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _dice(a, b) -> float:
    s = int(a.sum()) + int(b.sum())
    return 1.0 if s == 0 else 2.0 * int((a & b).sum()) / s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("adapter")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "fmc_uia_dev"))
    ap.add_argument("--split", default="val")
    args = ap.parse_args(argv)

    import usam
    from usam.data.fmc import read_split
    from usam.io import read_image, read_mask

    model = usam.load(adapters=[args.adapter], cache_size=512)
    adapter = model.adapter
    tasks = adapter.tasks
    seg = [t for t, s in tasks.items() if s.kind == "segmentation"]
    split = read_split(Path(args.data) / args.split, tasks=list(tasks))
    choices, report = {}, {}
    # segmentation first: the ellipse of biometry and box refinement read the automatic masks
    order = sorted(tasks, key=lambda t: tasks[t].kind != "segmentation")
    for tid in order:
        spec = tasks[tid]
        if spec.kind == "detection" and adapter.decoder is not None:
            variants = {"raw": {}, "refine_with_decoder": {"refine_with_decoder": True}}
        elif spec.kind == "segmentation" and adapter.decoder is not None:
            variants = {"raw": {}, "refine_with_box": {"refine_with_box": True}}
        elif spec.kind == "regression" and spec.num_classes == 4 and seg:
            variants = {"raw": {}, "ellipse_from": {"ellipse_from": seg[0]}}
        else:
            continue
        scores = {}
        for label, opts in variants.items():
            adapter.config.head_options = {**choices, **({tid: opts} if opts else {})}
            vals = []
            for s in split[tid]:
                pred = model.predict(read_image(s.image_path))
                if spec.kind == "detection":
                    vals.append(_iou(pred.boxes[tid], s.box))
                elif spec.kind == "segmentation":
                    gt = read_mask(s.mask_path)
                    vals.append(float(np.mean([_dice(pred.masks[tid] == c, gt == c) for c in range(1, spec.num_classes)])))
                else:
                    vals.append(float(np.linalg.norm(pred.keypoints[tid] - s.points, axis=1).mean()))
            scores[label] = float(np.mean(vals))
        better = min if spec.kind == "regression" else max
        best = better(scores, key=scores.get)
        report[tid] = {"metric": {"detection": "iou", "segmentation": "dice"}.get(spec.kind, "mre_px"), **scores, "chosen": best}
        if variants[best]:
            choices[tid] = variants[best]
            adapter.config.head_options = dict(choices)  # later tasks (ellipse_from) see the chosen mask
    cfg_path = Path(args.adapter) / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["head_options"] = choices
    cfg.setdefault("training", {})["head_options_validation"] = report
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
