"""Registry, create_model and checkpoint loading, on a tiny model registered here."""
from __future__ import annotations

import hashlib
import pickle

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import mobilevision
from mobilevision.models.checkpoint import download_url, read_state_dict
from mobilevision.models.registry import ModelConfig, WeightSource, register_model
from zoo_checks import TwoStageTestClassifier


class TinyNet(TwoStageTestClassifier):
    def __init__(self, num_classes=1000, in_chans=3, drop_rate=0.0, drop_path_rate=0.0, width=8):
        super().__init__(nn.Conv2d(in_chans, width, 3, 2, 1), nn.Conv2d(width, width * 2, 3, 2, 1), width, num_classes)


def _rename_foreign(state, model):
    return {k.replace("foreign_stem.", "stem."): v for k, v in state.items()}


register_model(ModelConfig("test_tinynet", "test", TinyNet, checkpoint_filter=_rename_foreign,
                           weights=WeightSource(note="test model")))


def test_unknown_model_names_closest():
    with pytest.raises(ValueError, match="closest: test_tinynet"):
        mobilevision.create_model("test_tinynett")


def test_list_and_info():
    assert "test_tinynet" in mobilevision.list_models("test_*")
    info = mobilevision.model_info("test_tinynet")
    assert info["input_size"] == (3, 224, 224) and info["family"] == "test"


@pytest.mark.parametrize("fmt", ["safetensors", "pth", "nested_pth", "ddp_pth"])
def test_roundtrip_formats(tmp_path, fmt):
    src = mobilevision.create_model("test_tinynet").eval()
    state = src.state_dict()
    path = tmp_path / ("w.safetensors" if fmt == "safetensors" else "w.pth")
    if fmt == "safetensors":
        save_file(state, str(path))
    elif fmt == "pth":
        torch.save(state, path)
    elif fmt == "nested_pth":
        torch.save({"model": state, "epoch": 3}, path)
    else:
        torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, path)
    dst = mobilevision.create_model("test_tinynet", checkpoint_path=path).eval()
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(src(x), dst(x))


def test_foreign_layout_is_remapped(tmp_path):
    src = mobilevision.create_model("test_tinynet")
    state = {k.replace("stem.", "foreign_stem."): v for k, v in src.state_dict().items()}
    torch.save(state, tmp_path / "f.pth")
    dst = mobilevision.create_model("test_tinynet", checkpoint_path=tmp_path / "f.pth")
    assert torch.equal(dst.stem.weight, src.stem.weight)


def test_shape_mismatch_lists_keys(tmp_path):
    other = TinyNet(width=4)
    save_file(other.state_dict(), str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match=r"shape mismatches, first: stem.weight"):
        mobilevision.create_model("test_tinynet", checkpoint_path=tmp_path / "bad.safetensors")


def test_new_num_classes_keeps_backbone(tmp_path):
    src = mobilevision.create_model("test_tinynet")
    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    with pytest.warns(UserWarning, match="classifier"):
        dst = mobilevision.create_model("test_tinynet", checkpoint_path=tmp_path / "w.safetensors", num_classes=5)
    assert dst.classifier.out_features == 5 and torch.equal(dst.stage.weight, src.stage.weight)


class _Evil:
    def __reduce__(self):
        return (print, ("this ran",))


def test_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": _Evil()}, f)
    with pytest.raises(ValueError, match="refused to load"):
        mobilevision.create_model("test_tinynet", checkpoint_path=path)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        mobilevision.create_model("test_tinynet", checkpoint_path=tmp_path / "nope.pth")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        read_state_dict(tmp_path / "empty.safetensors")


def test_save_pretrained_restores_config(tmp_path):
    src = mobilevision.create_model("test_tinynet", num_classes=4, in_chans=1, width=6).eval()
    mobilevision.save_pretrained(src, tmp_path / "run", labels=list("abcd"))
    dst = mobilevision.create_model("test_tinynet", checkpoint_path=tmp_path / "run").eval()
    x = torch.randn(1, 1, 16, 16)
    assert torch.equal(src(x), dst(x)) and dst.labels == list("abcd")


def test_features_only_and_out_indices():
    fx = mobilevision.create_model("test_tinynet", features_only=True, out_indices=(1,))
    (m,) = fx(torch.randn(1, 3, 32, 32))
    assert m.shape == (1, 16, 8, 8) and fx.reductions() == [4]
    with pytest.raises(ValueError, match="out of range"):
        mobilevision.create_model("test_tinynet", features_only=True, out_indices=(5,))


