"""FMC_UIA challenge scoring: official metrics, evaluation of a prediction folder, and reports.

- :mod:`usam.ops.metrics`: pure metric functions on numpy arrays;
- :func:`evaluate`: score a prediction folder against a split (``usam evaluate``);
- :func:`write_report`: ``report.md`` / ``report.json`` / PNG figures from the results;
- :func:`write_ground_truth_as_predictions`: a perfect predictor's output, for checks.
"""

from __future__ import annotations

from .evaluate import evaluate, write_ground_truth_as_predictions
from .report import write_report

__all__ = ["evaluate", "write_ground_truth_as_predictions", "write_report"]
