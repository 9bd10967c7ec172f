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
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..tasks import KINDS, normalise_kind
from ..tasks.cells import parse_float, parse_int
from ..tasks.kind import RowCheck

#: Columns every CSV must have (each kind adds its own: :attr:`usam.tasks.kind.TaskKind.columns`).
BASE_COLUMNS = ("image_path", "task_id", "task_name", "num_classes")
#: Problems listed in one error message before "... and N more".
MAX_LISTED = 20

#: Columns read by every row besides the kinds' own; the others go to :attr:`Sample.extra`.
_COMMON = set(BASE_COLUMNS) | {"label_names", "pixel_size_mm"}


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


@dataclass
class _Csv:
    """One task CSV being parsed: where it is, what to check, and what its rows have said so far."""

    path: Path
    header: list[str]
    problems: _Problems
    check_files: bool
    check_geometry: bool
    size_cache: dict
    columns_ok: dict = field(default_factory=dict)  # (kind, num_classes) -> the header has the kind's columns
    names_from_list: list[str] | None = None         # label_names of the first row that has them
    kind_state: dict = field(default_factory=dict)   # RowCheck.state, shared by the rows

    def has_columns(self, kind: str, n: int) -> bool:
        """Whether the header has the columns of ``kind`` with ``n`` classes (problems recorded once)."""
        key = (kind, n)
        if key not in self.columns_ok:
            found = KINDS[kind].header_problems(self.header, n)
            for what in found:
                self.problems.add(self.path.name, what)
            self.columns_ok[key] = not found
        return self.columns_ok[key]


def _check_one_task(name: str, rows: list[tuple[int, dict]], problems: _Problems) -> None:
    """Per-CSV consistency: one task_id, task_name and num_classes per file."""
    for col in ("task_id", "task_name", "num_classes"):
        values = {}
        for i, (line, r) in enumerate(rows, 1):
            values.setdefault(r[col], f"line {line} (row {i})")
        if len(values) > 1:
            shown = ", ".join(f"{v!r} first at {w}" for v, w in list(values.items())[:5])
            problems.add(name, f"column {col} must have one value per CSV (one task per file), found {len(values)}: {shown}")


def _label_names(r: dict, n: int | None, where: str, c: _Csv) -> None:
    """Check a row's ``label_names`` (a JSON list of ``num_classes`` strings, the same on every row)."""
    try:
        row_names = json.loads(r["label_names"])
    except json.JSONDecodeError:
        row_names = None
    if not isinstance(row_names, list) or not all(isinstance(s, str) for s in row_names):
        c.problems.add(where, f"label_names {r['label_names']!r} is not a JSON list of strings")
    elif n is not None and len(row_names) != n:
        c.problems.add(where, f"label_names has {len(row_names)} names but num_classes is {n}")
    elif c.names_from_list is None:
        c.names_from_list = row_names
    elif row_names != c.names_from_list:
        c.problems.add(where, f"label_names {row_names} differ from {c.names_from_list} in earlier rows")


def _base_fields(r: dict, where: str, c: _Csv) -> tuple[str | None, int | None, Path | None, float | None]:
    """``(kind, num_classes, image path, pixel size)`` of a row, recording what is wrong with them."""
    kind = normalise_kind(r["task_name"])
    if kind is None:
        c.problems.add(where, f"unknown task_name {r['task_name']!r}: expected segmentation, classification, detection or Regression")
    if not r["task_id"]:
        c.problems.add(where, "task_id is empty")
    n = parse_int(r["num_classes"])
    if n is None or n < 1:
        c.problems.add(where, f"num_classes {r['num_classes']!r} is not a positive integer")
    rel_image, image_path = r["image_path"], None
    if not rel_image:
        c.problems.add(where, "image_path is empty")
    else:
        p = Path(rel_image)
        image_path = (p if p.is_absolute() else c.path.parent / p).resolve()
        if c.check_files and not image_path.is_file():
            c.problems.add(where, f"image file {rel_image!r} not found (looked for {str(image_path)!r})")
    pixel_size = None
    if r.get("pixel_size_mm"):
        pixel_size = parse_float(r["pixel_size_mm"])
        if pixel_size is None or pixel_size <= 0:
            c.problems.add(where, f"pixel_size_mm {r['pixel_size_mm']!r} is not a positive number")
    if r.get("label_names"):
        _label_names(r, n, where, c)
    return kind, n, image_path, pixel_size