def test_download_verifies_sha256(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILEVISION_CACHE", str(tmp_path / "cache"))
    payload = tmp_path / "weights.safetensors"
    save_file(mobilevision.create_model("test_tinynet").state_dict(), str(payload))
    digest = hashlib.sha256(payload.read_bytes()).hexdigest()
    got = download_url(payload.as_uri(), digest)
    assert got.read_bytes() == payload.read_bytes() and got.parent == tmp_path / "cache" / "url"
    with pytest.raises(ValueError, match="sha256"):
        download_url(payload.as_uri(), "0" * 64, filename="other.safetensors")
    with pytest.raises(RuntimeError, match="checkpoint_path"):
        download_url((tmp_path / "absent.bin").as_uri(), None)


def test_pretrained_without_source_says_so():
    with pytest.raises(ValueError, match="no pretrained weights"):
        mobilevision.create_model("test_tinynet", pretrained=True)


def test_bare_weights_with_another_head_are_an_error(tmp_path):
    """Issue 12 bug 2: a 10-class file without config.json silently got a fresh 1000-class head."""
    src = mobilevision.create_model("test_tinynet", num_classes=10)
    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match=r"10-class classifier .* num_classes=10 \(CLI: --num-classes 10\)"):
        mobilevision.create_model("test_tinynet", checkpoint_path=tmp_path / "w.safetensors")
    dst = mobilevision.create_model("test_tinynet", checkpoint_path=tmp_path / "w.safetensors", num_classes=10)
    assert torch.equal(dst.classifier.weight, src.classifier.weight)
    with pytest.raises(ValueError, match="10-class classifier"):
        mobilevision.load_checkpoint(mobilevision.create_model("test_tinynet"), tmp_path / "w.safetensors")


def test_onnx_file_is_named_as_such(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07")
    with pytest.raises(ValueError, match="is an ONNX graph"):
        read_state_dict(tmp_path / "m.onnx")


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    """Issue 12 bug 5: files renamed into place from mkstemp were 0600 whatever the umask."""
    import os
    import stat

    old = os.umask(umask)
    try:
        mobilevision.save_pretrained(mobilevision.create_model("test_tinynet"), tmp_path / "run")
        payload = tmp_path / "payload.bin"
        payload.write_bytes(b"weights")
        got = download_url(payload.as_uri(), None, filename=f"mode{umask}.bin")
    finally:
        os.umask(old)
    for p in (tmp_path / "run" / "model.safetensors", tmp_path / "run" / "config.json", got):
        assert stat.S_IMODE(p.stat().st_mode) == mode, p


def test_config_json_stores_the_data_config_once(tmp_path):
    import json

    model = mobilevision.create_model("test_tinynet")
    model.data_config = model.data_config.replace(crop_pct=1.0, input_size=(3, 48, 48))
    mobilevision.save_pretrained(model, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["data_config"] == model.data_config.to_dict() and "default_cfg" not in saved
    assert mobilevision.create_model("test_tinynet", checkpoint_path=tmp_path / "run").data_config == model.data_config
    # a config.json of an older version (default_cfg) still restores its preprocessing
    saved["default_cfg"] = saved.pop("data_config")
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    assert mobilevision.create_model("test_tinynet", checkpoint_path=tmp_path / "run").data_config == model.data_config


def test_offline_hub_fails_fast_in_one_message(monkeypatch, tmp_path):
    """pretrained=True offline spent ~23 s in huggingface_hub's retries before its message."""
    import huggingface_hub

    from mobilevision.models import hub

    calls = []

    def fake_download(repo_id, filename, local_files_only=False, **kw):
        calls.append(local_files_only)
        raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE is set.*checkpoint_path=PATH"):
        hub.download_hf("timm/some_model")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: refused at once
    with pytest.raises(RuntimeError, match="unreachable"):
        hub.download_hf("timm/some_model")
    assert calls == [True, True]  # only the cache was asked; the retrying network path was never entered


def test_rename_prefix_renames_whole_dotted_parts_only():
    from mobilevision.models.checkpoint import rename_prefix

    table = {"norm": "head.norm", "head": "head.fc"}
    assert rename_prefix("norm.weight", table) == "head.norm.weight"
    assert rename_prefix("head.bias", table, into="model.") == "model.head.fc.bias"
    assert rename_prefix("norm", table) == "head.norm"
    assert rename_prefix("normal.weight", table) is None  # "norm" is not a whole part of "normal"
    assert rename_prefix("stem.0.weight", table) is None
