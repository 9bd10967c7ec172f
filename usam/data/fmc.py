"""Reader for the FMC_UIA challenge layout: ``<split>/csv_files/<task_id>.csv`` + images and masks.

CSV columns (paths relative to ``csv_files/``):

- always: ``image_path, task_id, task_name, num_classes``
- ``segmentation``: ``mask_path`` (PNG of class ids, 0 = background)
- ``classification``: ``mask`` (the integer class label)
- ``detection``: ``x_min, y_min, x_max, y_max`` (one box, pixels, inclusive pixel extent)
- ``Regression``: ``point_1_xy ... point_N_xy`` (JSON ``[x, y]`` in pixels, ``N = num_classes``)
- optional: ``label_name`` (classification), ``label_names`` (JSON list), ``pixel_size_mm``; anything else
  goes to :attr:`Sample.extra` (as a float when it parses as one).

Coordinates are ``(x, y)`` pixels with pixel centres at integer positions (as in OpenCV and segment_anything).

Every CSV is validated in full before anything is returned: all bad rows of all CSVs are reported in one
:class:`~usam.errors.DataError` (file, line, what is wrong), so a user fixes a data set in one pass.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..tasks.spec import KINDS, normalise_kind

#: Columns every CSV must have.
BASE_COLUMNS = ("image_path", "task_id", "task_name", "num_classes")
#: Columns each kind needs besides :data:`BASE_COLUMNS` (regression: ``point_k_xy``, k = 1..num_classes).
KIND_COLUMNS = {
    "segmentation": ("mask_path",),
    "classification": ("mask",),
    "detection": ("x_min", "y_min", "x_max", "y_max"),
    "regression": (),
}
#: With ``check_geometry``, points may lie this fraction of the image's longer side outside it: points
#: derived from an ellipse cut by the image border (HC18) legitimately fall just outside.
POINT_MARGIN_FRAC = 0.05
#: Problems listed in one error message before "... and N more".
MAX_LISTED = 20

_POINT_COLUMN = re.compile(r"^point_(\d+)_xy$")
_KNOWN = set(BASE_COLUMNS) | {"mask_path", "mask", "x_min", "y_min", "x_max", "y_max", "label_names", "pixel_size_mm"}


@dataclass(eq=False)
class Sample:
    """One row of a task CSV (or one image of a folder data set).

    Attributes:
      image_path: absolute, resolved path of the image.
      rel_image_path: the path exactly as written in the CSV (relative to ``csv_files/``).
      task_id, kind, num_classes: see :class:`~usam.tasks.spec.TaskSpec`.
      mask_path, rel_mask_path: segmentation label PNG ``(H, W)`` of class ids (absolute / as in the CSV).
      label: classification class id in ``[0, num_classes)`` (the CSV column ``mask``).
      box: detection box ``(x_min, y_min, x_max, y_max)`` in pixels.
      points: regression points, ``(N, 2)`` float64 ``(x, y)`` pixels, ``N = num_classes``, in CSV order.
      pixel_size_mm: physical size of a pixel when the CSV gives it.
      class_names: ``num_classes`` names (from ``label_names`` or the ``label_name`` of each class), or ``None``.
      extra: the remaining columns (e.g. ``head_circumference_mm``; floats where they parse, else strings).
    """

    image_path: Path
    rel_image_path: str
    task_id: str
    kind: str
    num_classes: int
    mask_path: Path | None = None
    rel_mask_path: str | None = None
    label: int | None = None
    box: tuple[float, float, float, float] | None = None
    points: np.ndarray | None = None
    pixel_size_mm: float | None = None
    class_names: list[str] | None = None
    extra: dict = field(default_factory=dict)


class _Problems:
    """Collects ``(file, where, what)`` problems and raises them as one :class:`DataError`.

    At most :data:`MAX_LISTED` are listed, shared fairly between files so a flood in one CSV does not
    hide the problems of another; the header counts the problems of each file.
    """

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []  # (file name, message)

    def add(self, where: str, what: str) -> None:
        self.items.append((where.split(" ", 1)[0], f"{where}: {what}"))

    def __len__(self) -> int:
        return len(self.items)

    def raise_if_any(self, subject: str) -> None:
        if not self.items:
            return
        by_file: dict[str, list[str]] = {}
        for f, msg in self.items:
            by_file.setdefault(f, []).append(msg)
        quota = dict.fromkeys(by_file, 0)
        left = min(MAX_LISTED, len(self.items))
        while left:
            for f in by_file:
                if left and quota[f] < len(by_file[f]):
                    quota[f] += 1
                    left -= 1
        lines = [m for f, msgs in by_file.items() for m in msgs[: quota[f]]]
        more = len(self.items) - len(lines)
        counts = f" ({', '.join(f'{f}: {len(m)}' for f, m in by_file.items())})" if len(by_file) > 1 else ""
        lines += [f"... and {more} more"] if more else []
        raise DataError(f"{subject}: {len(self.items)} problem(s){counts}:\n  " + "\n  ".join(lines))


def _where(csv_name: str, line: int, row: int) -> str:
    return f"{csv_name} line {line} (row {row})"


def _parse_int(text: str) -> int | None:
    """An integer, also written as ``2.0`` (as pandas writes integer columns with gaps); else ``None``."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        v = float(text)
    except ValueError:
        return None
    return int(v) if math.isfinite(v) and v == int(v) else None


