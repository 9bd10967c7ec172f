"""What a task kind is: the interface each kind's object implements (:class:`TaskKind`).

A kind owns, for every task of that kind: which CSV columns a row needs and how a row is parsed
(:meth:`TaskKind.parse_row`), its head (:meth:`~TaskKind.build_head`), its training target and loss
(:meth:`~TaskKind.target`, :meth:`~TaskKind.loss`), its entry in the challenge's output files
(:meth:`~TaskKind.output_entry`, :meth:`~TaskKind.truth_entry`) and its official metrics
(:meth:`~TaskKind.evaluate`). The four kinds are in :mod:`usam.tasks.segmentation`, ``classification``,
``detection`` and ``regression``; :data:`usam.tasks.KINDS` maps a kind's name to its object.

Rows are duck-typed :class:`usam.data.fmc.Sample` objects (``task_id``, ``kind``, ``num_classes``,
``rel_image_path``, ``image_path`` and the kind's own label fields); predictions are
:class:`usam.heads.Prediction` objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

__all__ = ["PredictionSource", "RowCheck", "Target", "TaskKind"]


@dataclass
class Target:
    """Model-space training target of one row. Exactly one of the label fields is set, by ``kind``.

    Targets live in the decoder's low-res space (``256 x 256`` covering the padded model input):
    segmentation class maps ``(256, 256)``, boxes ``(4,)`` and points ``(N, 2)`` in model-input pixels.
    """

    kind: str
    class_map: np.ndarray | None = None   # (256, 256) uint8
    label: int | None = None
    box: np.ndarray | None = None         # (4,) model-input pixels
    points: np.ndarray | None = None      # (N, 2) model-input pixels


@dataclass
class RowCheck:
    """What a kind needs to parse one CSV row (:meth:`TaskKind.parse_row`).

    Attributes:
      csv_dir: folder of the CSV (paths in it are relative to it).
      check_files: check that the files a row names exist.
      check_geometry: check coordinates / masks against the image (``size``).
      size: ``(W, H)`` of the row's image when ``check_geometry`` could read it, else ``None``.
      problem: records one problem of this row (a message without the file / line prefix).
      state: per-CSV memory of this kind across rows (e.g. the name given to each class label).
      where: how the row is named in messages (``file line L (row R)``).
    """

    csv_dir: Path
    check_files: bool
    check_geometry: bool
    size: tuple[int, int] | None
    problem: Callable[[str], None]
    state: dict = field(default_factory=dict)
    where: str = ""

    def resolve(self, rel: str) -> Path:
        """A path written in the CSV, made absolute (relative paths are relative to :attr:`csv_dir`)."""
        p = Path(rel)
        return (p if p.is_absolute() else self.csv_dir / p).resolve()


class PredictionSource(Protocol):
    """How the challenge evaluator hands a kind the predictions of one task (:meth:`TaskKind.evaluate`)."""

    def entry(self, sample) -> tuple[int | None, dict | None]:
        """``(index, entry)`` of the JSON entry answering ``sample`` (``(None, None)``: none)."""

    def where(self, sample, index: int | None) -> str:
        """How to name that entry in a message."""

    def image_size(self, sample) -> tuple[int, int]:
        """``(W, H)`` of the sample's image."""

    def mask(self, sample, truth: np.ndarray) -> tuple[np.ndarray | None, str, str]:
        """``(predicted class ids (H, W) or None when absent, output path as written, file path)``."""


