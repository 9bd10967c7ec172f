"""Hub sharing of adapters, without any network.

- Loading by Hub id goes through huggingface_hub's real ``snapshot_download(local_files_only=True)`` on a
  hand-built HF cache (``models--org--name/{blobs,refs,snapshots}``) under a tmp ``HF_HUB_CACHE``.
- ``usam push`` runs against ``HfApi`` methods replaced by recorders.
- huggingface_hub's HTTP client is replaced for every test by one whose transport refuses (and records)
  every request; tests assert it saw none unless they exercise the "network down" path on purpose.

All models are the tiny random SAM ViT (seed 0), so each test takes well under a second or two on a CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import huggingface_hub
from huggingface_hub import constants as hf_constants

from usam import UsamModel, build_backbone
from usam.adapters.adapter import Adapter, attach_adapter
from usam.adapters.config import DEFAULT_DECODER_TRAIN, AdapterConfig
from usam.adapters.card import adapter_card, parse_card
from usam.apps.cli import main as cli_main
from usam.tasks.spec import TaskSpec
from usam.errors import AdapterError, DataError, HubError
from usam.adapters import resolve_adapter, validate_adapter_dir
from usam.adapters.layout import ADAPTER_FILES
from usam.hub import pull_adapter, push_adapter
from usam.adapters.lora import LoraSettings, add_lora

REPO = "usam-test/multi"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
COMMIT_V1 = "fedcba9876543210fedcba9876543210fedcba98"
TASK_IDS = ("head_symphysis_multi", "breast_3cls", "breast_lesion_det", "fetal_head_biometry")
ALL_FILES = {"config.json", "heads.safetensors", "adapter_config.json", "adapter_model.safetensors", "metrics.json", "README.md"}
VAL_METRICS = {
    "head_symphysis_multi": {"dice_auto": 0.71, "dice_box": 0.83, "dice_1click": 0.79, "score": 0.77},
    "breast_3cls": {"accuracy": 0.64, "auc": float("nan"), "score": 0.64},
    "breast_lesion_det": {"iou": 0.52, "score": 0.52},
    "fetal_head_biometry": {"mre_px": 7.5, "score": 0.86},
}


# ------------------------------------------------------------------------------------------- fixtures
def tiny_backbone():
    """A fresh tiny random SAM ViT; the same seed gives the same weights and checksum every time."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build_backbone("sam_vit_b", pretrained=False, tiny=True)


@pytest.fixture(autouse=True)
def no_network(tmp_path, monkeypatch):
    """Private HF cache / home, offline by default, and an HTTP client that refuses every request."""
    from huggingface_hub.utils import _http

    hf_home = tmp_path / "hf_home"
    cache = hf_home / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    # huggingface_hub reads these at import time: patch the constants too.
    monkeypatch.setattr(hf_constants, "HF_HOME", str(hf_home))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    import httpx2

    requests: list[str] = []

    def refuse(request):
        requests.append(f"{request.method} {request.url}")
        raise httpx2.ConnectError("network disabled in tests", request=request)

    huggingface_hub.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(refuse)))
    state = SimpleNamespace(cache=cache, requests=requests, allow_requests=False)
    try:
        yield state
    finally:
        huggingface_hub.set_client_factory(_http.default_client_factory)
    assert state.allow_requests or not requests, f"a test tried to reach the network: {requests}"


