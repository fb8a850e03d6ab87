"""Image decoding and mode conversion, folder checks, digits split, transform presets, mixing."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mobilevision.data import (CheckedImageFolder, DigitsSource, EvalView, TrainView, build_mixing, eval_transform,
                               open_datasets, to_rgb, train_transform)
from mobilevision.data.datasets import check_image, load_image

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_mode_conversions(tmp_path):
    # 16-bit grayscale: 65535 -> 255, 32896 -> 128 (scaled, not clipped)
    arr16 = np.array([[0, 32896], [65535, 65535]], dtype=np.uint16)
    Image.fromarray(arr16).save(tmp_path / "g16.png")
    im16 = Image.open(tmp_path / "g16.png")
    assert im16.mode.startswith("I")
    out = np.asarray(load_image(tmp_path / "g16.png"))
    assert out.shape == (2, 2, 3) and out[0, 0, 0] == 0 and out[0, 1, 0] == 128 and out[1, 0, 1] == 255
    # RGBA: transparent pixels composite onto white, opaque ones keep their colour
    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)
    rgba[0, 1] = (10, 20, 30, 0)
    out = np.asarray(to_rgb(Image.fromarray(rgba, "RGBA")))
    assert tuple(out[0, 0]) == (10, 20, 30) and tuple(out[0, 1]) == (255, 255, 255)
    # palette with a transparent index
    p = Image.new("P", (2, 1))
    p.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    p.putpixel((0, 0), 0)
    p.putpixel((1, 0), 1)
    p.info["transparency"] = 0
    out = np.asarray(to_rgb(p))
    assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[0, 1]) == (200, 100, 50)
    # grayscale, 1-bit, CMYK, LA
    assert np.asarray(to_rgb(Image.new("L", (3, 3), 77)))[1, 1].tolist() == [77, 77, 77]
    assert np.asarray(to_rgb(Image.new("1", (3, 3), 1)))[0, 0].tolist() == [255, 255, 255]
    assert to_rgb(Image.new("CMYK", (3, 3), (0, 255, 255, 0))).getpixel((0, 0)) == (255, 0, 0)
    assert to_rgb(Image.new("LA", (1, 1), (0, 0))).getpixel((0, 0)) == (255, 255, 255)


def _folder(root, classes=("cat", "dog"), n=3, size=12):
    for cls in classes:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (size, size), (i * 40, 90, 200)).save(root / cls / f"{i}.png")


def test_bad_files_are_skipped_with_warnings(tmp_path):
    _folder(tmp_path)
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "cat" / "ok.jpg", quality=95)
    data = (tmp_path / "cat" / "ok.jpg").read_bytes()
    (tmp_path / "cat" / "trunc.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "dog" / "zero.jpg").write_bytes(b"")
    (tmp_path / "dog" / "text.jpg").write_text("hello")
    (tmp_path / "dog" / "README.txt").write_text("not an image extension: ignored, not counted")
    assert check_image(str(tmp_path / "cat" / "ok.jpg")) is None
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        ds = CheckedImageFolder(tmp_path)
    assert len(ds.skipped) == 3 and len(ds) == 7
    assert {p.split("/")[-1] for p, _ in ds.skipped} == {"trunc.jpg", "zero.jpg", "text.jpg"}
    img, label = ds.load(0)
    assert img.mode == "RGB" and label == 0 and ds.classes == ["cat", "dog"]


def test_directory_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not 'digits'"):
        open_datasets(str(tmp_path / "absent"))
    (tmp_path / "d" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="val/"):
        open_datasets(str(tmp_path / "d"))
    (tmp_path / "d" / "val").mkdir()
    with pytest.raises(ValueError, match="no class sub-directories"):
        open_datasets(str(tmp_path / "d"))
    _folder(tmp_path / "d" / "train", ("a", "b"))
    _folder(tmp_path / "d" / "val", ("a", "c"))
    with pytest.raises(ValueError, match=r"only in train: \['b'\], only in val: \['c'\]"):
        open_datasets(str(tmp_path / "d"))
    (tmp_path / "e" / "train" / "a").mkdir(parents=True)
    (tmp_path / "e" / "val" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="no readable image"):
        open_datasets(str(tmp_path / "e"))


def test_digits_split_is_fixed_and_stratified():
    tr, va = DigitsSource("train", 16), DigitsSource("val", 16)
    assert len(tr) == 1437 and len(va) == 360
    counts = np.bincount(va.targets, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # 20% of each class
    img, _ = tr.load(0)
    assert img.size == (16, 16) and img.mode == "RGB"
    again = DigitsSource("val", 16)
    assert again.targets == va.targets and np.array_equal(np.asarray(again.load(5)[0]), np.asarray(va.load(5)[0]))
    with pytest.raises(ValueError, match="split"):
        DigitsSource("test")


def test_train_transform_presets_and_seeding():
    src = DigitsSource("val", 24)
    tf = lambda h, w: train_transform((h, w), MEAN, STD, rand_augment="rand-m9-mstd0.5-inc1", random_erase=0.5)
    view = TrainView(src, tf)
    a, la = view[(20, 28, 3, 1234)]
    b, lb = view[(20, 28, 3, 1234)]
    c, _ = view[(20, 28, 3, 99)]
    assert a.shape == (3, 20, 28) and a.dtype == torch.float32 and la == lb
    assert torch.equal(a, b) and not torch.equal(a, c)  # the sample seed fixes the augmentation
    state = torch.get_rng_state()
    view[(16, 16, 0, 5)]
    assert torch.equal(state, torch.get_rng_state())  # global RNG left untouched
    aa = train_transform((16, 16), MEAN, STD, auto_augment="imagenet")
    assert aa(src.load(0)[0]).shape == (3, 16, 16)
    with pytest.raises(ValueError, match="RandAugment string"):
        train_transform((16, 16), MEAN, STD, rand_augment="m9")
    with pytest.raises(ValueError, match="interpolation"):
        train_transform((16, 16), MEAN, STD, interpolation="lanczos5")


def test_eval_transform_resize_then_center_crop():
    img = Image.fromarray(np.arange(64 * 32 * 3, dtype=np.uint8).reshape(32, 64, 3) % 251)
    tf = eval_transform((16, 16), (0, 0, 0), (1, 1, 1), crop_pct=0.8, interpolation="bilinear")
    out = tf(img)
    assert out.shape == (3, 16, 16)
    # short side 32 -> floor(16 / 0.8) = 20, then the central 16x16
    ref = img.resize((40, 20), Image.BILINEAR)
    ref = np.asarray(ref.crop((12, 2, 28, 18)), dtype=np.float32) / 255
    assert np.abs(out.permute(1, 2, 0).numpy() - ref).max() < 0.05
    view = EvalView(DigitsSource("val", 16), tf)
    assert view[0][0].shape == (3, 16, 16)
    with pytest.raises(ValueError, match="crop_pct"):
        eval_transform((16, 16), MEAN, STD, crop_pct=1.5)


def test_mixing_gives_soft_targets():
    x, y = torch.randn(8, 3, 8, 8), torch.arange(8) % 4
    mix = build_mixing(0.8, 1.0, num_classes=4)
    xm, ym = mix(x, y)
    assert xm.shape == x.shape and ym.shape == (8, 4)
    assert torch.allclose(ym.sum(1), torch.ones(8))
    assert build_mixing(0.0, 0.0, 4) is None
    none = build_mixing(0.2, 0.0, 4, prob=0.0)
    assert none is None
    with pytest.raises(ValueError, match="mixup"):
        build_mixing(-1.0, 0.0, 4)
    loss = torch.nn.CrossEntropyLoss(label_smoothing=0.1)(torch.randn(8, 4), ym)
    assert torch.isfinite(loss)


def test_randaugment_posterize_at_full_magnitude():
    # 'inc1' with magnitude noise can reach level 10 -> keep 0 bits; Pillow >= 11 rejects that, we give black
    tf = train_transform((16, 16), MEAN, STD, rand_augment="rand-m10-n15-inc1")  # all ops at full magnitude
    img = DigitsSource("val", 16).load(0)[0]
    for seed in range(3):
        torch.manual_seed(seed)
        assert tf(img).shape == (3, 16, 16)
    ra = [t for t in tf.transforms if type(t).__name__ == "RandAugment"][0]
    post = [o for o in ra.ops if o.name == "PosterizeIncreasing"][0]
    assert post.aug_fn(img, 0).getextrema() == ((0, 0),) * 3
