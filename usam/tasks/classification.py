"""Classification: one class per image, scored by AUC, accuracy, macro-F1 and MCC.

CSV: ``mask`` (the integer class label; optional ``label_name``). Head: :class:`~usam.heads.classify.ClassifyHead`.
Target: the label. Loss: cross-entropy. Output: ``classification_predictions.json`` entries
``{"predicted_class", "predicted_probs"}`` (probabilities in float64, summing to 1).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import DataError
from ..heads.classify import ClassifyHead
from ..ops import metrics as M
from .cells import numbers, parse_int
from .kind import PredictionSource, RowCheck, Target, TaskKind

__all__ = ["CLASSIFICATION", "Classification", "PROBS_SUM_TOL"]

#: Largest accepted ``|sum(predicted_probs) - 1|``.
PROBS_SUM_TOL = 1e-3


class Classification(TaskKind):
    name = "classification"
    min_classes = 2
    min_classes_rule = "a classification task needs num_classes >= 2"
    columns = ("mask",)
    pred_file = "classification_predictions.json"
    answer_keys = ("predicted_class", "predicted_probs")
    answers_combine = True
    main_metrics = ("auc", "accuracy", "macro_f1", "mcc")
    prediction_field = "probabilities"
    pipeline_tag = "image-classification"

    def parse_row(self, sample, row: dict, check: RowCheck) -> None:
        n = sample.num_classes
        label = parse_int(row["mask"])
        if label is None:
            check.problem(f"classification label (column mask) {row['mask']!r} is not an integer")
        elif not 0 <= label < n:
            check.problem(f"classification label (column mask) {label} is outside [0, {n - 1}] for num_classes={n}")
        else:
            sample.label = label
            self._note_name(label, row.get("label_name", ""), check)

    @staticmethod
    def _note_name(label: int, name: str, check: RowCheck) -> None:
        """Remember the ``label_name`` of ``label``; a different name for the same label is a problem."""
        if not name:
            return
        names = check.state.setdefault("names_by_label", {})  # label -> (name, where)
        prev = names.setdefault(label, (name, check.where))
        if prev[0] != name:
            check.problem(f"label {label} is named {name!r} here but {prev[0]!r} at {prev[1]}")

    def class_names(self, state: dict, num_classes: int) -> list[str] | None:
        names = state.get("names_by_label") or {}
        if names and set(names) == set(range(num_classes)):
            return [names[k][0] for k in range(num_classes)]
        return None

    def build_head(self, spec, input_size: int, embed_dim: int = 256):
        return ClassifyHead(spec.num_classes, embed_dim)

    def target(self, sample, geo, mask=None, box=None, points=None) -> Target:
        return Target(self.name, label=int(sample.label))

    def loss(self, head, emb, targets: list[Target], size: float, decoder=None):
        labels = torch.tensor([t.label for t in targets], device=emb.device)
        return nn.functional.cross_entropy(head(emb), labels)

    def output_entry(self, sample, pred, hw, out_rel=None) -> dict:
        p = np.asarray(pred.probabilities[sample.task_id], dtype=np.float64).reshape(-1)
        p = p / p.sum()
        return {"predicted_class": int(np.argmax(p)), "predicted_probs": [float(v) for v in p]}

    def truth_entry(self, sample, image_size) -> dict:
        probs = [0.0] * sample.num_classes
        probs[sample.label] = 1.0
        return {"predicted_class": int(sample.label), "predicted_probs": probs}

    def evaluate(self, samples: list, source: PredictionSource) -> dict:
        n_cls = samples[0].num_classes
        cases, missing_probs = [], 0
        for s in samples:
            index, e = source.entry(s)
            p, c, no_probs = _answer(e, n_cls, source.where(s, index))
            missing_probs += no_probs
            cases.append({
                "image_path": s.rel_image_path,
                "image_file": str(s.image_path),
                "label": int(s.label),
                "predicted_class": int(c),
                "predicted_probs": [float(v) for v in p],
                "correct": bool(c == s.label),
                "missing": e is None,
            })
        m = M.classification_metrics(np.array([s.label for s in samples]),
                                     np.array([c["predicted_probs"] for c in cases]),
                                     np.array([c["predicted_class"] for c in cases]))
        return {"metrics": m, "cases": cases, "missing": sum(c["missing"] for c in cases), "missing_probs": missing_probs}


def _answer(e: dict | None, n_cls: int, where: str) -> tuple[np.ndarray, int, bool]:
    """``(probabilities, class, probabilities missing)`` of one entry. No entry: uniform and class -1 (always
    wrong); no ``predicted_probs``: uniform; no ``predicted_class``: the argmax."""
    if e is None:
        return np.full(n_cls, 1.0 / n_cls), -1, False
    no_probs = e.get("predicted_probs") is None
    p = np.full(n_cls, 1.0 / n_cls) if no_probs else _probabilities(e["predicted_probs"], n_cls, where)
    c = int(np.argmax(p)) if e.get("predicted_class") is None else _class_id(e["predicted_class"], n_cls, where)
    return p, c, no_probs


def _probabilities(value, n_cls: int, where: str) -> np.ndarray:
    p = numbers(value, n_cls, "predicted_probs", where)
    if (p < 0).any():
        raise DataError(f"{where}: predicted_probs {[float(v) for v in p]} has negative values: write probabilities in [0, 1]")
    total = float(p.sum())
    if abs(total - 1.0) > PROBS_SUM_TOL:
        raise DataError(
            f"{where}: predicted_probs sum to {total:.6g}, not 1 (tolerance {PROBS_SUM_TOL:g}): write probabilities "
            f"(e.g. a softmax), not scores or logits"
        )
    return p


def _class_id(value, n_cls: int, where: str) -> int:
    try:
        c = int(value)
        ok = not isinstance(value, bool) and float(value) == c
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise DataError(f"{where}: predicted_class {value!r} is not an integer")
    if not 0 <= c < n_cls:
        raise DataError(f"{where}: predicted_class {c} is outside 0..{n_cls - 1} (the task has {n_cls} classes)")
    return c


CLASSIFICATION = Classification()