def go_online(monkeypatch):
    """Leave offline mode (the refusing HTTP client stays in place)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)


def _randomise(params, scale, gen):
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn(p.shape, generator=gen) * scale)


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """An adapter with heads of all four kinds, a tuned decoder with LoRA and encoder LoRA, saved to disk,
    and the original model's outputs on a fixed image (prediction, embedding, prompted masks)."""
    backbone = tiny_backbone()
    model = UsamModel(backbone)
    tasks = {
        "head_symphysis_multi": TaskSpec("head_symphysis_multi", "segmentation", 3, ["background", "pubic_symphysis", "fetal_head"]),
        "breast_3cls": TaskSpec("breast_3cls", "classification", 3, ["benign", "malignant", "normal"]),
        "breast_lesion_det": TaskSpec("breast_lesion_det", "detection", 1),
        "fetal_head_biometry": TaskSpec("fetal_head_biometry", "regression", 4, ["ofd_left", "ofd_right", "bpd_top", "bpd_bottom"]),
    }
    config = AdapterConfig(
        name="demo", backbone=backbone.name, backbone_checksum=backbone.checksum, tasks=tasks,
        lora=LoraSettings(rank=4, alpha=8.0), decoder={"lora": {"rank": 2}, "train": list(DEFAULT_DECODER_TRAIN)},
        input_size=backbone.input_size, training={"mode": "lora", "config": "configs/demo.yaml"},
    )
    gen = torch.Generator().manual_seed(1)
    with torch.random.fork_rng():
        torch.manual_seed(2)
        adapter = Adapter(config, backbone)
    attach_adapter(model, adapter, "demo")
    add_lora(backbone.image_encoder, "demo", config.lora)
    # LoRA B starts at zero (no effect): make every trained part non-trivial so a lost tensor would show.
    _randomise([p for n, p in backbone.image_encoder.named_parameters() if "lora_" in n], 0.05, gen)
    _randomise([p for p in adapter.decoder.parameters() if p.requires_grad], 0.05, gen)
    _randomise(adapter.heads.parameters(), 0.01, gen)
    model.eval()
    model.set_adapter("demo")
    out = tmp_path_factory.mktemp("adapters") / "demo"
    metrics = {"best_epoch": 1, "val": VAL_METRICS, "history": []}
    adapter.save_pretrained(out, backbone.image_encoder, metrics=metrics, card=adapter_card(config, metrics))

    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    return SimpleNamespace(dir=out, config=config, image=image, checksum=backbone.checksum, **_outputs(model, image))


def _outputs(model, image):
    with torch.no_grad():
        emb = model.embed(image).embedding.clone()
        pred = model.predict(image)
        points = (torch.tensor([[[100.0, 80.0], [150.0, 120.0]]]), torch.tensor([[1, 0]]))
        click_logits, click_iou = model.decode(emb, points=points, multimask_output=True)
        box_logits, _ = model.decode(emb, boxes=torch.tensor([[40.0, 30.0, 200.0, 180.0]]), multimask_output=False)
    return {"embedding": emb, "pred": pred, "click_logits": click_logits, "click_iou": click_iou, "box_logits": box_logits}


def assert_same_outputs(got: dict, ref) -> None:
    torch.testing.assert_close(got["embedding"], ref.embedding, rtol=0, atol=1e-5)
    for key in ("click_logits", "click_iou", "box_logits"):
        torch.testing.assert_close(got[key], getattr(ref, key), rtol=1e-5, atol=1e-4)
    a, b = got["pred"], ref.pred
    assert set(a.masks) == {"head_symphysis_multi"} and set(a.probabilities) == {"breast_3cls"}
    for tid in a.masks:
        np.testing.assert_array_equal(a.masks[tid], b.masks[tid])
    for field in ("probabilities", "boxes", "keypoints"):
        da, db = getattr(a, field), getattr(b, field)
        assert set(da) == set(db) and da
        for tid in da:
            np.testing.assert_allclose(da[tid], db[tid], rtol=1e-5, atol=1e-4)
    assert a.class_names == b.class_names


def assert_same_state(model, name, original) -> None:
    """Every tensor of the loaded adapter equals the saved one (heads, tuned decoder, encoder LoRA)."""
    from safetensors.torch import load_file

    from usam.adapters.lora import lora_state_dict

    heads = load_file(str(original.dir / "heads.safetensors"))
    lora = load_file(str(original.dir / "adapter_model.safetensors"))
    got_heads = model.adapters[name].head_state()
    got_lora = lora_state_dict(model.backbone.image_encoder, name)
    assert set(got_heads) == set(heads) and set(got_lora) == set(lora)
    for k in heads:
        assert torch.equal(got_heads[k], heads[k]), k
    for k in lora:
        assert torch.equal(got_lora[k], lora[k]), k
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in lora.items())  # the LoRA is not a no-op


