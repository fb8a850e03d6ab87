"""ClassifyTask and the public evaluate_classifier."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mobilevision.tasks import TASKS, create_task, task_class
from mobilevision.tasks.classify import ClassifyTask, evaluate_classifier


def test_evaluate_classifier_takes_any_callable():
    logits = torch.tensor([[5.0, 1, 0, 0, 0, 0], [0, 5.0, 4, 0, 0, 0], [0, 0, 0, 0, 0, 5.0], [1, 2, 3, 4, 5, 6.0]])
    labels = torch.tensor([0, 2, 5, 0])
    loader = [(torch.arange(2), labels[:2]), (torch.arange(2, 4), labels[2:])]
    as_numpy = lambda idx: logits[idx].numpy()  # e.g. an onnxruntime session wrapper
    m = evaluate_classifier(as_numpy, loader, "cpu")
    assert m["top1"] == pytest.approx(50.0) and m["top5"] == pytest.approx(75.0)  # label 0 is 6th of row 4
    ref = float(torch.nn.functional.cross_entropy(logits, labels))
    assert m["loss"] == pytest.approx(ref, rel=1e-6)
    model = torch.nn.Linear(6, 6)
    x = torch.randn(4, 6)
    out = evaluate_classifier(model, [(x, labels)])
    assert not model.training and 0 <= out["top1"] <= 100


def test_task_registry_and_options():
    assert task_class("classify") is ClassifyTask and {"classify", "fcmae"} <= set(TASKS)
    task = create_task("fcmae", "convnextv2_atto", {"mask_ratio": 0.75})
    assert task.options.mask_ratio == 0.75 and task.options.decoder_dim == 512 and task.metric == ""
    with pytest.raises(ValueError, match="unknown task 'detekt'"):
        task_class("detekt")
    with pytest.raises(ValueError, match="takes no task_options"):
        ClassifyTask("mobilenetv3_small_100", {"x": 1})


def test_classify_data_and_step_on_digits():
    from mobilevision.train import apply_overrides, load_recipe

    recipe = apply_overrides(load_recipe("digits"), ["input_size=16", "mixup=0.2"])
    task = ClassifyTask("mobilenetv3_small_100")
    data = task.build_data("digits", recipe)
    assert data.sizes == [16] and data.info["classes"] == 10 and len(data.train) == 1437 and len(data.val) == 360
    x, y = data.train[(16, 16, 3, 7)]
    assert x.shape == (3, 16, 16) and isinstance(y, int)
    model = task.build_model(recipe, data)
    assert model.data_config.crop_pct == 1.0 and model.data_config.size == (16, 16)
    batch = (torch.stack([data.train[(16, 16, i, i)][0] for i in range(4)]), torch.tensor([0, 1, 2, 3]))
    loss = task.train_step(model.train(), batch, torch.device("cpu"))["loss"]
    assert loss.ndim == 0 and np.isfinite(float(loss))
