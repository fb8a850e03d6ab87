"""Checks shared by the per-family model tests: published figures, timm parity, the classifier protocol; the
small models other tests register."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import mobilevision
from mobilevision.deploy.profiling import count_on_meta
from mobilevision.models.features import Classifier
from mobilevision.models.registry import get_config, published_figures


def assert_matches_published(name: str) -> None:
    """Params and MACs (meta device, batch 1, default size) within published.csv's tolerances."""
    row = published_figures()[name]
    cfg = get_config(name)
    assert cfg.input_size[-1] == row["input_size"], f"{name}: default size {cfg.input_size} vs {row['input_size']}"
    params, macs = count_on_meta(lambda: mobilevision.create_model(name), cfg.input_size)
    p_err = abs(params / 1e6 - row["params_m"]) / row["params_m"] * 100
    m_err = abs(macs / 1e9 - row["gmacs"]) / row["gmacs"] * 100
    assert p_err <= row["params_tol_pct"], f"{name}: {params / 1e6:.4f}M params vs {row['params_m']}M ({p_err:.3f}%)"
    assert m_err <= row["gmacs_tol_pct"], f"{name}: {macs / 1e9:.5f} GMACs vs {row['gmacs']} ({m_err:.3f}%)"


def assert_timm_parity(name: str, tmp_path: Path, size: int | tuple[int, int] | None = None,
                       timm_name: str | None = None, formats: tuple[str, ...] = ("safetensors", "pth"),
                       atol: float = 1e-4, compare: str = "logits") -> None:
    """A random-init timm model saved to a file loads through create_model and gives the same outputs."""
    import timm
    from safetensors.torch import save_file

    timm_model = timm.create_model(timm_name or name, pretrained=False).eval()
    # Randomise BN statistics so that a mis-mapped running mean/var cannot hide.
    with torch.no_grad():
        for m in timm_model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    state = {k: v.contiguous() for k, v in timm_model.state_dict().items()}
    if size is None:
        size = get_config(name).input_size[-1]
    h, w = (size, size) if isinstance(size, int) else size
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = timm_model(x) if compare == "logits" else timm_model.forward_features(x)
    for fmt in formats:
        path = tmp_path / f"{name}.{fmt}"
        if fmt == "safetensors":
            save_file(state, str(path))
        else:
            torch.save({"state_dict": state}, path)
        model = mobilevision.create_model(name, checkpoint_path=path).eval()
        with torch.no_grad():
            out = model(x) if compare == "logits" else model.forward_features(x)
        diff = (out - ref).abs().max().item()
        assert out.shape == ref.shape, f"{name}: shape {tuple(out.shape)} vs timm {tuple(ref.shape)}"
        assert diff <= atol, f"{name} ({fmt}): max abs diff {diff:.2e} vs timm"


def assert_classifier_protocol(name: str, size: int = 64, reductions: list[int] | None = None) -> None:
    """Forward/backward at a small size, non-square forward, features_only, num_classes=0, reset_classifier."""
    model = mobilevision.create_model(name, num_classes=7)
    x = torch.randn(2, 3, size, size)
    out = model(x)
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad), f"{name}: unused parameters"
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size + 32)).shape == (1, 7)
    pooled = mobilevision.create_model(name, num_classes=0).eval()
    with torch.no_grad():
        feats = pooled(x[:1])
    assert feats.shape == (1, pooled.num_features)
    pooled.reset_classifier(5)
    with torch.no_grad():
        assert pooled(x[:1]).shape == (1, 5)
    fx = mobilevision.create_model(name, features_only=True).eval()
    with torch.no_grad():
        maps = fx(x[:1])
    assert len(maps) == len(fx.feature_info)
    for m, info in zip(maps, fx.feature_info):
        assert m.shape[1] == info["num_chs"], f"{name}: {info}"
        assert size // m.shape[-1] == info["reduction"], f"{name}: map {tuple(m.shape)} vs {info}"
    if reductions is not None:
        assert fx.reductions() == reductions



def assert_trains_and_runs_at_other_sizes(name: str, train_size: int = 224, sizes: tuple[int, ...] = (160, 320)
                                          ) -> None:
    """A training step at `train_size` (batch 2) reaches every parameter; eval at `sizes` gives finite logits."""
    model = mobilevision.create_model(name, num_classes=10)
    model(torch.randn(2, 3, train_size, train_size)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        for size in sizes:
            out = model(torch.randn(1, 3, size, size))
            assert out.shape == (1, 10) and torch.isfinite(out).all()


class PooledTestClassifier(Classifier):
    """Base of the small models the tests register: last stage map -> global average pool -> `classifier`.

    Subclasses build `classifier` (nn.Linear, or nn.Identity for num_classes == 0), set `num_features`
    and implement `forward_stages`; `pool_and_drop` may add dropout after the pool.
    """

    def pool_and_drop(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))  # (B, C)

    def forward_features(self, x):
        return self.forward_stages(x)[-1]

    def forward_head(self, x, pre_logits=False):
        x = self.pool_and_drop(x)
        return x if pre_logits else self.classifier(x)

    def get_classifier(self):
        return self.classifier

    def reset_classifier(self, num_classes):
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()


class TwoStageTestClassifier(PooledTestClassifier):
    """`stem` (`width` channels at reduction 2) -> `stage` (2 x `width` at reduction 4) -> pool -> `classifier`."""

    def __init__(self, stem: nn.Module, stage: nn.Module, width: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes, self.num_features = num_classes, width * 2
        self.stem, self.stage = stem, stage
        self.classifier = nn.Linear(width * 2, num_classes) if num_classes else nn.Identity()
        self.feature_info = [dict(num_chs=width, reduction=2, module="stem"),
                             dict(num_chs=width * 2, reduction=4, module="stage")]

    def forward_stages(self, x):
        a = self.stem(x)
        return [a, self.stage(a)]