def put_in_hf_cache(cache: Path, repo_id: str, src: Path, commit: str = COMMIT, ref: str = "main") -> Path:
    """Lay ``src``'s files out as huggingface_hub does: content-addressed blobs, symlinked from a snapshot."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for f in sorted(src.iterdir()):
        if f.is_file():
            data = f.read_bytes()
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return snap


def copy_adapter(original, tmp_path, name="adapter") -> Path:
    dst = tmp_path / name
    shutil.copytree(original.dir, dst)
    return dst


# ------------------------------------------------------------------------------------------- load by Hub id
@pytest.mark.filterwarnings("ignore:Already found a `peft_config`")
def test_load_by_hub_id_from_hf_cache_matches_original(original, no_network):
    snap = put_in_hf_cache(no_network.cache, REPO, original.dir)
    assert resolve_adapter(REPO) == snap  # the real snapshot_download(local_files_only=True) found it

    model = UsamModel(tiny_backbone())
    assert model.load_adapter(REPO, name="breast") == "breast"
    assert model.active_adapter == "breast"
    assert_same_state(model, "breast", original)
    assert_same_outputs(_outputs(model, original.image), original)

    # a second copy from the local directory, under another name, beside the first; switching by name
    assert model.load_adapter(str(original.dir), name="local") == "local"
    assert model.active_adapter == "local" and set(model.adapters) == {"breast", "local"}
    assert_same_state(model, "local", original)
    assert_same_state(model, "breast", original)
    model.set_adapter("breast")
    assert model.encoder_key().endswith("|breast|fp32|torch")


def test_usam_load_by_hub_id(original, no_network, monkeypatch):
    put_in_hf_cache(no_network.cache, REPO, original.dir)
    import usam
    import usam.model

    monkeypatch.setattr(usam.model, "build_backbone", lambda *a, **k: tiny_backbone())
    model = usam.load(backbone="sam_vit_b", adapters=[REPO], precision="fp32")
    assert list(model.adapters) == ["demo"] and model.active_adapter == "demo"
    assert_same_state(model, "demo", original)


def test_resolve_revision_and_local_paths(original, no_network, tmp_path, monkeypatch):
    main_snap = put_in_hf_cache(no_network.cache, REPO, original.dir, COMMIT, "main")
    v1_snap = put_in_hf_cache(no_network.cache, REPO, original.dir, COMMIT_V1, "v1")
    assert resolve_adapter(REPO) == main_snap
    assert resolve_adapter(REPO, revision="v1") == v1_snap
    assert resolve_adapter(REPO, revision=COMMIT_V1) == v1_snap
    with pytest.raises(HubError, match=r"usam pull usam-test/multi --revision v2"):
        resolve_adapter(REPO, revision="v2")
    # a local directory wins over the cache, even when it is spelled like a Hub id
    monkeypatch.chdir(tmp_path)
    shutil.copytree(original.dir, tmp_path / "usam-test" / "multi")
    assert resolve_adapter(REPO) == Path(REPO)
    with pytest.raises(AdapterError, match="is a file"):  # a local path gone wrong: an adapter error (exit 8)
        resolve_adapter(str(original.dir / "config.json"))
    with pytest.raises(AdapterError, match="adapter folder './no/such/dir' does not exist"):
        resolve_adapter("./no/such/dir")
    with pytest.raises(HubError, match="not a local folder .check the path. and, as a Hub id, not in the local"):
        resolve_adapter("adapters/nope")  # spelled like a Hub id too: both readings named


def test_resolve_with_cached_tree_listing(original, no_network):
    """After `usam pull` (allow_patterns), the cached tree lists files never fetched (.gitattributes, a pickle):
    loading still works; a missing adapter file makes the copy incomplete -> HubError naming `usam pull`."""
    pytest.importorskip("huggingface_hub._tree_cache")
    from huggingface_hub._tree_cache import TreeCacheEntry, write_tree_cache

    snap = put_in_hf_cache(no_network.cache, REPO, original.dir)
    repo = snap.parent.parent
    entries = {f.name: TreeCacheEntry(size=f.stat().st_size, blob_id="0" * 40) for f in snap.iterdir()}
    entries[".gitattributes"] = TreeCacheEntry(size=10, blob_id="1" * 40)
    entries["pytorch_model.bin"] = TreeCacheEntry(size=10, blob_id="2" * 40)
    write_tree_cache(str(repo), COMMIT, entries)
    assert resolve_adapter(REPO) == snap
    (snap / "heads.safetensors").unlink()
    with pytest.raises(HubError, match=r"incomplete.*usam pull usam-test/multi"):
        resolve_adapter(REPO)


def test_unknown_hub_id_offline(no_network):
    with pytest.raises(HubError, match=r"not in the local Hugging Face cache.*`usam pull usam-test/missing`"):
        resolve_adapter("usam-test/missing")
    model = UsamModel(tiny_backbone())
    with pytest.raises(HubError, match=r"usam pull usam-test/missing"):
        model.load_adapter("usam-test/missing")
    assert len(model.adapters) == 0


def test_cli_pull_offline_is_a_clear_error(no_network, capsys):
    # `usam pull` offline: a clear HubError and exit code 9
    assert cli_main(["pull", "usam-test/missing"]) == 9
    err = capsys.readouterr().err
    assert "usam pull: error:" in err and "offline" in err and "HF_HUB_OFFLINE" in err


# ------------------------------------------------------------------------------------------- tampering
def _rewrite_config(d: Path, edit) -> None:
    cfg = json.loads((d / "config.json").read_text())
    edit(cfg)
    (d / "config.json").write_text(json.dumps(cfg))


def _drop_head_tensor(d: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(d / "heads.safetensors"))
    state.pop(sorted(k for k in state if k.startswith("heads.breast_3cls."))[0])
    save_file(state, str(d / "heads.safetensors"))


def _drop_lora_tensor(d: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(d / "adapter_model.safetensors"))
    state.pop(sorted(state)[0])
    save_file(state, str(d / "adapter_model.safetensors"))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


TAMPERING = {
    # name: (tamper(dir), message regex, also refused by validate_adapter_dir / push without a backbone)
    "wrong backbone name": (lambda d: _rewrite_config(d, lambda c: c["backbone"].update(name="litemedsam")),
                            r"trained on backbone 'litemedsam'.*this model runs 'sam_vit_b_tiny'", False),
    "wrong checksum": (lambda d: _rewrite_config(d, lambda c: c["backbone"].update(checksum="ab" * 32)),
                       r"sha256 abababababab.*--backbone sam_vit_b_tiny", False),
    "blank checksum": (lambda d: _rewrite_config(d, lambda c: c["backbone"].update(checksum="")),
                       r"trained on backbone 'sam_vit_b_tiny'", False),
    "pickle .bin present": (lambda d: (d / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01."),
                            r"pickled files \['pytorch_model.bin'\].*safetensors", True),
    "pickle .pt present": (lambda d: (d / "heads.pt").write_bytes(b"\x80\x04K\x01."), r"pickled files \['heads.pt'\]", True),
    "missing head tensor": (_drop_head_tensor, r"missing.*heads\.breast_3cls\.", True),
    "missing LoRA file": (lambda d: (d / "adapter_model.safetensors").unlink(),
                          r"declares encoder LoRA but has no adapter_model.safetensors", True),
    "missing LoRA tensor": (_drop_lora_tensor, r"LoRA weights are missing 1 tensors", False),
    "corrupt heads": (lambda d: _truncate(d / "heads.safetensors"), r"heads.safetensors is not a readable safetensors file", True),
    "corrupt LoRA": (lambda d: (d / "adapter_model.safetensors").write_bytes(b"not safetensors at all"),
                     r"adapter_model.safetensors is not a readable safetensors file", True),
    "config not JSON": (lambda d: (d / "config.json").write_text("{not json"), r"config.json is not valid JSON", True),
    "config not usam": (lambda d: (d / "config.json").write_text(json.dumps({"model_type": "sam", "hidden_size": 8})),
                        r"config.json is not a usam adapter config \(KeyError", True),
    "config bad LoRA": (lambda d: _rewrite_config(d, lambda c: c["lora"].update(rank=0)),
                        r"is not a usam adapter config.*rank must be >= 1", True),
    "no config": (lambda d: (d / "config.json").unlink(), r"is not a usam adapter: it has no config.json", True),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampered_adapters_are_refused(case, original, tmp_path):
    tamper, message, _ = TAMPERING[case]
    d = copy_adapter(original, tmp_path)
    tamper(d)
    model = UsamModel(tiny_backbone())
    with pytest.raises(AdapterError, match=message):
        model.load_adapter(str(d))
    # nothing half-loaded is left behind
    assert model.active_adapter is None and len(model.adapters) == 0
    assert not any(".demo." in n for n, _ in model.backbone.image_encoder.named_parameters())
    if case != "missing LoRA tensor":  # refused before anything touched the model
        assert not any("lora_" in n for n, _ in model.backbone.image_encoder.named_parameters())


@pytest.mark.parametrize("case", [c for c, v in TAMPERING.items() if v[2]])
def test_push_refuses_tampered_adapters_before_any_upload(case, original, tmp_path, monkeypatch, hub_api):
    tamper, message, _ = TAMPERING[case]
    d = copy_adapter(original, tmp_path)
    tamper(d)
    with pytest.raises(AdapterError, match=message):
        validate_adapter_dir(d)
    go_online(monkeypatch)
    with pytest.raises(AdapterError, match=message):
        push_adapter(d, "usam-test/bad")
    assert hub_api.calls == []


def test_tampered_adapter_in_hf_cache_is_refused(original, no_network, tmp_path):
    d = copy_adapter(original, tmp_path)
    (d / "optimizer.pt").write_bytes(b"\x80\x04K\x01.")
    put_in_hf_cache(no_network.cache, REPO, d)
    with pytest.raises(AdapterError, match=r"pickled files \['optimizer.pt'\]"):
        UsamModel(tiny_backbone()).load_adapter(REPO)


def test_validate_catches_inconsistencies_without_a_backbone(original, tmp_path):
    d = copy_adapter(original, tmp_path)
    check = validate_adapter_dir(d)
    assert set(check.files) == ALL_FILES and check.config.name == "demo"
    # tensors of a task the config does not have
    _rewrite_config(d, lambda c: c["tasks"].pop("breast_3cls"))
    with pytest.raises(AdapterError, match=r"tensors of no configured task.*heads\.breast_3cls\."):
        validate_adapter_dir(d)
    d = copy_adapter(original, tmp_path, "b")
    _rewrite_config(d, lambda c: c.update(decoder=None))
    with pytest.raises(AdapterError, match="holds tuned-decoder tensors but config.json declares no tuned decoder"):
        validate_adapter_dir(d)
    d = copy_adapter(original, tmp_path, "c")
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    with pytest.raises(AdapterError, match="not a peft LoRA config"):
        validate_adapter_dir(d)
    d = copy_adapter(original, tmp_path, "d")
    (d / "README.md").write_text("---\nlicense: [unclosed\n---\n# card\n")
    with pytest.raises(AdapterError, match="YAML metadata is invalid"):
        validate_adapter_dir(d)


# ------------------------------------------------------------------------------------------- push
@pytest.fixture
def hub_api(monkeypatch):
    """Replace the HfApi methods push uses by recorders; any other upload method fails the test."""
    calls: list[tuple[str, dict]] = []
    uploads: list[dict] = []

    def create_repo(self, repo_id, **kw):
        calls.append(("create_repo", {"repo_id": repo_id, **kw}))
        return SimpleNamespace(repo_id=repo_id, url=f"https://huggingface.co/{repo_id}")

    def create_branch(self, repo_id, **kw):
        calls.append(("create_branch", {"repo_id": repo_id, **kw}))

    def upload_folder(self, **kw):
        from huggingface_hub.utils import filter_repo_objects

        calls.append(("upload_folder", dict(kw)))
        folder = Path(kw["folder_path"])
        present = sorted(p.name for p in folder.iterdir() if p.is_file())
        chosen = filter_repo_objects(present, allow_patterns=kw.get("allow_patterns"), ignore_patterns=kw.get("ignore_patterns"))
        uploads.append({name: (folder / name).read_bytes() for name in chosen})
        return SimpleNamespace(commit_url=f"https://huggingface.co/{kw['repo_id']}/commit/{'c' * 40}", oid="c" * 40)

    def forbidden(name):
        def method(self, *a, **kw):
            raise AssertionError(f"HfApi.{name} must not be called by usam push")
        return method

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_branch", create_branch)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    for name in ("create_commit", "upload_file", "upload_large_folder", "delete_file", "delete_repo"):
        monkeypatch.setattr(huggingface_hub.HfApi, name, forbidden(name), raising=False)
    return SimpleNamespace(calls=calls, uploads=uploads)


def test_push_uploads_adapter_files_and_generated_card(original, tmp_path, monkeypatch, hub_api, capsys):
    d = copy_adapter(original, tmp_path)
    (d / "README.md").unlink()
    (d / "notes.txt").write_text("local notes, not part of the adapter")
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    go_online(monkeypatch)
    rc = cli_main(["push", str(d), "usam-test/breast", "--private", "--revision", "dev"])
    assert rc == 0, capsys.readouterr().err
    out = capsys.readouterr().out.strip()
    assert out == "https://huggingface.co/usam-test/breast/commit/" + "c" * 40

    names = [c[0] for c in hub_api.calls]
    assert names == ["create_repo", "create_branch", "upload_folder"]
    assert hub_api.calls[0][1] == {"repo_id": "usam-test/breast", "private": True, "exist_ok": True, "repo_type": "model"}
    assert hub_api.calls[1][1] == {"repo_id": "usam-test/breast", "branch": "dev", "repo_type": "model", "exist_ok": True}
    up = hub_api.calls[2][1]
    assert up["repo_id"] == "usam-test/breast" and up["revision"] == "dev" and up["repo_type"] == "model"
    assert up["commit_message"] == "Upload usam adapter demo (" + ", ".join(TASK_IDS) + ")"
    assert sorted(up["allow_patterns"]) == sorted(ALL_FILES)
    assert not up.get("delete_patterns")  # every optional file is present: nothing stale to remove

    uploaded = hub_api.uploads[0]
    assert set(uploaded) == ALL_FILES  # exactly the adapter files: not notes.txt
    for name in ALL_FILES - {"README.md"}:
        assert uploaded[name] == before[name], name
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before  # the local directory is untouched

    meta, body = parse_card(uploaded["README.md"].decode())
    assert meta["library_name"] == "usam"
    assert meta["base_model"] == "sam_vit_b_tiny"  # no Hub id for the tiny test backbone: its usam name
    assert "base_model_relation" not in meta
    assert meta["license"] == "apache-2.0"
    assert {"ultrasound", "medical-imaging", "segmentation", "lora"} <= set(meta["tags"])
    assert meta["datasets"] == ["BUSI", "HC18", "PSFHS"]
    assert meta["pipeline_tag"] == "image-segmentation"
    (index,) = meta["model-index"]
    assert index["name"] == "breast"
    results = {r["task"]["name"]: r for r in index["results"]}
    assert set(results) == set(TASK_IDS)
    seg = results["head_symphysis_multi"]
    assert seg["task"]["type"] == "image-segmentation"
    assert seg["dataset"] == {"name": "PSFHS (head_symphysis_multi)", "type": "PSFHS", "split": "validation"}
    assert {m["type"]: m["value"] for m in seg["metrics"]} == {"dice_auto": 0.71, "dice_box": 0.83, "dice_1click": 0.79}
    assert {m["type"] for m in results["breast_3cls"]["metrics"]} == {"accuracy"}  # NaN AUC and `score` left out
    assert results["fetal_head_biometry"]["task"]["type"] == "keypoint-detection"
    assert results["breast_lesion_det"]["task"]["type"] == "object-detection"
    for section in ("## Tasks", "## Training data", "## Intended use and limits", "## Usage", "Not a medical device"):
        assert section in body
    assert "| head_symphysis_multi | segmentation | background, pubic_symphysis, fetal_head |" in body
    assert "Al-Dhabyani W" in body and "van den Heuvel" in body and "Scientific Data 11:436" in body
    assert "usam pull usam-test/breast" in body
    assert 'usam.load(backbone="sam_vit_b_tiny", adapters=["usam-test/breast"])' in body
    assert original.checksum in body


def test_push_keeps_existing_card_and_custom_message(original, tmp_path, monkeypatch, hub_api):
    d = copy_adapter(original, tmp_path)
    card = (d / "README.md").read_text()
    go_online(monkeypatch)
    result = push_adapter(d, "usam-test/breast", commit_message="v2: more data")
    assert not result.card_generated and result.url.endswith("c" * 40)
    names = [c[0] for c in hub_api.calls]
    assert names == ["create_repo", "upload_folder"]  # main branch: no branch to create
    up = hub_api.calls[1][1]
    assert up["commit_message"] == "v2: more data" and up["revision"] is None
    assert hub_api.calls[0][1]["private"] is False
    assert hub_api.uploads[0]["README.md"].decode() == card


def test_push_with_evaluation_results_and_without_lora(original, tmp_path, monkeypatch, hub_api, capsys):
    d = copy_adapter(original, tmp_path)
    for name in ("adapter_model.safetensors", "adapter_config.json", "metrics.json"):
        (d / name).unlink()
    _rewrite_config(d, lambda c: c.update(lora=None))
    results = {
        "data_root": "/data/fmc_uia_dev/test", "pred_dir": "/tmp/pred", "missing_total": 0,
        "tasks": {
            "head_symphysis_multi": {"kind": "segmentation", "n": 5, "missing": 0,
                                     "metrics": {"dice": 0.8123456, "hd": 14.2, "dice_per_class": {"fetal_head": 0.9}}},
            "breast_3cls": {"kind": "classification", "n": 5, "missing": 0, "metrics": {"auc": None, "accuracy": 0.6}},
            "lung": {"kind": "segmentation", "n": 3, "missing": 0, "metrics": {"dice": 0.5}},  # not this adapter's
        },
    }
    rfile = tmp_path / "results.json"
    rfile.write_text(json.dumps(results))
    go_online(monkeypatch)
    rc = cli_main(["push", str(d), "usam-test/nolora", "--metrics", str(rfile), "--message", "eval",
                   "--base-model", "usam-test/tiny-sam", "--license", "cc-by-4.0"])
    assert rc == 0, capsys.readouterr().err
    up = hub_api.calls[-1][1]
    assert set(hub_api.uploads[0]) == {"config.json", "heads.safetensors", "README.md"}
    # adapter files an earlier push may have left are removed in the same commit
    assert sorted(up["delete_patterns"]) == ["adapter_config.json", "adapter_model.safetensors", "metrics.json"]
    meta, body = parse_card(hub_api.uploads[0]["README.md"].decode())
    assert meta["base_model"] == "usam-test/tiny-sam" and meta["base_model_relation"] == "adapter"
    assert meta["license"] == "cc-by-4.0" and "lora" not in meta["tags"]
    res = {r["task"]["name"]: r for r in meta["model-index"][0]["results"]}
    assert set(res) == {"head_symphysis_multi", "breast_3cls"}
    assert res["head_symphysis_multi"]["dataset"]["split"] == "test"
    assert {m["type"]: m["value"] for m in res["head_symphysis_multi"]["metrics"]} == {"dice": 0.8123, "hd": 14.2}
    assert {m["type"] for m in res["breast_3cls"]["metrics"]} == {"accuracy"}
    assert "usam evaluate" in body and "no encoder LoRA" in body


def test_push_dry_run_offline_and_errors(original, tmp_path, monkeypatch, hub_api, capsys):
    d = copy_adapter(original, tmp_path)
    # dry run: validates and reports, uploads nothing (works offline)
    assert cli_main(["push", str(d), "usam-test/breast", "--dry-run"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["files"]) == ALL_FILES and report["card_generated"] is False
    assert report["commit_message"] == "Upload usam adapter demo (" + ", ".join(TASK_IDS) + ")"
    assert hub_api.calls == []
    # offline: a clear HubError before any call
    with pytest.raises(HubError, match="offline mode is on"):
        push_adapter(d, "usam-test/breast")
    assert cli_main(["push", str(d), "usam-test/breast"]) == 9
    assert hub_api.calls == []
    # bad repo id / bad --metrics file
    assert cli_main(["push", str(d), "not a repo"]) == 9
    assert "is not a Hub model id" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="not `usam evaluate` results"):
        from usam.apps.cli.hub import _read_evaluation

        _read_evaluation(str(tmp_path / "bad.json"))
    assert hub_api.calls == []


def test_push_maps_hub_failures_to_hub_error(original, tmp_path, monkeypatch, no_network):
    """With the real HfApi and the network refused, push fails with a HubError (no traceback)."""
    d = copy_adapter(original, tmp_path)
    go_online(monkeypatch)
    no_network.allow_requests = True  # the refusing transport records the attempt
    with pytest.raises(HubError, match="cannot push to usam-test/breast: the Hub could not be reached"):
        push_adapter(d, "usam-test/breast")
    assert all("huggingface.co" in r for r in no_network.requests)


# ------------------------------------------------------------------------------------------- pull
def test_pull_downloads_only_adapter_files_and_validates(original, tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_snapshot_download(**kw):
        seen.update(kw)
        dst = Path(kw["local_dir"])
        dst.mkdir(parents=True, exist_ok=True)
        for f in original.dir.iterdir():
            shutil.copy2(f, dst / f.name)
        return str(dst)

    go_online(monkeypatch)
    monkeypatch.setattr(huggingface_hub, "repo_info", lambda repo_id, **kw: seen.update(asked=repo_id))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    out = tmp_path / "pulled"
    assert cli_main(["pull", REPO, "--revision", "v1", "--local-dir", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert seen["repo_id"] == REPO and seen["revision"] == "v1" and seen["repo_type"] == "model"
    assert list(seen["allow_patterns"]) == list(ADAPTER_FILES)
    assert seen["library_name"] == "usam" and seen["asked"] == REPO  # the Hub was asked before the local_dir was used
    model = UsamModel(tiny_backbone())
    model.load_adapter(str(out))
    assert_same_state(model, "demo", original)

    # a repo that is not a usam adapter is refused after download
    def not_usam(**kw):
        dst = Path(kw["local_dir"])
        dst.mkdir(parents=True, exist_ok=True)
        (dst / "config.json").write_text(json.dumps({"model_type": "bert"}))
        return str(dst)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", not_usam)
    with pytest.raises(AdapterError, match=r"downloaded usam-test/other.*not a valid usam adapter"):
        pull_adapter("usam-test/other", local_dir=tmp_path / "other")


def test_pull_offline_and_network_down(original, no_network, monkeypatch):
    with pytest.raises(HubError, match=r"cannot pull usam-test/multi: offline mode is on \(HF_HUB_OFFLINE=1\)"):
        pull_adapter(REPO)
    put_in_hf_cache(no_network.cache, REPO, original.dir)
    with pytest.raises(HubError, match="already in the local cache"):
        pull_adapter(REPO)
    # online, but the Hub is unreachable: the real snapshot_download's error becomes a HubError
    go_online(monkeypatch)
    no_network.allow_requests = True
    with pytest.raises(HubError, match=r"cannot pull usam-test/missing: the Hub could not be reached"):
        pull_adapter("usam-test/missing")
    assert no_network.requests


def test_pull_into_a_local_dir_needs_the_hub(original, no_network, monkeypatch, tmp_path):
    """Offline, ``snapshot_download(local_dir=...)`` returns whatever the folder holds: an adapter already there
    must not be passed off as ``repo_id``'s. The Hub is asked first; unreachable, it is a HubError, folder untouched."""
    dest = tmp_path / "fh"
    shutil.copytree(original.dir, dest)
    before = {f.name: f.read_bytes() for f in dest.iterdir() if f.is_file()}
    go_online(monkeypatch)
    no_network.allow_requests = True
    with pytest.raises(HubError, match=r"cannot pull someorg/other-model: the Hub could not be reached"):
        pull_adapter("someorg/other-model", local_dir=dest)
    assert no_network.requests
    assert {f.name: f.read_bytes() for f in dest.iterdir() if f.is_file()} == before


