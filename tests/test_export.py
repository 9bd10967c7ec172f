"""``usam export onnx``: encoder (adapter LoRA merged) + prompt decoder in onnxruntime match PyTorch.

The adapter is built in a second (no training): random encoder LoRA (B != 0, so the merge matters), a tuned
decoder with its own LoRA and perturbed prompt embeddings. Both exports run on a real breast image.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def model():
    """A private LiteMedSAM model (fp32): the adapter below mutates it."""
    from usam import UsamModel, build_backbone

    return UsamModel(build_backbone("litemedsam"), precision="fp32")


@pytest.fixture(scope="module")
def tiny_adapter(model, tmp_path_factory):
    """Adapter dir with encoder LoRA + tuned decoder (LoRA too), random non-zero weights; loaded as ``tiny_onnx``."""
    from usam.adapters.adapter import Adapter, attach_adapter
    from usam.adapters.config import DEFAULT_DECODER_TRAIN, AdapterConfig
    from usam.tasks.spec import TaskSpec
    from usam.adapters.lora import LoraSettings, add_lora

    bb = model.backbone
    cfg = AdapterConfig(
        name="tiny_onnx", backbone=bb.name, backbone_checksum=bb.checksum,
        tasks={"breast_lesion": TaskSpec(task_id="breast_lesion", kind="segmentation", num_classes=2)},
        lora=LoraSettings(rank=2, alpha=4.0),
        decoder={"lora": {"rank": 2, "alpha": 4.0}, "train": list(DEFAULT_DECODER_TRAIN), "box_prompts": "tuned"},
        input_size=bb.input_size,
    )
    with torch.random.fork_rng():  # peft draws lora_A from the global RNG: the same weights whatever ran before
        torch.manual_seed(0)
        adapter = Adapter(cfg, bb)
        add_lora(bb.image_encoder, "tiny_onnx", cfg.lora)
    attach_adapter(model, adapter, "tiny_onnx")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in [*bb.image_encoder.named_parameters(), *adapter.decoder.named_parameters()]:
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
        for n, p in adapter.decoder.named_parameters():
            if n.startswith(("prompt_encoder.point_embeddings", "mask_decoder.iou_token")):
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    out = tmp_path_factory.mktemp("onnx_adapter") / "tiny_onnx"
    adapter.save_pretrained(out, encoder=bb.image_encoder)
    model.set_adapter("tiny_onnx")
    model.eval()
    return out


def _sessions(out):
    enc = ort.InferenceSession(str(out / "encoder.onnx"), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(out / "decoder.onnx"), providers=["CPUExecutionProvider"])
    return enc, dec


def _check_files(out, meta):
    from usam.backbones.base import sha256_file as _sha256

    assert meta["format"] == "usam-onnx" and meta["opset"] >= 17
    for f in ("encoder.onnx", "decoder.onnx"):
        assert meta["files"][f] == _sha256(out / f)
        m = onnx.load(str(out / f))
        onnx.checker.check_model(m)
        assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 17
    enc, dec = _sessions(out)
    assert [i.name for i in enc.get_inputs()] == [i["name"] for i in meta["encoder"]["inputs"]]
    assert [i.name for i in dec.get_inputs()] == [i["name"] for i in meta["decoder"]["inputs"]]
    assert [o.name for o in dec.get_outputs()] == [o["name"] for o in meta["decoder"]["outputs"]]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    return enc, dec


def _decoder_parity(model, dec, emb: torch.Tensor, geo, box_orig: np.ndarray) -> None:
    """Box, one click (multimask) and click + previous mask: ORT logits vs ``model.decode``."""
    from usam.export import decoder_inputs

    box = geo.boxes_to_input(box_orig[None]).astype(np.float32)
    click = geo.points_to_input(np.array([[(box_orig[0] + box_orig[2]) / 2, (box_orig[1] + box_orig[3]) / 2]])).astype(np.float32)
    e = emb.numpy()
    with torch.no_grad():
        cases = []
        t, ti = model.decode(emb, boxes=torch.from_numpy(box), multimask_output=False)
        o = dec.run(None, {"image_embeddings": e, **decoder_inputs(None, None, box=box)})
        cases.append(("box", t, ti, o[0][:, :1], o[1][:, :1]))
        t, ti = model.decode(emb, points=(torch.from_numpy(click[None]), torch.ones(1, 1)), multimask_output=True)
        o = dec.run(None, {"image_embeddings": e, **decoder_inputs(click, [1])})
        cases.append(("click", t, ti, o[0][:, 1:], o[1][:, 1:]))
        prev = t[:, int(ti[0].argmax()) : int(ti[0].argmax()) + 1]
        neg = np.array([[box[0, 0] + 2, box[0, 1] + 2]], np.float32)
        pts = np.concatenate([click, neg])
        t, ti = model.decode(emb, points=(torch.from_numpy(pts[None]), torch.tensor([[1, 0]])), mask_input=prev,
                             multimask_output=False)
        o = dec.run(None, {"image_embeddings": e, **decoder_inputs(pts, [1, 0], mask_input=prev.numpy())})
        cases.append(("refine", t, ti, o[0][:, :1], o[1][:, :1]))
    for name, t, ti, ol, oi in cases:
        t = t.numpy()
        assert np.abs(ol - t).max() < 2e-3, (name, float(np.abs(ol - t).max()))
        assert ((ol > 0) == (t > 0)).mean() > 0.995, name
        assert (t > 0).any(), name  # a real mask, not an empty one
        np.testing.assert_allclose(oi, ti.numpy(), atol=1e-3, err_msg=name)


def test_export_adapter_with_lora_matches_pytorch(model, tiny_adapter, real_case, tmp_path):
    from usam.apps.cli import main

    _, image, gt, box_orig = real_case
    out = tmp_path / "onnx"
    assert main(["export", "onnx", "--adapter", str(tiny_adapter), str(out)]) == 0
    meta = json.loads((out / "usam_onnx.json").read_text())
    enc, dec = _check_files(out, meta)
    assert meta["backbone"]["name"] == "litemedsam" and meta["backbone"]["checksum"] == model.backbone.checksum
    a = meta["adapter"]
    assert a["name"] == "tiny_onnx" and a["encoder_lora_merged"] and a["decoder_lora_merged"]
    assert a["encoder_lora"]["rank"] == 2 and "breast_lesion" in a["tasks"]
    assert meta["preprocessing"]["input_size"] == 256
    assert meta["verification"]["embedding_max_abs_diff"] < 1e-3

    # encoder: ORT (merged LoRA) vs PyTorch (peft LoRA active) on a real image
    model.set_adapter("tiny_onnx")
    x, geo = model.backbone.preprocess(image)
    emb = model.embed(image).embedding
    onnx_emb = enc.run(None, {"image": x.numpy()})[0]
    diff = np.abs(onnx_emb - emb.numpy()).max()
    assert diff < 1e-3, diff
    model.set_adapter(None)
    bare = model.embed(image).embedding
    model.set_adapter("tiny_onnx")
    assert np.abs(bare.numpy() - onnx_emb).max() > 20 * max(diff, 1e-4)  # the LoRA really is in the export

    # decoder: the tuned decoder (its LoRA merged), fed the same embedding
    _decoder_parity(model, dec, emb, geo, box_orig)
    with torch.no_grad():  # ... and it is not the backbone's decoder
        b = geo.boxes_to_input(box_orig[None]).astype(np.float32)
        tuned, _ = model.decode(emb, boxes=torch.from_numpy(b), multimask_output=False)
        plain, _ = model.backbone.decode(emb, boxes=torch.from_numpy(b), multimask_output=False)
    assert (tuned - plain).abs().max() > 1e-2

    # end to end: ORT encoder -> ORT decoder vs PyTorch, masks at the original resolution
    from usam.export import decoder_inputs

    box = geo.boxes_to_input(box_orig[None]).astype(np.float32)
    low = dec.run(None, {"image_embeddings": onnx_emb, **decoder_inputs(None, None, box=box)})[0][:, :1]
    with torch.no_grad():
        ref, _ = model.decode(emb, boxes=torch.from_numpy(box), multimask_output=False)
    m_onnx = geo.masks_to_original(torch.from_numpy(low))[0, 0].numpy() > 0
    m_ref = geo.masks_to_original(ref)[0, 0].numpy() > 0
    assert m_ref.any() and (m_onnx == m_ref).mean() > 0.995


def test_export_bare_backbone(model, real_case, tmp_path):
    from usam.apps.cli import main

    _, image, gt, box_orig = real_case
    out = tmp_path / "bare"
    assert main(["export", "onnx", "--adapter", "none", "--no-verify", str(out)]) == 0
    meta = json.loads((out / "usam_onnx.json").read_text())
    enc, dec = _check_files(out, meta)
    assert meta["adapter"] is None and "verification" not in meta
    active = model.active_adapter
    model.set_adapter(None)
    try:
        x, geo = model.backbone.preprocess(image)
        emb = model.embed(image).embedding
        onnx_emb = enc.run(None, {"image": x.numpy()})[0]
        assert np.abs(onnx_emb - emb.numpy()).max() < 1e-3
        _decoder_parity(model, dec, emb, geo, box_orig)
    finally:
        model.set_adapter(active)


def test_export_refuses_bad_requests(model, tmp_path):
    from usam.errors import AdapterError, UsamError
    from usam.export import export_model

    with pytest.raises(AdapterError, match="no adapter named"):
        export_model(model, tmp_path / "x", adapter="nope")
    with pytest.raises(UsamError, match="opset"):
        export_model(model, tmp_path / "x", opset=13)


@pytest.mark.parametrize("case, code, says", [
    ("a folder of the user's", 2, "holds files usam export did not write (notes.txt)"),
    ("an adapter folder", 2, "holds files usam export did not write (README.md, config.json"),
    ("under a file", 2, "is a file, not a folder"),
    ("unwritable place", 2, "cannot be written: folder '/proc' is not writable"),
    ("old opset", 6, "opset must be >= 17"),
])
def test_export_checks_the_output_before_any_model(tmp_path, monkeypatch, capsys, case, code, says):
    """``usam export onnx DIR`` had written into any folder (an adapter's own, overwriting a user's encoder.onnx) and
    died with a traceback under a file or in /proc."""
    import shutil

    import usam.export
    from usam.apps.cli import main

    monkeypatch.setattr(usam.export, "_cpu_model", lambda *a, **k: pytest.fail("a model was built"))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    (mine / "encoder.onnx").write_text("my own model")
    adapter = tmp_path / "fetal_head"
    shutil.copytree(Path(__file__).resolve().parents[1] / "adapters" / "fetal_head", adapter)
    (tmp_path / "afile").write_text("keep")
    out = {"a folder of the user's": mine, "an adapter folder": adapter, "under a file": tmp_path / "afile" / "x",
           "unwritable place": "/proc/usam_export", "old opset": tmp_path / "new"}[case]
    before = {str(f): f.read_bytes() for f in tmp_path.rglob("*") if f.is_file()}
    extra = ["--opset", "13"] if case == "old opset" else []
    assert main(["export", "onnx", "--adapter", "none", "--no-verify", *extra, str(out)]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0], err
    assert {str(f): f.read_bytes() for f in tmp_path.rglob("*") if f.is_file()} == before
    assert not (tmp_path / "new").exists()


def test_preprocessing_spec_records_the_normalisation_of_every_backbone_kind(tiny_vit, hf_backbone):
    """HF backbones keep their mean / std under the same names as segment-anything ones (it was lost before)."""
    from usam.export import preprocessing_spec

    for backbone in (tiny_vit, hf_backbone):
        spec = preprocessing_spec(backbone)
        assert "mean []" not in spec["normalize"] and "std []" not in spec["normalize"], spec["normalize"]
        assert str(list(backbone.pixel_mean)) in spec["normalize"]
