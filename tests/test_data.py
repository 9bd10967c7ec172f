"""Tests of usam.data: task suite YAML, FMC_UIA CSV reader, folder reader, augmentation.

Real-data tests read ../shared/data/fmc_uia_dev (skipped when absent); everything else builds tiny
CSVs and PNGs in tmp_path. No model is loaded.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from usam.data import (
    Augment,
    AugmentParams,
    Sample,
    TaskSpec,
    apply_augment,
    check_against_suite,
    load_task_suite,
    normalise_kind,
    output_mask_relpath,
    read_folder,
    read_split,
    read_task_csv,
    unique_image_paths,
)
from usam.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
DEV = Path(__file__).resolve().parents[2] / "shared/data/fmc_uia_dev"
SUITE = REPO / "configs/fmc_uia.yaml"

needs_dev = pytest.mark.skipif(not DEV.is_dir(), reason=f"real dev data not found at {DEV} (../shared/data/fmc_uia_dev)")

# ---------------------------------------------------------------------------------------------
# helpers: a tiny split in tmp_path
# ---------------------------------------------------------------------------------------------
W, H = 32, 24


def _png(path: Path, array: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)
    return str(path)


def make_split(tmp_path: Path, n: int = 3) -> Path:
    """root/csv_files/ + root/Images/img{i}.png (32x24 grey) + root/Masks/img{i}.png (values 0/1)."""
    root = tmp_path / "split"
    (root / "csv_files").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        _png(root / "Images" / f"img{i}.png", rng.integers(0, 255, (H, W), dtype=np.uint8))
        m = np.zeros((H, W), np.uint8)
        m[5:15, 8:20] = 1
        _png(root / "Masks" / f"img{i}.png", m)
    return root


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


SEG_HEADER = ["image_path", "task_id", "task_name", "num_classes", "mask_path"]
CLS_HEADER = ["image_path", "task_id", "task_name", "num_classes", "mask"]
DET_HEADER = ["image_path", "task_id", "task_name", "num_classes", "x_min", "y_min", "x_max", "y_max"]


def reg_header(n: int) -> list[str]:
    return ["image_path", "task_id", "task_name", "num_classes"] + [f"point_{k}_xy" for k in range(1, n + 1)]


def img(i: int) -> str:
    return f"../Images/img{i}.png"


def msk(i: int) -> str:
    return f"../Masks/img{i}.png"


def seg_rows(n=3, num_classes=2):
    return [[img(i), "seg", "segmentation", num_classes, msk(i)] for i in range(n)]


def expect_error(csv_path: Path, *needles: str, **kw) -> str:
    with pytest.raises(DataError) as info:
        read_task_csv(csv_path, **kw)
    msg = str(info.value)
    assert csv_path.name in msg, msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not in:\n{msg}"
    return msg


# ---------------------------------------------------------------------------------------------
# task suite
# ---------------------------------------------------------------------------------------------
OFFICIAL = {
    "FUGC": ("regression", 2), "IUGC": ("regression", 3), "fetal_femur": ("regression", 2),
    "breast_2cls": ("classification", 2), "breast_3cls": ("classification", 3),
    "fetal_head_pos_cls": ("classification", 8), "fetal_plane_cls": ("classification", 6),
    "fetal_sacral_pos_cls": ("classification", 8), "liver_lesion_2cls": ("classification", 2),
    "lung_2cls": ("classification", 2), "lung_disease_3cls": ("classification", 3), "organ_cls": ("classification", 6),
    "spinal_cord_injury_loc": ("detection", 1), "thyroid_nodule_det": ("detection", 1), "uterine_fibroid_det": ("detection", 1),
    "breast_lesion": ("segmentation", 2), "cardiac_multi": ("segmentation", 4), "carotid_artery": ("segmentation", 2),
    "cervix": ("segmentation", 2), "cervix_multi": ("segmentation", 3), "fetal_abdomen_multi": ("segmentation", 5),
    "fetal_head": ("segmentation", 2), "fetal_heart": ("segmentation", 2), "head_symphysis_multi": ("segmentation", 3),
    "lung": ("segmentation", 2), "ovary_tumor": ("segmentation", 2), "thyroid_nodule": ("segmentation", 2),
}  # fmt: skip


def test_suite_has_the_27_official_tasks():
    suite = load_task_suite(SUITE)
    official = {k: (v.kind, v.num_classes) for k, v in suite.items() if v.official}
    assert len(OFFICIAL) == 27
    assert official == OFFICIAL
    assert all(isinstance(v, TaskSpec) for v in suite.values())


def test_suite_dev_tasks_and_class_names():
    suite = load_task_suite(SUITE)
    assert (suite["breast_lesion_det"].kind, suite["breast_lesion_det"].num_classes, suite["breast_lesion_det"].official) == ("detection", 1, False)
    assert (suite["fetal_head_biometry"].kind, suite["fetal_head_biometry"].num_classes) == ("regression", 4)
    assert suite["breast_3cls"].class_names == ["benign", "malignant", "normal"]
    assert suite["breast_2cls"].class_names == ["benign", "malignant"]
    assert suite["head_symphysis_multi"].class_names == ["background", "pubic_symphysis", "fetal_head"]
    assert suite["thyroid_nodule"].class_names == ["background", "thyroid_nodule"]
    assert not suite["FUGC"].hflip and not suite["fetal_head_biometry"].hflip and suite["breast_lesion"].hflip
    assert set(load_task_suite(SUITE, include_dev=False)) == set(OFFICIAL)


def test_normalise_kind():
    assert normalise_kind("Regression") == "regression"
    assert normalise_kind(" segmentation ") == "segmentation"
    assert normalise_kind("keypoints") is None


def _suite_file(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "suite.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "text, needle",
    [
        ("tasks:\n  - {id: a, kind: keypoints, num_classes: 2}\n", "unknown kind 'keypoints'"),
        ("tasks:\n  - {id: a, kind: segmentation}\n", "missing 'num_classes'"),
        ("tasks:\n  - {id: a, kind: detection, num_classes: 0}\n", "at least 1"),
        ("tasks:\n  - {id: a, kind: detection, num_classes: two}\n", "must be an integer"),
        ("tasks:\n  - {id: a, kind: detection, num_classes: 1}\n  - {id: a, kind: detection, num_classes: 1}\n", "duplicate task id 'a'"),
        ("tasks:\n  - {id: a, kind: detection, num_classes: 1}\ndev_tasks:\n  - {id: a, kind: detection, num_classes: 1}\n", "duplicate task id 'a'"),
        ("tasks:\n  - {id: a, kind: segmentation, num_classes: 2, class_names: [bg]}\n", "class_names has 1 names but num_classes is 2"),
        ("tasks:\n  - {id: a, kind: segmentation, num_classes: 2, colour: red}\n", "unknown key"),
        ("tasks:\n  - {kind: segmentation, num_classes: 2}\n", "missing or empty 'id'"),
        ("tasks:\n  - {id: a, num_classes: 2}\n", "missing 'kind'"),
        ("tasks: [1, 2]\n", "expected a mapping"),
        ("other: []\n", "'tasks'"),
        ("tasks: [\n", "not valid YAML"),
    ],
)
def test_suite_errors(tmp_path, text, needle):
    with pytest.raises(ConfigError) as info:
        load_task_suite(_suite_file(tmp_path, text))
    assert needle in str(info.value)


def test_suite_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_task_suite(tmp_path / "nope.yaml")


def test_suite_accepts_capital_regression(tmp_path):
    suite = load_task_suite(_suite_file(tmp_path, "tasks:\n  - {id: r, task_name: Regression, num_classes: 3}\n"))
    assert suite["r"].kind == "regression" and suite["r"].hflip is False


# ---------------------------------------------------------------------------------------------
# FMC_UIA reader on the real dev data
# ---------------------------------------------------------------------------------------------
COUNTS = {  # README table: train / val / test
    "breast_lesion": (453, 63, 131),
    "breast_3cls": (546, 76, 158),
    "breast_2cls": (453, 63, 131),
    "breast_lesion_det": (442, 62, 126),
    "head_symphysis_multi": (954, 134, 270),
    "fetal_head": (350, 50, 100),
    "fetal_head_biometry": (350, 50, 100),
}


@needs_dev
@pytest.mark.parametrize("split_index, split", enumerate(["train", "val", "test"]))
def test_real_split_counts(split_index, split):
    data = read_split(DEV / split)
    assert {k: len(v) for k, v in data.items()} == {k: v[split_index] for k, v in COUNTS.items()}
    check_against_suite(data, load_task_suite(SUITE))
    images = unique_image_paths(data)
    assert len(images) == len(set(images)) < sum(map(len, data.values()))


@needs_dev
def test_real_samples_fields():
    data = read_split(DEV / "test")
    s = data["breast_lesion"][0]
    assert s.kind == "segmentation" and s.num_classes == 2
    assert s.image_path.is_absolute() and s.image_path.is_file() and s.mask_path.is_file()
    assert s.rel_image_path.startswith("../") and (DEV / "test/csv_files" / s.rel_image_path).resolve() == s.image_path
    assert output_mask_relpath(s.rel_mask_path) == s.rel_mask_path[3:]
    c = data["breast_3cls"][0]
    assert c.kind == "classification" and c.label in (0, 1, 2) and c.class_names == ["benign", "malignant", "normal"]
    assert data["head_symphysis_multi"][0].class_names == ["background", "pubic_symphysis", "fetal_head"]
    d = data["breast_lesion_det"][0]
    assert d.kind == "detection" and len(d.box) == 4 and d.box[0] <= d.box[2] and d.box[1] <= d.box[3]
    r = data["fetal_head_biometry"][0]
    assert r.kind == "regression" and r.points.shape == (4, 2) and r.pixel_size_mm > 0
    assert r.extra["head_circumference_mm"] > 0
    f = data["fetal_head"][0]
    assert f.pixel_size_mm > 0 and isinstance(f.extra["head_circumference_mm"], float)


@needs_dev
def test_real_geometry_and_task_filter():
    data = read_split(DEV / "val", tasks=["breast_lesion_det", "fetal_head_biometry", "head_symphysis_multi"], check_geometry=True)
    assert set(data) == {"breast_lesion_det", "fetal_head_biometry", "head_symphysis_multi"}


# ---------------------------------------------------------------------------------------------
# FMC_UIA reader: valid tiny CSVs
# ---------------------------------------------------------------------------------------------
def test_tiny_split_all_kinds(tmp_path):
    root = make_split(tmp_path)
    cd = root / "csv_files"
    write_csv(cd / "seg.csv", SEG_HEADER + ["label_names"], [r + ['["background", "blob"]'] for r in seg_rows()])
    write_csv(cd / "cls.csv", CLS_HEADER + ["label_name", "note"],
              [[img(0), "cls", "classification", 2, 0, "neg", "x"], [img(1), "cls", "classification", 2, "1.0", "pos", "7"]])
    write_csv(cd / "det.csv", DET_HEADER, [[img(0), "det", "detection", 1, 8, 5, 19, 14]])
    write_csv(cd / "reg.csv", reg_header(2) + ["pixel_size_mm"], [[img(0), "reg", "Regression", 2, "[1, 2]", "[3.5, 4]", "0.1"]])
    data = read_split(root, check_geometry=True)
    assert list(data) == ["cls", "det", "reg", "seg"]
    assert data["seg"][0].class_names == ["background", "blob"] and data["seg"][0].rel_mask_path == msk(0)
    assert [s.label for s in data["cls"]] == [0, 1] and data["cls"][0].class_names == ["neg", "pos"]
    assert data["cls"][0].extra == {"label_name": "neg", "note": "x"} and data["cls"][1].extra["note"] == 7.0
    assert data["det"][0].box == (8.0, 5.0, 19.0, 14.0)
    np.testing.assert_array_equal(data["reg"][0].points, [[1, 2], [3.5, 4]])
    assert data["reg"][0].pixel_size_mm == 0.1 and data["reg"][0].kind == "regression"
    assert isinstance(data["seg"][0], Sample)
    assert unique_image_paths(data)[0] == (root / "Images/img0.png").resolve()


def test_check_files_off_allows_missing_images(tmp_path):
    root = make_split(tmp_path, n=1)
    p = write_csv(root / "csv_files/seg.csv", SEG_HEADER, [["../nope.png", "seg", "segmentation", 2, "../nope_mask.png"]])
    assert len(read_task_csv(p, check_files=False)) == 1


# ---------------------------------------------------------------------------------------------
# FMC_UIA reader: every error
# ---------------------------------------------------------------------------------------------
def test_error_missing_kind_column(tmp_path):
    root = make_split(tmp_path)
    p = write_csv(root / "csv_files/seg.csv", SEG_HEADER[:-1], [r[:-1] for r in seg_rows()])
    expect_error(p, "missing column(s) ['mask_path']", "segmentation")


def test_error_missing_base_column(tmp_path):
    root = make_split(tmp_path)
    p = write_csv(root / "csv_files/seg.csv", ["image_path", "task_id", "mask_path"], [[img(0), "seg", msk(0)]])
    expect_error(p, "missing column(s) ['task_name', 'num_classes']")


def test_error_unknown_task_name(tmp_path):
    root = make_split(tmp_path)
    rows = seg_rows()
    rows[1][2] = "keypoints"
    p = write_csv(root / "csv_files/seg.csv", SEG_HEADER, rows)
    expect_error(p, "line 3 (row 2)", "unknown task_name 'keypoints'")


def test_error_missing_image(tmp_path):
    root = make_split(tmp_path)
    rows = seg_rows()
    rows[2][0] = "../Images/gone.png"
    p = write_csv(root / "csv_files/seg.csv", SEG_HEADER, rows)
    expect_error(p, "line 4 (row 3)", "image file '../Images/gone.png' not found")


def test_error_missing_mask(tmp_path):
    root = make_split(tmp_path)
    rows = seg_rows()
    rows[0][4] = "../Masks/gone.png"
    p = write_csv(root / "csv_files/seg.csv", SEG_HEADER, rows)
    expect_error(p, "line 2 (row 1)", "mask file '../Masks/gone.png' not found")


@pytest.mark.parametrize(
    "label, needle",
    [("abc", "'abc' is not an integer"), ("1.5", "'1.5' is not an integer"), ("", "'' is not an integer"),
     ("2", "2 is outside [0, 1]"), ("-1", "-1 is outside [0, 1]")],
)  # fmt: skip
def test_error_classification_label(tmp_path, label, needle):
    root = make_split(tmp_path)
    p = write_csv(root / "csv_files/cls.csv", CLS_HEADER, [[img(0), "cls", "classification", 2, 0], [img(1), "cls", "classification", 2, label]])
    expect_error(p, "line 3 (row 2)", needle)


def test_error_inconsistent_num_classes(tmp_path):
    root = make_split(tmp_path)
    rows = seg_rows()
    rows[2][3] = 3
    p = write_csv(root / "csv_files/seg.csv", SEG_HEADER, rows)
    expect_error(p, "num_classes must have one value per CSV", "'3' first at line 4 (row 3)")


def test_error_num_classes_not_a_number(tmp_path):
    root = make_split(tmp_path)
    p = write_csv(root / "csv_files/seg.csv", SEG_HEADER, [[img(0), "seg", "segmentation", "two", msk(0)]])
    expect_error(p, "line 2 (row 1)", "num_classes 'two' is not a positive integer")


def test_error_regression_point_column_missing(tmp_path):
    root = make_split(tmp_path)
    p = write_csv(root / "csv_files/reg.csv", reg_header(2), [[img(0), "reg", "Regression", 3, "[1, 2]", "[3, 4]"]])
    expect_error(p, "missing column(s) ['point_3_xy']", "num_classes=3")


def test_error_regression_point_not_json(tmp_path):
    root = make_split(tmp_path)
    p = write_csv(root / "csv_files/reg.csv", reg_header(2),
                  [[img(0), "reg", "Regression", 2, "[1, 2]", "[3, 4]"], [img(1), "reg", "Regression", 2, "1;2", "[3, 4, 5]"],
                   [img(2), "reg", "Regression", 2, "", '["a", 1]']])  # fmt: skip
    msg = expect_error(p, "line 3 (row 2): point_1_xy '1;2' is not JSON [x, y]", "line 3 (row 2): point_2_xy '[3, 4, 5]'")
    assert "line 4 (row 3): point_1_xy is empty" in msg and "line 4 (row 3): point_2_xy '[\"a\", 1]'" in msg


def test_error_regression_point_count(tmp_path):
    root = make_split(tmp_path)
    p = write_csv(root / "csv_files/reg.csv", reg_header(3), [[img(0), "reg", "Regression", 2, "[1, 2]", "[3, 4]", "[5, 6]"]])
    expect_error(p, "['point_3_xy']", "must equal num_classes")


def test_error_detection_non_numeric(tmp_path):
    root = make_split(tmp_path)
    p = write_csv(root / "csv_files/det.csv", DET_HEADER, [[img(0), "det", "detection", 1, "a", 1, 5, ""]])
    expect_error(p, "line 2 (row 1)", "non-numeric coordinate")


def test_error_detection_inverted(tmp_path):
    root = make_split(tmp_path)
    p = write_csv(root / "csv_files/det.csv", DET_HEADER, [[img(0), "det", "detection", 1, 1, 1, 5, 5], [img(1), "det", "detection", 1, 9, 1, 5, 5]])
    expect_error(p, "line 3 (row 2)", "is inverted")


def test_error_geometry_box_outside(tmp_path):
    root = make_split(tmp_path)
    p = write_csv(root / "csv_files/det.csv", DET_HEADER, [[img(0), "det", "detection", 1, 1, 1, 40, 5]])
    read_task_csv(p)  # fine without the geometry check
    expect_error(p, "line 2 (row 1)", f"outside the {W}x{H} image", check_geometry=True)


def test_error_geometry_point_outside(tmp_path):
    root = make_split(tmp_path)
    p = write_csv(root / "csv_files/reg.csv", reg_header(2), [[img(0), "reg", "Regression", 2, "[1, 2]", "[3, 100]"]])
    read_task_csv(p)
    expect_error(p, "line 2 (row 1)", "['point_2_xy'] lie outside", check_geometry=True)


def test_error_geometry_mask_values(tmp_path):
    root = make_split(tmp_path)
    m = np.zeros((H, W), np.uint8)
    m[0, 0] = 2
    _png(root / "Masks/img1.png", m)
    p = write_csv(root / "csv_files/seg.csv", SEG_HEADER, seg_rows())
    read_task_csv(p)
    expect_error(p, "line 3 (row 2)", "has value 2 but num_classes is 2", check_geometry=True)


def test_error_geometry_mask_size(tmp_path):
    root = make_split(tmp_path)
    _png(root / "Masks/img0.png", np.zeros((H + 1, W), np.uint8))
    p = write_csv(root / "csv_files/seg.csv", SEG_HEADER, seg_rows())
    expect_error(p, "line 2 (row 1)", f"is {W}x{H + 1} but the image is {W}x{H}", check_geometry=True)


def test_error_header_only_and_empty(tmp_path):
    root = make_split(tmp_path)
    expect_error(write_csv(root / "csv_files/seg.csv", SEG_HEADER, []), "no rows")
    (root / "csv_files/empty.csv").write_text("")
    expect_error(root / "csv_files/empty.csv", "is empty")


def test_error_mixed_task_ids(tmp_path):
    root = make_split(tmp_path)
    rows = seg_rows()
    rows[1][1] = "other"
    expect_error(write_csv(root / "csv_files/seg.csv", SEG_HEADER, rows), "column task_id must have one value")


def test_one_error_lists_all_rows_truncated(tmp_path):
    root = make_split(tmp_path)
    rows = [["../Images/gone.png", "seg", "segmentation", 2, msk(0)] for _ in range(25)]
    msg = expect_error(write_csv(root / "csv_files/seg.csv", SEG_HEADER, rows), "25 problem(s)", "... and 5 more")
    assert "line 2 (row 1)" in msg and "line 21 (row 20)" in msg and "line 22 (row 21)" not in msg


def test_split_reports_all_csvs_in_one_error(tmp_path):
    root = make_split(tmp_path)
    write_csv(root / "csv_files/seg.csv", SEG_HEADER, [["../Images/gone.png", "seg", "segmentation", 2, msk(0)]] * 30)
    write_csv(root / "csv_files/cls.csv", CLS_HEADER, [[img(0), "cls", "classification", 2, 5]])
    with pytest.raises(DataError) as info:
        read_split(root)
    msg = str(info.value)
    # a flood in seg.csv does not hide cls.csv's problem
    assert "31 problem(s) (cls.csv: 1, seg.csv: 30)" in msg and "seg.csv line 2 (row 1)" in msg
    assert "cls.csv line 2 (row 1): classification label (column mask) 5 is outside" in msg and "... and 11 more" in msg


def test_split_duplicate_task_id(tmp_path):
    root = make_split(tmp_path)
    write_csv(root / "csv_files/a.csv", SEG_HEADER, seg_rows())
    write_csv(root / "csv_files/b.csv", SEG_HEADER, seg_rows())
    with pytest.raises(DataError, match=r"b.csv: task_id 'seg' is also used by a.csv"):
        read_split(root)


def test_split_layout_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_split(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no csv_files/ folder .* <split>/csv_files/<task_id>.csv"):
        read_split(tmp_path / "empty")
    (tmp_path / "empty/csv_files").mkdir()
    with pytest.raises(DataError, match="no task CSVs"):
        read_split(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        read_task_csv(tmp_path / "nope.csv")


def test_split_task_filter(tmp_path):
    root = make_split(tmp_path)
    write_csv(root / "csv_files/seg.csv", SEG_HEADER, seg_rows())
    write_csv(root / "csv_files/named_otherwise.csv", CLS_HEADER, [[img(0), "cls", "classification", 2, 1]])
    assert list(read_split(root, tasks=["cls"])) == ["cls"]
    assert list(read_split(root / "csv_files", tasks=["seg"])) == ["seg"]
    with pytest.raises(DataError, match=r"\['zzz'\] not found"):
        read_split(root, tasks=["zzz"])


def test_output_mask_relpath():
    assert output_mask_relpath("../Segmentation/Two/BUSI/masks/benign (1).png") == "Segmentation/Two/BUSI/masks/benign (1).png"
    assert output_mask_relpath("Segmentation/x.png") == "Segmentation/x.png"
    for bad in ("/abs/x.png", "../a/../../x.png", "../"):
        with pytest.raises(DataError):
            output_mask_relpath(bad)


# ---------------------------------------------------------------------------------------------
# folder reader
# ---------------------------------------------------------------------------------------------
def make_folder(tmp_path: Path, stems=("a", "b"), mask_stems=None, top=1) -> Path:
    root = tmp_path / "thyroid"
    for s in stems:
        _png(root / "images" / f"{s}.jpg" if s == "a" else root / "images" / f"{s}.png", np.full((H, W), 100, np.uint8))
    for i, s in enumerate(stems if mask_stems is None else mask_stems):
        m = np.zeros((H, W), np.uint8)
        m[2:6, 2:6] = top if i == 0 else 1
        _png(root / "masks" / f"{s}.png", m)
    return root


def test_folder_segmentation(tmp_path):
    root = make_folder(tmp_path, top=3)
    data = read_folder(root)
    (task,) = data
    assert task == "thyroid"
    samples = data[task]
    assert [s.rel_image_path for s in samples] == ["images/a.jpg", "images/b.png"]
    assert all(s.kind == "segmentation" and s.num_classes == 4 and s.mask_path.is_file() for s in samples)
    assert samples[0].rel_mask_path == "masks/a.png" and samples[0].image_path.is_absolute()
    assert read_folder(make_folder(tmp_path / "x", top=0), task_id="t")["t"][0].num_classes == 2  # at least 2


def test_folder_classification(tmp_path):
    root = make_folder(tmp_path)
    write_csv(root / "labels.csv", ["image", "label"], [["a.jpg", "malignant"], ["b", "benign"]])
    data = read_folder(root, task_id="thy")
    assert set(data) == {"thy", "thy_cls"}
    cls = data["thy_cls"]
    assert [(s.label, s.class_names) for s in cls] == [(1, ["benign", "malignant"]), (0, ["benign", "malignant"])]
    write_csv(root / "labels.csv", ["image", "label"], [["a.jpg", 2]])
    import shutil

    shutil.rmtree(root / "masks")
    data = read_folder(root)
    assert list(data) == ["thyroid"] and data["thyroid"][0].label == 2 and data["thyroid"][0].num_classes == 3


def test_folder_labels_errors(tmp_path):
    root = make_folder(tmp_path)
    write_csv(root / "labels.csv", ["image", "label"], [["zz.png", 1], ["a.jpg", ""]])
    with pytest.raises(DataError) as info:
        read_folder(root)
    assert "'zz.png' is not in images/" in str(info.value) and "line 3: label is empty" in str(info.value)
    write_csv(root / "labels.csv", ["file", "label"], [["a.jpg", 1]])
    with pytest.raises(DataError, match="needs columns 'image' and 'label'"):
        read_folder(root)


def test_folder_mismatch_lists_files(tmp_path):
    root = make_folder(tmp_path, stems=("a", "b", "c"), mask_stems=("a", "d"))
    with pytest.raises(DataError) as info:
        read_folder(root)
    msg = str(info.value)
    assert "2 image(s) without a mask in masks/: b.png, c.png" in msg and "1 mask(s) without an image in images/: d.png" in msg


def test_folder_layout_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images/ folder"):
        read_folder(tmp_path / "empty")
    (tmp_path / "empty/images").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        read_folder(tmp_path / "empty")
    _png(tmp_path / "empty/images/a.png", np.zeros((H, W), np.uint8))
    with pytest.raises(DataError, match="neither masks/ nor labels.csv"):
        read_folder(tmp_path / "empty")
    _png(tmp_path / "empty/images/a.jpg", np.zeros((H, W), np.uint8))
    with pytest.raises(DataError, match="same name but different extensions: a.jpg / a.png"):
        read_folder(tmp_path / "empty")


# ---------------------------------------------------------------------------------------------
# augmentation
# ---------------------------------------------------------------------------------------------
def _scene(h=60, w=80, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.int64)
    mask[20:35, 30:50] = 1
    mask[40:50, 10:20] = 2
    box = np.array([30.0, 20.0, 49.0, 34.0])
    points = np.array([[40.0, 27.0], [15.0, 45.0], [31.0, 21.0]])
    return image, mask, box, points


def test_augment_identity_is_exact():
    image, mask, box, points = _scene()
    out = apply_augment(image, mask, box, points, AugmentParams.identity())
    for a, b in zip(out, (image, mask, box, points)):
        np.testing.assert_array_equal(a, b)
    assert out[1].dtype == np.int64
    out = Augment(p=0.0, seed=1)(image, mask, box, points)
    for a, b in zip(out, (image, mask, box, points)):
        np.testing.assert_array_equal(a, b)
    assert Augment(p=0.0)(image)[1:] == (None, None, None)


def test_augment_points_stay_on_mask():
    image, mask, _, points = _scene()
    aug = Augment(p=1.0, flip=True, rotate=20, scale=(0.8, 1.2), translate=0.1, seed=0)
    for _ in range(30):
        _, m, _, p = aug(image, mask, points=points)
        for (x, y), label in zip(p, [1, 2, 1]):
            xi, yi = int(round(x)), int(round(y))
            window = m[max(yi - 1, 0) : yi + 2, max(xi - 1, 0) : xi + 2]
            assert (window == label).any(), (x, y, label)
        assert set(np.unique(m)) <= {0, 1, 2}


def test_augment_flip_mirrors_x_keeps_point_order():
    image, mask, box, points = _scene()
    im, m, b, p = apply_augment(image, mask, box, points, AugmentParams(flip=True))
    np.testing.assert_array_equal(im, image[:, ::-1])
    np.testing.assert_array_equal(m, mask[:, ::-1])
    w = image.shape[1]
    np.testing.assert_allclose(p, np.c_[w - 1 - points[:, 0], points[:, 1]])
    np.testing.assert_allclose(b, [w - 1 - 49.0, 20.0, w - 1 - 30.0, 34.0])


def test_augment_box_from_corners_and_clipped():
    image, mask, box, _ = _scene()
    h, w = mask.shape
    _, m, b, _ = apply_augment(image, mask, box, None, AugmentParams(angle=30.0))
    ys, xs = np.nonzero(m == 1)
    assert b[0] <= xs.min() + 1 and b[1] <= ys.min() + 1 and b[2] >= xs.max() - 1 and b[3] >= ys.max() - 1
    _, _, b, _ = apply_augment(image, None, box, None, AugmentParams(shift=(40.0, 0.0)))
    np.testing.assert_allclose(b, [70.0, 20.0, w - 1, 34.0])  # 70..89 clipped at the right edge
    _, _, b, _ = apply_augment(image, None, box, None, AugmentParams(shift=(100.0, 0.0)))
    assert b[0] == b[2] == w - 1  # left the image: empty box on the border


def test_augment_intensity_touches_image_only_and_is_seeded():
    image, mask, box, points = _scene()
    params = AugmentParams(brightness=0.1, contrast=1.2, gamma=0.8, speckle=0.1, blur_sigma=1.0, noise_seed=3)
    im, m, b, p = apply_augment(image, mask, box, points, params)
    assert im.dtype == np.uint8 and im.shape == image.shape and not np.array_equal(im, image)
    np.testing.assert_array_equal(m, mask)
    np.testing.assert_array_equal(p, points)
    np.testing.assert_array_equal(apply_augment(image, params=params)[0], im)
    a = Augment(p=1.0, seed=5)(image, mask)
    c = Augment(p=1.0, seed=5)(image, mask)
    np.testing.assert_array_equal(a[0], c[0])
    np.testing.assert_array_equal(a[1], c[1])


def test_augment_for_task_and_errors():
    assert Augment.for_task(TaskSpec("r", "regression", 4, hflip=False)).flip is False
    image, mask, _, _ = _scene()
    with pytest.raises(DataError, match="mask shape"):
        apply_augment(image, mask[:10])
    with pytest.raises(DataError, match="points must have shape"):
        apply_augment(image, points=np.zeros(4))
    with pytest.raises(DataError, match="box must have shape"):
        apply_augment(image, box=[1, 2, 3])
    from usam.errors import InputImageError

    with pytest.raises(InputImageError):
        apply_augment(image.astype(np.float32))
