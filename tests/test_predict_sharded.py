"""``usam predict`` sharded over 2 CPU processes (gloo) vs 1 process, on real images with the shipped breast adapter.

The split: 6 real BUSI test images over 3 tasks of ``adapters/breast`` (segmentation, classification, detection;
four of the images serve two tasks each), in a temp folder whose ``Classification/`` and ``Segmentation/`` link
to the real data. Runs: one process (this one, through the Python API); 2 processes under ``accelerate launch``
(as ``tests/test_distributed.py`` launches training, with its helpers; it starts them with torchrun); a resume
of the 1-process outputs with some of them deleted (another world size) and refusals, with the 2 ranks started
by hand with torchrun's environment variables (no launcher process to pay for, and each rank's exit code seen: a
launcher reports only its own).

Checks: every mask PNG and every JSON file byte-identical to the 1-process run; each image encoded once in all;
only rank 0 reports; no per-rank journal left; the resume redoes exactly the deleted outputs; a refused output
folder (before the ranks join) and a refusal found by rank 0 alone (after they join) end both ranks with the
same exit code, without a hang.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_distributed import TIMEOUT_S, _free_port, _run

from usam.challenge.predict import JOURNAL_DIR, _check_merged, _Journal, _open_journals
from usam.challenge.shard import Shard, agree, each
from usam.data.fmc import Sample
from usam.errors import UsamError

pytestmark = pytest.mark.real

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "fmc_uia_dev" / "test"
ADAPTER = REPO / "adapters" / "breast"
#: task -> data rows of its test CSV taken (0-based): 6 distinct images, shared between tasks
ROWS = {"breast_lesion": range(4), "breast_3cls": range(2, 6), "breast_lesion_det": range(2)}
PREDICT = ["-m", "usam", "predict", "--adapters", str(ADAPTER), "--runtime", "torch", "--precision", "fp32",
           "--device", "cpu", "--quiet", "--json"]


def _make_root(root: Path) -> Path:
    (root / "csv_files").mkdir(parents=True)
    for d in ("Classification", "Segmentation"):
        (root / d).symlink_to(REAL / d, target_is_directory=True)
    for task, rows in ROWS.items():
        lines = (REAL / "csv_files" / f"{task}.csv").read_text(encoding="utf-8").splitlines(keepends=True)
        (root / "csv_files" / f"{task}.csv").write_text(lines[0] + "".join(lines[1 + i] for i in rows), encoding="utf-8")
    return root


def _outputs(folder: Path) -> dict[str, bytes]:
    """Every output file (masks and JSON files; not the journals) -> its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and JOURNAL_DIR not in p.relative_to(folder).parts}


def _journal_lines(folder: Path) -> dict[str, set[str]]:
    return {p.name: set(p.read_text(encoding="utf-8").splitlines()) for p in (folder / JOURNAL_DIR).glob("*.jsonl")}


def _launch_ranks(args: list[str], env: dict, n: int = 2) -> list[subprocess.CompletedProcess]:
    """``n`` ranks started as torchrun starts them (its environment variables), each one's exit code kept."""
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, *args], cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**env, "RANK": str(k), "LOCAL_RANK": str(k), "WORLD_SIZE": str(n),
                                   "LOCAL_WORLD_SIZE": str(n), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port})
             for k in range(n)]
    done = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=TIMEOUT_S)
            done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    except subprocess.TimeoutExpired:  # pragma: no cover - a rank left waiting
        pytest.fail(f"a rank did not finish in {TIMEOUT_S} s (hung at a collective?)")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return done


