"""Reader for a plain folder of a user's own data::

    my_data/
      images/    case01.png, case02.jpg, ...       any image extension in IMAGE_EXTENSIONS
      masks/     case01.png, case02.png, ...       same stems, pixel values = class ids (0 = background)
      labels.csv columns image,label               optional: classification labels

``masks/`` gives a segmentation task (every image needs a mask), ``labels.csv`` a classification task;
either or both may be present. ``labels.csv``'s ``image`` is a file name or stem inside ``images/``; its
``label`` is either integer class ids or class names (then ids follow the names' sorted order).
The result has the same :class:`~usam.data.fmc.Sample` objects as the FMC_UIA reader.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from ..errors import DataError, InputImageError
from ..io import read_mask
from ..tasks.cells import parse_int
from .fmc import MAX_LISTED, Sample

#: File extensions taken as images (case-insensitive).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f" ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def _files_by_stem(folder: Path) -> dict[str, Path]:
    """``{stem: path}`` of the image files in ``folder`` (hidden files skipped).

    Raises:
      DataError: two files share a stem (``a.png`` and ``a.jpg``).
    """
    out: dict[str, Path] = {}
    clashes = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file() or p.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if p.stem in out:
            clashes.append(f"{out[p.stem].name} / {p.name}")
        else:
            out[p.stem] = p
    if clashes:
        raise DataError(f"{str(folder)!r} has files with the same name but different extensions: {_listing(clashes)}")
    return out


def _read_labels(labels_csv: Path, images: dict[str, Path]) -> tuple[dict[str, int], list[str] | None]:
    """``({stem: label}, class_names or None)`` from ``labels.csv``."""
    try:
        with open(labels_csv, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [h.strip() for h in (reader.fieldnames or [])]
            rows = [(reader.line_num, {k.strip(): (v or "").strip() for k, v in r.items() if k is not None}) for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{str(labels_csv)!r} cannot be read as a CSV ({exc})") from exc
    if "image" not in fields or "label" not in fields:
        raise DataError(f"{str(labels_csv)!r} needs columns 'image' and 'label', has {fields}")
    problems, raw = [], {}
    by_name = {p.name: s for s, p in images.items()}
    for line, r in rows:
        key = Path(r["image"]).name
        stem = by_name.get(key) or (key if key in images else None)
        if not r["image"]:
            problems.append(f"line {line}: image is empty")
        elif stem is None:
            problems.append(f"line {line}: image {r['image']!r} is not in images/")
        elif not r["label"]:
            problems.append(f"line {line}: label is empty")
        elif stem in raw:
            problems.append(f"line {line}: image {r['image']!r} is listed twice")
        else:
            raw[stem] = r["label"]
    if not raw and not problems:
        problems.append("no rows")
    if problems:
        raise DataError(f"{str(labels_csv)!r}: {len(problems)} problem(s):\n  " + "\n  ".join(problems[:MAX_LISTED])
                        + (f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""))
    ints = {k: parse_int(v) for k, v in raw.items()}
    if all(v is not None for v in ints.values()):
        neg = [k for k, v in ints.items() if v < 0]
        if neg:
            raise DataError(f"{str(labels_csv)!r}: negative labels for {_listing(neg)}")
        return ints, None
    names = sorted(set(raw.values()))
    if len(names) < 2:
        raise DataError(f"{str(labels_csv)!r}: all labels are {names[0]!r}: classification needs at least 2 classes")
    return {k: names.index(v) for k, v in raw.items()}, names


def _images(root: Path) -> dict[str, Path]:
    """``{stem: image path}`` of ``root/images``; refuses a folder without images, masks/ or labels.csv."""
    images_dir = root / "images"
    if not images_dir.is_dir():
        raise DataError(
            f"no images/ folder in {str(root)!r}: expected images/ with masks/ (same file stems) "
            f"and/or labels.csv (columns image,label)"
        )
    images = _files_by_stem(images_dir)
    if not images:
        raise DataError(f"{str(images_dir)!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    if not (root / "masks").is_dir() and not (root / "labels.csv").is_file():
        raise DataError(f"{str(root)!r} has images/ but neither masks/ nor labels.csv: nothing to learn from")
    return images


def _masks(root: Path, images: dict[str, Path]) -> dict[str, Path]:
    """``{stem: mask path}``, one per image (refuses images without masks and masks without images)."""
    masks_dir = root / "masks"
    masks = _files_by_stem(masks_dir)
    if not masks:
        raise DataError(f"{str(masks_dir)!r} holds no masks: remove the folder or add one mask per image")
    no_mask = sorted(images[s].name for s in set(images) - set(masks))
    no_image = sorted(masks[s].name for s in set(masks) - set(images))
    if no_mask or no_image:
        parts = []
        if no_mask:
            parts.append(f"{len(no_mask)} image(s) without a mask in masks/: {_listing(no_mask)}")
        if no_image:
            parts.append(f"{len(no_image)} mask(s) without an image in images/: {_listing(no_image)}")
        raise DataError(f"{str(root)!r}: images and masks must match by file stem; " + "; ".join(parts))
    return masks


def _largest_class(masks_dir: Path, masks: list[Path]) -> int:
    """The largest value of any mask (every mask is read; unreadable ones are listed in one error)."""
    top, bad = 0, []
    for path in masks:
        try:
            m = read_mask(path)
        except InputImageError as exc:
            bad.append(str(exc))
            continue
        top = max(top, int(m.max()) if m.size else 0)
    if bad:
        raise DataError(f"{str(masks_dir)!r}: unreadable masks: {_listing(bad)}")
    return top


def _segmentation_task(root: Path, name: str, images: dict[str, Path]) -> list[Sample]:
    masks = _masks(root, images)
    n = max(2, _largest_class(root / "masks", [masks[s] for s in images]) + 1)
    return [
        Sample(image_path=images[s], rel_image_path=f"images/{images[s].name}", task_id=name, kind="segmentation",
               num_classes=n, mask_path=masks[s], rel_mask_path=f"masks/{masks[s].name}")
        for s in images
    ]


def _classification_task(root: Path, task_id: str, images: dict[str, Path]) -> list[Sample]:
    labels, names = _read_labels(root / "labels.csv", images)
    n = max(2, max(labels.values()) + 1, len(names or ()))
    return [
        Sample(image_path=images[s], rel_image_path=f"images/{images[s].name}", task_id=task_id,
               kind="classification", num_classes=n, label=labels[s], class_names=list(names) if names else None)
        for s in images
        if s in labels
    ]


def read_folder(root: str | os.PathLike, task_id: str | None = None) -> dict[str, list[Sample]]:
    """Read an ``images/`` + ``masks/`` (+ ``labels.csv``) folder.

    Args:
      root: the folder.
      task_id: name of the task (default: the folder's name). With both ``masks/`` and ``labels.csv`` the
        classification task is named ``<task_id>_cls``.

    Returns:
      ``{task_id: [Sample, ...]}``: a segmentation task when ``masks/`` exists (``num_classes`` = largest
      mask value + 1, at least 2; every mask is read), a classification task when ``labels.csv`` exists
      (``num_classes`` = largest label + 1, at least 2; images missing from it are left out).
      Sample paths are absolute; ``rel_*`` paths are relative to ``root`` (``images/a.png``).

    Raises:
      DataError: no such folder, no ``images/``, no images, neither ``masks/`` nor ``labels.csv``, images
        without masks or masks without images (listed), unreadable masks, stems clashing across extensions,
        a malformed ``labels.csv``. Image / mask sizes are not compared here.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {str(root)!r} does not exist")
    root = root.resolve()
    images = _images(root)
    has_masks = (root / "masks").is_dir()
    name = task_id or root.name
    out: dict[str, list[Sample]] = {}
    if has_masks:
        out[name] = _segmentation_task(root, name, images)
    if (root / "labels.csv").is_file():
        cls_id = f"{name}_cls" if has_masks else name
        out[cls_id] = _classification_task(root, cls_id, images)
    return out


__all__ = ["IMAGE_EXTENSIONS", "read_folder"]