def test_card_for_litemedsam_backbone():
    config = AdapterConfig(
        name="breast", backbone="litemedsam", backbone_checksum="f" * 64,
        tasks={"breast_lesion": TaskSpec("breast_lesion", "segmentation", 2, ["background", "breast_lesion"]),
               "organ_cls": TaskSpec("organ_cls", "classification", 6)},
    )
    meta, body = parse_card(adapter_card(config, {"val": {"breast_lesion": {"dice_auto": float("inf")}}}))
    assert meta["base_model"] == "litemedsam" and meta["library_name"] == "usam"
    assert meta["datasets"] == ["BUSI"] and "model-index" not in meta  # inf is not a reportable value
    assert "Nature Communications 15:654" in body and "user data for `organ_cls`" in body
    assert 'adapters=["ORG/NAME"]' in body
    cfg2 = AdapterConfig(name="x", backbone="sam_vit_h", backbone_checksum="a" * 64,
                         tasks={"t": TaskSpec("t", "classification", 2)})
    meta2, _ = parse_card(adapter_card(cfg2))
    assert meta2["base_model"] == "facebook/sam-vit-huge" and meta2["pipeline_tag"] == "image-classification"


def test_card_shows_the_encoder_lora_ablation():
    """``training.encoder_lora_ablation`` (scripts/ablate_encoder_lora.py) becomes a table of every arm, a dash
    where an arm lacks a figure."""
    arms = {"shipped": {"lora": False, "figures": {"fetal_head": {"no-prompt Dice": 0.95, "Dice 1 click": 0.96}}},
            "tail": {"lora": True, "figures": {"fetal_head": {"no-prompt Dice": 0.9612}}}}
    config = AdapterConfig(
        name="fh", backbone="litemedsam", backbone_checksum="f" * 64,
        tasks={"fetal_head": TaskSpec("fetal_head", "segmentation", 2)},
        training={"encoder_lora_ablation": {"split": "val", "clicks": 10, "arms": arms, "conclusion": "Tail chosen."}},
    )
    _, body = parse_card(adapter_card(config))
    assert "## Encoder LoRA: ablation on the val split" in body
    assert "encoder LoRA: shipped: no, tail: yes" in body
    assert "| fetal_head | no-prompt Dice | 0.9500 | 0.9612 |" in body
    assert "| fetal_head | Dice 1 click | 0.9600 | - |" in body and "Tail chosen." in body
    _, plain = parse_card(adapter_card(AdapterConfig(name="fh", backbone="litemedsam", backbone_checksum="f" * 64,
                                                     tasks=config.tasks)))
    assert "ablation" not in plain


def test_card_states_how_the_run_went():
    """``training.note`` (hardware, data copies: what the config alone does not say) is printed under the training
    line of the card; without one the card says nothing more."""
    tasks = {"breast_lesion": TaskSpec("breast_lesion", "segmentation", 2)}
    training = {"mode": "lora", "config": "configs/breast_lora_gpu.yaml", "init": "adapters/breast",
                "note": "Trained on one NVIDIA H200."}
    _, body = parse_card(adapter_card(AdapterConfig(name="b", backbone="litemedsam", backbone_checksum="f" * 64,
                                                    tasks=tasks, training=training)))
    assert ("Trained with `usam train breast_lora_gpu.yaml` (mode `lora`), starting from the adapter in "
            "`adapters/breast`.\n\nTrained on one NVIDIA H200.") in body
    del training["note"]
    _, plain = parse_card(adapter_card(AdapterConfig(name="b", backbone="litemedsam", backbone_checksum="f" * 64,
                                                     tasks=tasks, training=training)))
    assert "H200" not in plain