def _parse_float(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _parse_point(text: str) -> tuple[float, float] | None:
    try:
        v = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None
    if (
        not isinstance(v, list)
        or len(v) != 2
        or not all(isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) for c in v)
    ):
        return None
    return float(v[0]), float(v[1])


def _resolve(csv_dir: Path, rel: str) -> Path:
    p = Path(rel)
    return (p if p.is_absolute() else csv_dir / p).resolve()


def _image_size(path: Path, cache: dict) -> tuple[int, int] | str:
    """``(W, H)`` from the image header (nothing decoded), or an error string."""
    if path not in cache:
        from PIL import Image

        try:
            with Image.open(path) as im:
                cache[path] = tuple(im.size)
        except Exception as exc:  # PIL raises many types for unreadable files
            cache[path] = f"image file cannot be opened ({type(exc).__name__}: {exc})"
    return cache[path]


def _read_rows(csv_path: Path, problems: _Problems) -> tuple[list[str], list[tuple[int, dict]]] | None:
    """Header and ``(line, row dict)`` pairs, or ``None`` after recording why the file is unusable."""
    name = csv_path.name
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        problems.add(name, f"the file cannot be read as UTF-8 text ({exc})")
        return None
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        problems.add(name, f"the file is empty: expected a header line starting with {', '.join(BASE_COLUMNS)}")
        return None
    except csv.Error as exc:
        problems.add(name, f"the file is not valid CSV ({exc})")
        return None
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        problems.add(name, f"header repeats column(s) {dupes}")
        return None
    missing = [c for c in BASE_COLUMNS if c not in header]
    if missing:
        problems.add(name, f"missing column(s) {missing}: every task CSV needs {', '.join(BASE_COLUMNS)}")
        return None
    rows = []
    try:
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue  # blank line
            line = reader.line_num
            if len(cells) != len(header):
                problems.add(_where(name, line, len(rows) + 1), f"has {len(cells)} cells but the header has {len(header)} columns")
            rows.append((line, {h: (cells[i].strip() if i < len(cells) else "") for i, h in enumerate(header)}))
    except csv.Error as exc:
        problems.add(name, f"the file is not valid CSV near line {reader.line_num} ({exc})")
        return None
    if not rows:
        problems.add(name, "the file has a header but no rows")
        return None
    return header, rows