def _predict_here(root: Path, out: Path) -> dict:
    """The 1-process run, in this process (what ``usam predict`` with the flags of :data:`PREDICT` runs; no
    launcher, so no process group), on one thread like each rank."""
    import torch

    import usam
    from usam.challenge.predict import predict_split

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = usam.load(adapters=[str(ADAPTER)], precision="fp32", runtime="torch", device="cpu")
        return json.loads(json.dumps(predict_split(root, out, model, progress=False, shard=Shard())))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    if not (REAL / "csv_files" / "breast_lesion.csv").is_file():
        pytest.skip(f"real FMC_UIA dev data not found at {REAL}")
    tmp = tmp_path_factory.mktemp("sharded")
    root = _make_root(tmp / "test")
    env = {**os.environ, "USAM_CACHE": str(tmp / "cache"), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    for k in ("ACCELERATE_USE_CPU", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    one, two = tmp / "one", tmp / "two"
    s1 = _predict_here(root, one)
    r2 = _run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), *PREDICT[:3], str(root), str(two), *PREDICT[3:]],
              env, "2-process predict")
    return {"tmp": tmp, "root": root, "env": env, "one": one, "two": two, "r2": r2, "s1": s1, "s2": json.loads(r2.stdout)}


def test_two_processes_write_byte_identical_outputs(runs):
    o1, o2 = _outputs(runs["one"]), _outputs(runs["two"])
    masks = [n for n in o1 if n.endswith(".png")]
    assert len(masks) == len(ROWS["breast_lesion"])
    assert {"classification_predictions.json", "detection_predictions.json", "missing_tasks.json"} <= set(o1)
    assert sorted(o2) == sorted(o1)
    assert [n for n in o1 if o1[n] != o2[n]] == []
    # one journal per task, the ranks' own merged in and gone; the same rows as the 1-process journals
    assert _journal_lines(runs["two"]) == _journal_lines(runs["one"])
    assert not list((runs["two"] / JOURNAL_DIR).glob("*@*"))
    assert (runs["two"] / JOURNAL_DIR / "state.json").read_bytes() == (runs["one"] / JOURNAL_DIR / "state.json").read_bytes()


def test_each_image_is_encoded_once_and_only_rank0_reports(runs):
    s1, s2 = runs["s1"], runs["s2"]
    assert s1["images"] == s1["images_total"] == s1["encoder_calls"] == 6 and "shard" not in s1
    assert s2["shard"] == {"rank": 0, "world_size": 2, "images": 3}
    for k in ("tasks", "missing_tasks", "failed_images", "images", "images_total", "encoder_calls", "files"):
        assert s2[k] == s1[k], k
    err = runs["r2"].stderr
    assert err.count("breast_lesion (segmentation, adapter breast): 4 predicted") == 1  # rank 0's report, once
    assert "rank 1 of 2: shard of 3 image(s) done" in err


def test_sharded_resume_redoes_exactly_the_deleted_outputs(runs):
    """The 1-process outputs, a mask and a classification row deleted, resumed by 2 processes: one image each."""
    work = runs["tmp"] / "resume"
    shutil.copytree(runs["one"], work)
    masks = sorted(work.rglob("*.png"))
    masks[0].unlink()
    cls_journal = work / JOURNAL_DIR / "breast_3cls.jsonl"
    lines = cls_journal.read_text(encoding="utf-8").splitlines(keepends=True)
    cls_journal.write_text("".join(lines[:-1]), encoding="utf-8")
    kept = {m: m.stat().st_mtime_ns for m in masks[1:]}
    done = _launch_ranks([*PREDICT[:3], str(runs["root"]), str(work), *PREDICT[3:]], runs["env"])
    assert [d.returncode for d in done] == [0, 0], [d.stderr[-2000:] for d in done]
    assert done[1].stdout == ""  # rank 0 prints the summary
    s = json.loads(done[0].stdout)
    assert {t: (v["predicted"], v["skipped"]) for t, v in s["tasks"].items()} == {
        "breast_lesion": (1, 3), "breast_3cls": (1, 3), "breast_lesion_det": (0, 2)}
    assert s["images"] == s["encoder_calls"] == 2 and s["shard"]["images"] == 1
    assert "rank 1 of 2: shard of 1 image(s) done" in done[1].stderr
    assert _outputs(work) == _outputs(runs["one"])
    assert {m: m.stat().st_mtime_ns for m in kept} == kept  # the others are not rewritten
    assert not list((work / JOURNAL_DIR).glob("*@*"))