class TaskKind:
    """One kind of task. Subclasses set the attributes and implement the methods.

    Attributes:
      name: the kind's name (``segmentation`` ...); the CSV's ``task_name`` in any case.
      min_classes: fewest ``num_classes`` a task of this kind may have.
      min_classes_rule: why (a message fragment), for kinds whose minimum is above 1.
      count_noun: what ``num_classes`` counts in messages (``classes`` / ``points``).
      hflip: default of a suite task's ``hflip`` (may a horizontal flip be an augmentation).
      columns: CSV columns a row needs besides ``image_path, task_id, task_name, num_classes``.
      pred_file: the challenge's prediction file of this kind (``None``: one PNG per row).
      answer_keys: the keys of an output entry that carry the prediction.
      answers_combine: whether an entry may give several answer keys at once (classification: class and
        probabilities) rather than one of them (pixels or normalised coordinates).
      main_metrics: the headline metrics of :meth:`evaluate`, in report order.
      prediction_field: the :class:`~usam.heads.Prediction` field holding this kind's outputs.
      pipeline_tag: the Hugging Face Hub pipeline tag of a model doing this kind of task.
    """

    name: str = ""
    min_classes: int = 1
    min_classes_rule: str = ""
    count_noun: str = "classes"
    hflip: bool = True
    columns: tuple[str, ...] = ()
    pred_file: str | None = None
    answer_keys: tuple[str, ...] = ()
    answers_combine: bool = False
    main_metrics: tuple[str, ...] = ()
    prediction_field: str = ""
    pipeline_tag: str = ""

    def __repr__(self) -> str:
        return f"<task kind {self.name}>"

    # ------------------------------------------------------------------ CSV rows
    def csv_columns(self, num_classes: int) -> list[str]:
        """The columns a CSV of a task with ``num_classes`` needs besides the base ones."""
        return list(self.columns)

    def is_own_column(self, column: str) -> bool:
        """Whether ``column`` is one this kind reads (so it is not an extra column of the row)."""
        return column in self.columns

    def header_problems(self, header: list[str], num_classes: int) -> list[str]:
        """Problems of a CSV header for a task with ``num_classes`` (``[]``: fine)."""
        missing = [c for c in self.csv_columns(num_classes) if c not in header]
        if missing:
            return [f"missing column(s) {missing} needed by task_name {self.name!r} with num_classes={num_classes}"]
        return []

    def parse_row(self, sample, row: dict, check: RowCheck) -> None:
        """Set the sample's label fields from a CSV row, recording problems with ``check.problem``."""
        raise NotImplementedError

    def class_names(self, state: dict, num_classes: int) -> list[str] | None:
        """Class names gathered from the rows (``state`` of :class:`RowCheck`), when every class is named."""
        return None

    def describe_outputs(self, num_classes: int) -> str:
        """What a task of this kind outputs, for a model card (e.g. ``3 classes``)."""
        return f"{num_classes} {self.count_noun}"

    # ------------------------------------------------------------------ model and training
    def build_head(self, spec, input_size: int, embed_dim: int = 256):
        """The head ``nn.Module`` of task ``spec`` for a backbone of ``input_size`` px and ``embed_dim`` channels."""
        raise NotImplementedError

    def target(self, sample, geo, mask=None, box=None, points=None) -> Target:
        """Training target of ``sample`` under geometry ``geo``; ``mask`` / ``box`` / ``points`` override the
        row's own (augmented copies)."""
        raise NotImplementedError

    def loss(self, head, emb, targets: list[Target], size: float, decoder=None):
        """Scalar training loss of ``head`` on embeddings ``emb (B, C, h, w)`` against ``targets``; ``size`` is the
        model input side in pixels, ``decoder`` the prompt decoder (segmentation heads run through it)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ challenge outputs
    def output_entry(self, sample, pred, hw: tuple[int, int], out_rel: str | None = None) -> dict:
        """The answer fields of ``sample``'s output entry from a :class:`~usam.heads.Prediction` of an image of
        size ``hw = (H, W)`` (``out_rel``: where its mask PNG is written, for per-row PNG kinds)."""
        raise NotImplementedError

    def output_mask(self, sample, pred, hw: tuple[int, int]) -> np.ndarray | None:
        """The ``(H, W)`` uint8 PNG written for ``sample`` (``None``: this kind writes no per-row file)."""
        return None

    def truth_entry(self, sample, image_size: Callable[[], tuple[int, int]]) -> dict | None:
        """The answer fields a perfect predictor writes for ``sample`` (``image_size()``: its image's ``(W, H)``,
        read on demand); ``None``: the answer is a file copied from the truth."""
        return None

    def evaluate(self, samples: list, source: PredictionSource) -> dict:
        """Score one task: ``{"metrics": {...}, "cases": [...], "missing": int, ...}``."""
        raise NotImplementedError