def _parse_csv(csv_path: Path, problems: _Problems, check_files: bool, check_geometry: bool, size_cache: dict) -> list[Sample]:
    """Parse and validate one task CSV, recording every problem; returns the samples of the valid rows."""
    name = csv_path.name
    csv_dir = csv_path.parent
    read = _read_rows(csv_path, problems)
    if read is None:
        return []
    header, rows = read
    n_before = len(problems)

    # Per-CSV consistency: task_id, task_name / kind, num_classes.
    for col in ("task_id", "task_name", "num_classes"):
        values = {}
        for i, (line, r) in enumerate(rows, 1):
            values.setdefault(r[col], f"line {line} (row {i})")
        if len(values) > 1:
            shown = ", ".join(f"{v!r} first at {w}" for v, w in list(values.items())[:5])
            problems.add(name, f"column {col} must have one value per CSV (one task per file), found {len(values)}: {shown}")

    point_cols = {int(m.group(1)): h for h in header if (m := _POINT_COLUMN.match(h))}
    checked_columns: dict[tuple[str, int], bool] = {}  # (kind, num_classes) -> columns ok

    def columns_ok(kind: str, n: int) -> bool:
        key = (kind, n)
        if key not in checked_columns:
            need = list(KIND_COLUMNS[kind])
            if kind == "regression":
                need += [f"point_{k}_xy" for k in range(1, n + 1)]
            missing = [c for c in need if c not in header]
            ok = not missing
            if missing:
                problems.add(name, f"missing column(s) {missing} needed by task_name {kind!r} with num_classes={n}")
            if kind == "regression":
                extra_pts = sorted(k for k in point_cols if k > n or k < 1)
                if extra_pts:
                    ok = False
                    problems.add(
                        name,
                        f"has point column(s) {[point_cols[k] for k in extra_pts]} but num_classes={n}: "
                        f"the number of point_k_xy columns must equal num_classes",
                    )
            checked_columns[key] = ok
        return checked_columns[key]

    samples: list[Sample] = []
    names_from_list: list[str] | None = None
    names_by_label: dict[int, tuple[str, str]] = {}  # label -> (name, where)
    for i, (line, r) in enumerate(rows, 1):
        where = _where(name, line, i)
        bad = len(problems)
        kind = normalise_kind(r["task_name"])
        if kind is None:
            problems.add(where, f"unknown task_name {r['task_name']!r}: expected segmentation, classification, detection or Regression")
        task_id = r["task_id"]
        if not task_id:
            problems.add(where, "task_id is empty")
        n = _parse_int(r["num_classes"])
        if n is None or n < 1:
            problems.add(where, f"num_classes {r['num_classes']!r} is not a positive integer")
        rel_image = r["image_path"]
        image_path = None
        if not rel_image:
            problems.add(where, "image_path is empty")
        else:
            image_path = _resolve(csv_dir, rel_image)
            if check_files and not image_path.is_file():
                problems.add(where, f"image file {rel_image!r} not found (looked for {str(image_path)!r})")
        pixel_size = None
        if r.get("pixel_size_mm"):
            pixel_size = _parse_float(r["pixel_size_mm"])
            if pixel_size is None or pixel_size <= 0:
                problems.add(where, f"pixel_size_mm {r['pixel_size_mm']!r} is not a positive number")
        row_names = None
        if r.get("label_names"):
            try:
                row_names = json.loads(r["label_names"])
            except json.JSONDecodeError:
                row_names = None
            if not isinstance(row_names, list) or not all(isinstance(s, str) for s in row_names):
                problems.add(where, f"label_names {r['label_names']!r} is not a JSON list of strings")
                row_names = None
            elif n is not None and len(row_names) != n:
                problems.add(where, f"label_names has {len(row_names)} names but num_classes is {n}")
            elif names_from_list is None:
                names_from_list = row_names
            elif row_names != names_from_list:
                problems.add(where, f"label_names {row_names} differ from {names_from_list} in earlier rows")
        if kind is None or n is None or n < 1 or not columns_ok(kind, n):
            continue

        sample = Sample(
            image_path=image_path, rel_image_path=rel_image, task_id=task_id, kind=kind, num_classes=n, pixel_size_mm=pixel_size
        )
        size = None
        if check_geometry and image_path is not None and image_path.is_file():
            size = _image_size(image_path, size_cache)
            if isinstance(size, str):
                problems.add(where, f"{rel_image!r}: {size}")
                size = None

        if kind == "segmentation":
            rel_mask = r["mask_path"]
            if not rel_mask:
                problems.add(where, "mask_path is empty")
            else:
                sample.rel_mask_path = rel_mask
                sample.mask_path = _resolve(csv_dir, rel_mask)
                if check_files and not sample.mask_path.is_file():
                    problems.add(where, f"mask file {rel_mask!r} not found (looked for {str(sample.mask_path)!r})")
                elif check_geometry and sample.mask_path.is_file():
                    _check_mask(sample, size, where, problems)
        elif kind == "classification":
            label = _parse_int(r["mask"])
            if label is None:
                problems.add(where, f"classification label (column mask) {r['mask']!r} is not an integer")
            elif not 0 <= label < n:
                problems.add(where, f"classification label (column mask) {label} is outside [0, {n - 1}] for num_classes={n}")
            else:
                sample.label = label
                lname = r.get("label_name", "")
                if lname:
                    prev = names_by_label.setdefault(label, (lname, where))
                    if prev[0] != lname:
                        problems.add(where, f"label {label} is named {lname!r} here but {prev[0]!r} at {prev[1]}")
        elif kind == "detection":
            vals = [_parse_float(r[c]) for c in ("x_min", "y_min", "x_max", "y_max")]
            if any(v is None for v in vals):
                cells = {c: r[c] for c in ("x_min", "y_min", "x_max", "y_max")}
                problems.add(where, f"box {cells} has a missing or non-numeric coordinate")
            elif vals[2] < vals[0] or vals[3] < vals[1]:
                problems.add(where, f"box {vals} is inverted: need x_min <= x_max and y_min <= y_max")
            else:
                sample.box = tuple(vals)
                if size is not None:
                    w, h = size
                    x0, y0, x1, y1 = vals
                    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
                        problems.add(where, f"box {vals} lies outside the {w}x{h} image")
        else:  # regression
            pts = []
            for k in range(1, n + 1):
                col = f"point_{k}_xy"
                if not r[col]:
                    problems.add(where, f"{col} is empty: expected JSON [x, y] ({n} points for num_classes={n})")
                    continue
                pt = _parse_point(r[col])
                if pt is None:
                    problems.add(where, f"{col} {r[col]!r} is not JSON [x, y] with two finite numbers")
                else:
                    pts.append(pt)
            if len(pts) == n:
                sample.points = np.asarray(pts, dtype=np.float64).reshape(n, 2)
                if size is not None:
                    w, h = size
                    m = POINT_MARGIN_FRAC * max(w, h)
                    p = sample.points
                    out = ~((p[:, 0] >= -m) & (p[:, 0] <= w - 1 + m) & (p[:, 1] >= -m) & (p[:, 1] <= h - 1 + m))
                    if out.any():
                        problems.add(where, f"point(s) {[f'point_{k + 1}_xy' for k in np.flatnonzero(out)]} lie outside the {w}x{h} image")

        sample.extra = {
            k: (_parse_float(v) if _parse_float(v) is not None else v)
            for k, v in r.items()
            if k not in _KNOWN and not _POINT_COLUMN.match(k) and v != ""
        }
        if len(problems) == bad:
            samples.append(sample)

    # Class names for the whole CSV: label_names, else the label_name of every class when all are named.
    if len(problems) == n_before and samples:
        n = samples[0].num_classes
        names = names_from_list
        if names is None and names_by_label and set(names_by_label) == set(range(n)):
            names = [names_by_label[k][0] for k in range(n)]
        if names is not None:
            for s in samples:
                s.class_names = list(names)
    return samples


