"""``mode: cache`` with ``train.views``: augmented views of each training image, their embeddings cached once.

Real LiteMedSAM (fp32) on 2 breast rows: view 0 is the plain embedding, an augmented view's embedding is the encoder's
output on the augmented image and its labels move with it, validation only ever sees view 0, and a tiny training
run builds exactly ``views`` entries per training image (1 per validation image) and trains.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def model():
    from usam import UsamModel

    return UsamModel.from_pretrained(precision="fp32", runtime="torch")


def _rows(data_root):
    from usam.data.fmc import read_split

    return read_split(data_root / "train", tasks=["breast_lesion"])["breast_lesion"][:2]


def _augmented_view(source, sample, views: int) -> int:
    """The first view index of ``sample`` whose draw moves the image (a view may draw the identity)."""
    from usam.data.augment import AugmentParams

    digest, hw = source.meta(sample.image_path)
    for k in range(1, views):
        p = source.view_params(sample.image_path, digest, hw, k)
        if not p.is_geometric_identity and p != AugmentParams.identity():
            return k
    pytest.skip("no geometric view drawn")


def test_views_are_the_encoder_on_the_augmented_image(cache_dir, model, data_root):
    from usam.data.augment import apply_augment
    from usam.io import read_image, read_mask
    from usam.tasks.segmentation import class_map_to_lowres
    from usam.train.cache import EmbeddingStore
    from usam.train.examples import ExampleSource

    source = ExampleSource(model, "cache", EmbeddingStore(model), augment=True, seed=3, views=6)
    sample = _rows(data_root)[0]
    plain = source.cached(sample, 0)
    k = _augmented_view(source, sample, 6)
    view = source.cached(sample, k)
    image, mask = read_image(sample.image_path), read_mask(sample.mask_path)
    params = source.view_params(sample.image_path, source.meta(sample.image_path)[0], image.shape[:2], k)
    aug_image, aug_mask, _, _ = apply_augment(image, mask=mask, params=params)
    with torch.no_grad():
        expected = model.embed(aug_image).embedding[0]
    torch.testing.assert_close(view.embedding.float(), expected.half().float(), rtol=0, atol=2e-3)
    assert (view.embedding.float() - plain.embedding.float()).abs().max() > 0.05  # not the plain embedding
    assert np.array_equal(view.target.class_map, class_map_to_lowres(aug_mask, view.geometry))  # labels moved alike
    assert not np.array_equal(view.target.class_map, plain.target.class_map)
    # read again: the same entry from disk, the labels memoised
    again = source.cached(sample, k)
    assert torch.equal(again.embedding, view.embedding) and again.target is view.target


def test_validation_uses_view_0_and_training_draws_views(cache_dir, model, data_root):
    from usam.train.cache import EmbeddingStore
    from usam.train.examples import ExampleSource

    source = ExampleSource(model, "cache", EmbeddingStore(model), augment=True, seed=3, views=3)
    rows = _rows(data_root)
    val, _ = source.batch(rows, train=False)
    assert all(ex is source.cached(r, 0) for ex, r in zip(val, rows))
    drawn = set()
    for _ in range(12):
        exs, inputs = source.batch(rows[:1], train=True)
        assert inputs is None
        drawn.add(next(k for k in range(3) if torch.equal(exs[0].embedding, source.cached(rows[0], k).embedding)))
    assert drawn == {0, 1, 2}
    off = ExampleSource(model, "cache", EmbeddingStore(model), augment=False, seed=3, views=3)
    assert off.views == 1  # augment off: no views


def test_cache_mode_run_caches_views_of_training_images(model, data_root, tmp_path, monkeypatch):
    from usam.train.config import load_config
    from usam.train.trainer import train

    cache = tmp_path / "cache"
    monkeypatch.setenv("USAM_CACHE", str(cache))
    cfg = {"name": "views_tiny", "data": {"root": str(data_root), "tasks": ["breast_lesion"], "limit": 2},
           "mode": "cache", "precision": "fp32",
           "train": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "lr": 3e-3, "seed": 0, "views": 3,
                     "click_iters": 1},
           "output": str(tmp_path / "views_tiny")}
    assert load_config(cfg).train["views"] == 3
    out = train(cfg, model=model, log=lambda *_: None)
    entries = [p.name.split(".") for p in cache.rglob("*.safetensors")]
    per_image = sorted(sum(e[0] == d for e in entries) for d in {e[0] for e in entries})
    assert per_image == [1, 1, 3, 3], per_image  # 2 validation images: view 0; 2 training images: views 0, 1, 2
    assert json.loads((out / "metrics.json").read_text())["history"]
    unset = load_config({k: v for k, v in cfg.items() if k != "train"})
    assert unset.train["views"] is None  # 1 in cache mode, 4 in tail mode


def test_augment_scale_sets_the_views_zoom_and_the_default_keeps_the_views(model, data_root):
    """``train.augment_scale`` is the views' zoom range; the default draws exactly the views it drew before the
    setting existed (Augment's own default range), so cached views stay valid."""
    from usam.data.augment import Augment, AugmentParams
    from usam.train.examples import ExampleSource

    sample = _rows(data_root)[0]
    default = ExampleSource(model, "cache", None, augment=True, seed=3, views=40)
    wide = ExampleSource(model, "cache", None, augment=True, seed=3, views=40, scale=(1.5, 2.0))
    digest, hw = default.meta(sample.image_path)
    zooms_default, zooms_wide = [], []
    for k in range(1, 40):
        p, q = default.view_params(sample.image_path, digest, hw, k), wide.view_params(sample.image_path, digest, hw, k)
        rng = np.random.default_rng([3, k, int(digest[:15], 16)])
        before = Augment(p=0.5, flip=True, rng=rng).sample(*hw)
        while before == AugmentParams.identity():
            before = Augment(p=0.5, flip=True, rng=rng).sample(*hw)
        assert p == before  # the default: the same draw as Augment's default range
        assert (p.angle, p.flip) == (q.angle, q.flip)  # one draw sequence, only the zoom differs
        if p.scale != 1.0:
            zooms_default.append(p.scale), zooms_wide.append(q.scale)
    assert zooms_default and all(0.9 <= z <= 1.1 for z in zooms_default)
    assert all(1.5 <= z <= 2.0 for z in zooms_wide)


@pytest.mark.parametrize("bad", ["[1.2, 0.9]", "[0, 1]", "0.9", "[0.9]", "[true, 1]", "[0.9, .inf]"])
def test_augment_scale_is_checked(bad, tmp_path):
    from usam.errors import ConfigError
    from usam.train.config import load_config

    base = {"name": "organ", "output": str(tmp_path / "out"), "data": {"root": str(tmp_path)}}
    assert load_config(base).train.augment_scale == (0.9, 1.1)
    assert load_config(base, ["train.augment_scale=[0.75, 1.33]"]).train.augment_scale == (0.75, 1.33)
    with pytest.raises(ConfigError, match=r"train.augment_scale must be \[min, max\] zoom factors"):
        load_config(base, [f"train.augment_scale={bad}"])