def test_refusals_end_every_rank_alike_without_a_hang(runs):
    # before the ranks join: the output folder is a file (exit 7 on both)
    not_a_folder = runs["tmp"] / "file_out"
    not_a_folder.write_text("x")
    done = _launch_ranks([*PREDICT[:3], str(runs["root"]), str(not_a_folder), *PREDICT[3:]], runs["env"])
    assert [d.returncode for d in done] == [7, 7], [d.stderr[-800:] for d in done]
    assert all("exists and is not a folder" in d.stderr for d in done)
    assert not_a_folder.read_text() == "x"
    # after they join: only rank 0 reads state.json and finds another model's outputs; rank 1 must not wait
    other = runs["tmp"] / "other_model"
    shutil.copytree(runs["one"], other)
    state_path = other / JOURNAL_DIR / "state.json"
    state = json.loads(state_path.read_text())
    state["tasks"]["breast_lesion"]["weights_sha256"] = "0" * 64
    state_path.write_text(json.dumps(state))
    before = _outputs(other)
    done = _launch_ranks([*PREDICT[:3], str(runs["root"]), str(other), *PREDICT[3:]], runs["env"])
    assert [d.returncode for d in done] == [1, 1], [d.stderr[-800:] for d in done]
    assert all("holds predictions made with another adapter" in d.stderr for d in done)
    assert _outputs(other) == before


# ------------------------------------------------------------------------------ without launching anything
def test_shards_are_disjoint_balanced_and_cover_everything():
    items = list(range(11))
    parts = [Shard(k, 3).take(items) for k in range(3)]
    assert sorted(i for p in parts for i in p) == items
    assert [len(p) for p in parts] == [4, 4, 3]
    assert Shard().take(items) == items and not Shard().sharded and Shard().main
    # one process: the collectives just call
    assert agree(Shard(), lambda: 5) == 5 and each(Shard(), lambda: 5) == [5]

    def boom():
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        agree(Shard(), boom)


def test_rank_journals_are_merged_once_and_dropped_by_restart(tmp_path):
    jdir = tmp_path / JOURNAL_DIR
    jdir.mkdir()
    e = [{"image_path": f"im{i}.png", "task_id": "t", "predicted_class": i} for i in range(4)]
    (jdir / "t.jsonl").write_text(json.dumps(e[0]) + "\n")
    (jdir / "t@0.jsonl").write_text(json.dumps(e[1]) + "\n" + json.dumps(e[2])[:-3])  # a line cut by a crash
    (jdir / "t@1.jsonl").write_text(json.dumps(e[3]) + "\n")
    (jdir / "tx@0.jsonl").write_text(json.dumps({**e[0], "task_id": "tx"}) + "\n")  # another task's: untouched
    journals = _open_journals(jdir, {"t": "a"}, restart=False)
    assert sorted(journals["t"].entries) == ["im0.png", "im1.png", "im3.png"]
    assert sorted(p.name for p in jdir.iterdir()) == ["t.jsonl", "tx@0.jsonl"]
    assert sorted(_Journal(jdir / "t.jsonl").entries) == ["im0.png", "im1.png", "im3.png"]
    (jdir / "t@3.jsonl").write_text(json.dumps(e[2]) + "\n")
    _open_journals(jdir, {"t": "a"}, restart=True)
    assert sorted(p.name for p in jdir.iterdir()) == ["tx@0.jsonl"]


def test_rank0_refuses_journals_it_cannot_see(tmp_path):
    """A rank on another node wrote its journal where rank 0 does not see it: no JSON file with rows lacking."""
    rows = [Sample(tmp_path / f"im{i}.png", f"im{i}.png", "t", "classification", 2) for i in range(3)]
    journal = _Journal(tmp_path / "t.jsonl")
    journal.add({"image_path": "im0.png", "task_id": "t", "predicted_class": 0})
    with pytest.raises(UsamError, match=r"(?s)1 predicted row\(s\) .*every process \(every node\) shares.*im2"):
        _check_merged(tmp_path, {"t": journal}, {"t": rows}, [{"image_path": "im1.png"}])
    _check_merged(tmp_path, {"t": journal}, {"t": rows[:1]}, [])
    journal.close()