def _check_mask(sample: Sample, size, where: str, problems: _Problems) -> None:
    """Mask values must be class ids ``< num_classes`` and its size must match the image's."""
    from ..errors import InputImageError
    from ..io import read_mask

    try:
        mask = read_mask(sample.mask_path)
    except InputImageError as exc:
        problems.add(where, str(exc))
        return
    if size is not None and (mask.shape[1], mask.shape[0]) != tuple(size):
        problems.add(where, f"mask {sample.rel_mask_path!r} is {mask.shape[1]}x{mask.shape[0]} but the image is {size[0]}x{size[1]}")
    top = int(mask.max()) if mask.size else 0
    if top >= sample.num_classes or (mask.size and int(mask.min()) < 0):
        problems.add(where, f"mask {sample.rel_mask_path!r} has value {top} but num_classes is {sample.num_classes} (values must be 0..{sample.num_classes - 1})")


def read_task_csv(csv_path: str | os.PathLike, check_files: bool = True, check_geometry: bool = False) -> list[Sample]:
    """Read and validate one task CSV.

    Args:
      csv_path: ``<split>/csv_files/<task_id>.csv``; image and mask paths are relative to its folder.
      check_files: check that every image and mask file exists.
      check_geometry: also open image headers (no decoding) to check that boxes and points lie inside the
        image (points may be :data:`POINT_MARGIN_FRAC` of the longer side outside), and read every mask to check
        its size and that its values are ``< num_classes``. Slower: seconds per thousand rows.

    Returns:
      One :class:`Sample` per row, in file order.

    Raises:
      DataError: listing every bad row (file, line, row, problem).
    """
    p = Path(csv_path)
    if not p.is_file():
        raise DataError(f"task CSV {str(p)!r} does not exist: expected <split>/csv_files/<task_id>.csv")
    problems = _Problems()
    samples = _parse_csv(p, problems, check_files, check_geometry, {})
    problems.raise_if_any(f"task CSV {str(p)!r}")
    return samples