def _extra(r: dict) -> dict:
    """The row's columns no kind reads (floats where they parse), e.g. ``head_circumference_mm``."""
    def known(col: str) -> bool:
        return col in _COMMON or any(k.is_own_column(col) for k in KINDS.values())

    return {k: (parse_float(v) if parse_float(v) is not None else v) for k, v in r.items() if not known(k) and v != ""}


def _parse_row(r: dict, where: str, c: _Csv) -> Sample | None:
    """One row as a :class:`Sample`, or ``None`` when it has problems (all recorded)."""
    bad = len(c.problems)
    kind, n, image_path, pixel_size = _base_fields(r, where, c)
    if kind is None or n is None or n < 1 or not c.has_columns(kind, n):
        return None
    sample = Sample(image_path=image_path, rel_image_path=r["image_path"], task_id=r["task_id"], kind=kind,
                    num_classes=n, pixel_size_mm=pixel_size)
    size = None
    if c.check_geometry and image_path is not None and image_path.is_file():
        size = _image_size(image_path, c.size_cache)
        if isinstance(size, str):
            c.problems.add(where, f"{r['image_path']!r}: {size}")
            size = None
    state = c.kind_state.setdefault(kind, {})
    check = RowCheck(c.path.parent, c.check_files, c.check_geometry, size, lambda what: c.problems.add(where, what),
                     state, where)
    KINDS[kind].parse_row(sample, r, check)
    sample.extra = _extra(r)
    return sample if len(c.problems) == bad else None


def _parse_csv(csv_path: Path, problems: _Problems, check_files: bool, check_geometry: bool, size_cache: dict) -> list[Sample]:
    """Parse and validate one task CSV, recording every problem; returns the samples of the valid rows."""
    read = _read_rows(csv_path, problems)
    if read is None:
        return []
    header, rows = read
    n_before = len(problems)
    _check_one_task(csv_path.name, rows, problems)
    c = _Csv(csv_path, header, problems, check_files, check_geometry, size_cache)
    samples = [s for i, (line, r) in enumerate(rows, 1) if (s := _parse_row(r, _where(csv_path.name, line, i), c))]
    # class names for the whole CSV: label_names, else the ones the kind gathered (every class named)
    if len(problems) == n_before and samples:
        s0 = samples[0]
        names = c.names_from_list
        if names is None:
            names = KINDS[s0.kind].class_names(c.kind_state.get(s0.kind, {}), s0.num_classes)
        if names is not None:
            for s in samples:
                s.class_names = list(names)
    return samples


def read_task_csv(csv_path: str | os.PathLike, check_files: bool = True, check_geometry: bool = False) -> list[Sample]:
    """Read and validate one task CSV.

    Args:
      csv_path: ``<split>/csv_files/<task_id>.csv``; image and mask paths are relative to its folder.
      check_files: check that every image and mask file exists.
      check_geometry: also open image headers (no decoding) to check that boxes and points lie inside the
        image (points may be :data:`usam.tasks.regression.POINT_MARGIN_FRAC` of the longer side outside), and read every mask to check
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


def csv_folder(root: Path) -> Path:
    """The ``csv_files/`` folder of a split folder (or ``root`` itself when it is one); refuses anything else."""
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


def first_task_id(csv_path: Path) -> str | None:
    """The ``task_id`` of a CSV's first row (``None`` when it cannot be read)."""
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
    csv_dir = csv_folder(root)
    csvs = sorted(p for p in csv_dir.glob("*.csv") if p.is_file())
    if not csvs:
        raise DataError(f"no task CSVs in {str(csv_dir)!r}: expected one <task_id>.csv per task")
    if tasks is not None:
        wanted = list(dict.fromkeys(tasks))
        by_stem = {p.stem: p for p in csvs}
        chosen = {t: by_stem[t] for t in wanted if t in by_stem}
        rest = [t for t in wanted if t not in chosen]
        if rest:
            ids = {first_task_id(p): p for p in csvs if p not in chosen.values()}
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
    "MAX_LISTED",
    "Sample",
    "first_task_id",
    "output_mask_relpath",
    "read_split",
    "read_task_csv",
    "unique_image_paths",
]
