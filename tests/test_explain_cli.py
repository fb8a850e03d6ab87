"""`mobilevision explain attention|collapse|activations`: outputs from saved checkpoints (their config's
preprocessing), and a one-line error with exit code 2 for a model without the structure or bad input."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

import mobilevision
from mobilevision.cli import main
from mobilevision.deploy.inference import sample_photos

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(depths=(1, 1, 2, 1), dims=(8, 16, 24, 32))


def _one_line_error(capsys, argv, match):
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "error" in line]
    assert len(err) == 1 and match in err[0], err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two photos in a folder, a Mobile-Former and two tiny ConvNeXt V2 encoders (with and without GRN) saved with
    their configs: the Mobile-Former's says 64 px, the encoders' an FCMAE pre-training at 64 px."""
    d = tmp_path_factory.mktemp("explain")
    (d / "photos").mkdir()
    for name, img in sample_photos(("chelsea", "coffee")).items():
        img.save(d / "photos" / f"{name}.jpg")
    mf = mobilevision.create_model("mobileformer_26m", num_classes=10).eval()
    mf.data_config = mf.data_config.replace(input_size=(3, 64, 64))
    mobilevision.save_pretrained(mf, d / "mf")
    for grn in (True, False):
        enc = mobilevision.create_model("convnextv2_atto", num_classes=0, use_grn=grn, **TINY)
        with torch.no_grad():
            for n, p in enc.named_parameters():
                if ".grn." in n:
                    p.normal_()
        mobilevision.save_pretrained(enc, d / f"grn{int(grn)}", extra={"pretrain": {"method": "fcmae",
                                                                                    "input_size": 64}})
    (d / "model.onnx").write_bytes(b"not a graph")
    return d


def test_attention_png_and_npz_at_the_checkpoints_size(files, tmp_path, capsys):
    out = tmp_path / "att.png"
    assert main(["explain", "attention", "mobileformer_26m", str(files / "photos" / "chelsea.jpg"),
                 "--checkpoint", str(files / "mf"), "--output", str(out)]) == 0
    assert "Mobile<-Former" in capsys.readouterr().out and out.is_file()
    arrays = np.load(out.with_suffix(".npz"))
    assert arrays["image"].shape == (64, 64, 3)  # the checkpoint's 64 px, not the registry's 224
    assert arrays["m2f_blocks_1"].shape == (2, 3, 16, 16) and arrays["f2m_blocks_1"].shape == (2, 16, 16, 3)
    assert "m2f_last_mobile_to_former" in arrays and "f2m_last_mobile_to_former" not in arrays
    np.testing.assert_allclose(arrays["m2f_blocks_8"].sum((-2, -1)), 1.0, atol=1e-5)
    np.testing.assert_allclose(arrays["f2m_blocks_8"].sum(-1), 1.0, atol=1e-5)


def test_collapse_two_checkpoints_one_figure_and_csv(files, tmp_path, capsys):
    out = tmp_path / "collapse.png"
    assert main(["explain", "collapse", "convnextv2_atto", "--checkpoint", str(files / "grn1"), "--checkpoint",
                 str(files / "grn0"), "--label", "GRN", "--label", "no GRN", "--data", str(files / "photos"),
                 "--features", "mlp", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "GRN: mean" in printed and "no GRN: mean" in printed and "(2 images, 64 px)" in printed
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert [r["label"] for r in rows] == ["GRN"] * 5 + ["no GRN"] * 5
    assert {r["input_size"] for r in rows} == {"64"} and {r["features"] for r in rows} == {"mlp"}
    values = np.array([float(r["cosine_distance_mean"]) for r in rows])
    assert np.all((values > 0) & (values < 1))
    assert not np.allclose(values[:5], values[5:])  # two different encoders
    assert out.is_file()


def test_collapse_digits_random_weights(tmp_path, capsys):
    out = tmp_path / "c.png"
    assert main(["explain", "collapse", "convnextv2_atto", "--data", "digits", "--num-images", "3", "--size", "32",
                 "--output", str(out)]) == 0
    captured = capsys.readouterr()
    assert "random weights" in captured.err and "(3 images, 32 px)" in captured.out
    assert len(list(csv.DictReader(out.with_suffix(".csv").open()))) == 12  # convnextv2_atto: 2+2+6+2 blocks


def test_activations_rows_per_image(files, tmp_path, capsys):
    out = tmp_path / "act.png"
    assert main(["explain", "activations", "--model", "mobileformer_26m", str(files / "photos"),
                 "--checkpoint", str(files / "mf"), "--output", str(out)]) == 0
    assert "5 stages x 2 image(s)" in capsys.readouterr().out and out.is_file()


@pytest.mark.parametrize("argv, match", [
    (["explain"], "give what to explain"),
    (["explain", "attention", "mobilenetv3_small_100", "{photo}"], "no Mobile-Former blocks"),
    (["explain", "attention", "mobileformer_26m"], "give an image"),
    (["explain", "attention", "mobileformer_26m", "{photo}", "{photo}"], "draws one image"),
    (["explain", "attention", "mobileformer_26m", "{photo}", "--checkpoint", "{dir}/model.onnx"], "ONNX graph"),
    (["explain", "activations", "mobileformer_26m", "{dir}/absent.jpg"], "image not found"),
    (["explain", "collapse", "mobileformer_26m", "--data", "digits", "--features", "mlp"], "ConvNeXt"),
    (["explain", "collapse", "convnextv2_atto", "--data", "digits", "--checkpoint", "{dir}/grn1", "--label", "a",
      "--label", "b"], "one per checkpoint"),
    (["explain", "collapse", "convnextv2_atto", "--data", "{dir}/nowhere"], "not 'digits'"),
    (["explain", "collapse", "convnextv2_atto", "--data", "digits", "--output", "{dir}/c.pdf"], ".png"),
    (["explain", "activations", "ssdlite320_mobilenetv3_large_100", "{photo}"], "backbone"),
])
def test_bad_input_is_one_line_exit_2(files, capsys, argv, match):
    photo = str(files / "photos" / "chelsea.jpg")
    _one_line_error(capsys, [a.format(photo=photo, dir=files) for a in argv], match)


@pytest.mark.parametrize("argv, want", [
    (["attention", "mobileformer_26m", "a.jpg", "--size", "64"], ("mobileformer_26m", ["a.jpg"], (64, 64))),
    (["attention", "a.jpg", "--model", "mobileformer_26m", "--input-size", "64,64"],
     ("mobileformer_26m", ["a.jpg"], (64, 64))),
    (["attention", "mobileformer_26m", "--checkpoint", "ck", "a.jpg"], ("mobileformer_26m", ["a.jpg"], None)),
    (["activations", "convnextv2_atto", "a.jpg", "b.jpg", "--out", "x.png"], ("convnextv2_atto", ["a.jpg", "b.jpg"],
                                                                             None)),
    (["collapse", "--model", "convnextv2_atto", "--data", "digits", "--size", "32", "32"], ("convnextv2_atto", None,
                                                                                       (32, 32))),
    (["collapse", "convnextv2_atto", "--data", "digits", "--batch", "4"], ("convnextv2_atto", None, None)),
])
def test_the_shared_dialect(argv, want):
    from mobilevision.cli import parse_args

    args = parse_args(["explain", *argv])
    assert (args.model, getattr(args, "images", None), args.input_size) == want