def _csv_dir(root: Path) -> Path:
    if not root.is_dir():
        raise DataError(f"split directory {str(root)!r} does not exist: expected a folder holding csv_files/<task_id>.csv")
    csv_dir = root / "csv_files"
    if not csv_dir.is_dir():
        if root.name == "csv_files":
            return root
        raise DataError(
            f"no csv_files/ folder in {str(root)!r}: expected the FMC_UIA layout "
            f"<split>/csv_files/<task_id>.csv with image paths relative to csv_files/"
        )
    return csv_dir


def _first_task_id(csv_path: Path) -> str | None:
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            row = next(csv.DictReader(f), None)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return (row.get("task_id") or "").strip() if row else None


def read_split(
    root: str | os.PathLike,
    tasks: list[str] | None = None,
    check_files: bool = True,
    check_geometry: bool = False,
) -> dict[str, list[Sample]]:
    """Read every task CSV of a split directory (``root/csv_files/*.csv``).

    Args:
      root: the split folder, e.g. ``fmc_uia_dev/train`` (a ``csv_files`` folder itself is accepted too).
      tasks: task ids to read (matched against CSV file names, then against the task_id in each CSV);
        ``None`` reads all.
      check_files, check_geometry: as in :func:`read_task_csv`.

    Returns:
      ``{task_id: [Sample, ...]}`` ordered by CSV file name.

    Raises:
      DataError: no such folder, no ``csv_files/``, no CSVs, unknown requested tasks, duplicate task ids
        across CSVs, or any bad row in any CSV (all listed in one error).
    """
    root = Path(root)
    csv_dir = _csv_dir(root)
    csvs = sorted(p for p in csv_dir.glob("*.csv") if p.is_file())
    if not csvs:
        raise DataError(f"no task CSVs in {str(csv_dir)!r}: expected one <task_id>.csv per task")
    if tasks is not None:
        wanted = list(dict.fromkeys(tasks))
        by_stem = {p.stem: p for p in csvs}
        chosen = {t: by_stem[t] for t in wanted if t in by_stem}
        rest = [t for t in wanted if t not in chosen]
        if rest:
            ids = {_first_task_id(p): p for p in csvs if p not in chosen.values()}
            for t in rest:
                if t in ids:
                    chosen[t] = ids[t]
        unknown = [t for t in wanted if t not in chosen]
        if unknown:
            raise DataError(f"task(s) {unknown} not found in {str(csv_dir)!r}; available: {', '.join(p.stem for p in csvs)}")
        csvs = sorted(set(chosen.values()))
    problems = _Problems()
    size_cache: dict = {}
    out: dict[str, list[Sample]] = {}
    origin: dict[str, str] = {}
    for p in csvs:
        samples = _parse_csv(p, problems, check_files, check_geometry, size_cache)
        if not samples:
            continue
        tid = samples[0].task_id
        if tid in out:
            problems.add(p.name, f"task_id {tid!r} is also used by {origin[tid]}: one CSV per task")
            continue
        origin[tid] = p.name
        out[tid] = samples
    problems.raise_if_any(f"split {str(root)!r}")
    return out


def output_mask_relpath(rel_mask_path: str) -> str:
    """Where the challenge expects a predicted mask: ``mask_path`` with its leading ``../`` removed.

    ``"../Segmentation/Two/BUSI/masks/benign (1).png"`` -> ``"Segmentation/Two/BUSI/masks/benign (1).png"``,
    relative to the prediction output folder.

    Raises:
      DataError: the path is absolute or would still leave the output folder.
    """
    rel = rel_mask_path.replace("\\", "/")
    while rel.startswith("../") or rel.startswith("./"):
        rel = rel[3:] if rel.startswith("../") else rel[2:]
    parts = rel.split("/")
    if not rel or rel.startswith("/") or re.match(r"^[A-Za-z]:", rel) or ".." in parts:
        raise DataError(f"mask_path {rel_mask_path!r} cannot be turned into an output path inside the prediction folder")
    return rel


def unique_image_paths(split: dict[str, list[Sample]]) -> list[Path]:
    """Every distinct image of a split (tasks share images: BUSI is in 4 tasks), in first-seen order.

    Useful to compute one embedding per image however many tasks use it.
    """
    return list(dict.fromkeys(s.image_path for samples in split.values() for s in samples))


__all__ = [
    "BASE_COLUMNS",
    "KINDS",
    "KIND_COLUMNS",
    "POINT_MARGIN_FRAC",
    "Sample",
    "output_mask_relpath",
    "read_split",
    "read_task_csv",
    "unique_image_paths",
]
