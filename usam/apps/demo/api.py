"""The ``/segment`` API's request: ``prompts_json`` checked and turned into :meth:`Predictor.predict` arguments.

``prompts_json`` keys: ``points`` ``[[x, y], ...]``, ``labels`` ``[1, 0, ...]`` (1 positive, default all 1),
``box`` ``[x0, y0, x1, y1]``, ``adapter`` (a loaded adapter's name; default: the bare backbone, which needs a
``box`` when it was trained on boxes only), ``multimask`` (default: true for a single point without box).
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from ...errors import PromptError
from ...predictor import check_points
from .session import BARE_POINTS_MESSAGE, NONE_CHOICE

KEYS = ("points", "labels", "box", "adapter", "multimask")


def parse_prompts(prompts_json: str | dict | None) -> dict:
    """The request as a dict; a bad one raises :class:`~usam.errors.PromptError` saying what to write."""
    if isinstance(prompts_json, dict):
        prompts = prompts_json
    else:
        try:
            prompts = json.loads(prompts_json or "{}")
        except json.JSONDecodeError as exc:
            raise PromptError(f"prompts_json is not valid JSON ({exc.msg} at character {exc.pos}): e.g. "
                              '{"points": [[120, 80]], "labels": [1], "box": [50, 40, 200, 160]}') from exc
    if not isinstance(prompts, dict):
        raise PromptError('prompts_json must be a JSON object like {"points": [[x, y]], "labels": [1], "box": [x0, y0, x1, y1]}')
    unknown = set(prompts) - set(KEYS)
    if unknown:
        raise PromptError(f"unknown keys in prompts_json: {sorted(unknown)} (use {', '.join(KEYS)})")
    return prompts


def request_adapter(prompts: dict, loaded: Sequence[str]) -> str | None:
    """The adapter the request names (``None``: the bare backbone); it must be loaded."""
    adapter = prompts.get("adapter")
    if adapter in ("", NONE_CHOICE):
        adapter = None
    if adapter is not None and adapter not in loaded:
        raise PromptError(f"no adapter named {adapter!r} is loaded (loaded: {', '.join(loaded) or 'none'})")
    return adapter


def bare_points_error(points, labels, shape, loaded: Sequence[str]) -> PromptError:
    """Points without a box for a box-only bare backbone (a bad point is reported as such first)."""
    check_points(points, labels, shape)
    if loaded:
        hint = (f'Add "box": [x0, y0, x1, y1], or name an adapter: "adapter": "{loaded[0]}" '
                f"(loaded: {', '.join(loaded)})")
    else:
        hint = 'Add "box": [x0, y0, x1, y1] (no organ adapter is loaded: start the demo with --adapters for points)'
    return PromptError(f"no adapter given, and {BARE_POINTS_MESSAGE.split(': ', 1)[0]}: a point without a box "
                       f"gives no usable mask. {hint}.")


def prompt_values(prompts: dict) -> tuple[list | None, list | None, list | None]:
    """``(points, labels, box)`` of a request; labels default to all positive; points or a box is required."""
    points, labels, box = prompts.get("points") or None, prompts.get("labels"), prompts.get("box") or None
    if points is not None and not isinstance(points, list):
        raise PromptError(f'"points" must be a list of [x, y] pairs, got {points!r}')
    if points is not None and labels is None:
        labels = [1] * len(points)
    if points is None and box is None:
        raise PromptError('give "points" and/or "box" in prompts_json')
    return points, labels, box


def predict_kwargs(prompts: dict, points, labels, box) -> dict[str, Any]:
    """:meth:`Predictor.predict` keyword arguments of a request (multimask by default for one point alone)."""
    multimask = prompts.get("multimask", points is not None and len(points) == 1 and box is None)
    if not isinstance(multimask, bool):
        raise PromptError(f'"multimask" must be true or false, got {multimask!r}')
    kwargs: dict[str, Any] = {"multimask_output": multimask}
    if points is not None:
        kwargs["point_coords"], kwargs["point_labels"] = points, labels
    if box is not None:
        kwargs["box"] = box
    return kwargs
