"""init_backbone: a classifier checkpoint of a task model's backbone loads into it (detector and segmenter)."""
import pytest
import torch

import mobilevision as mv
from mobilevision.tasks.base import backbone_classifier, init_backbone


def _saved(name, tmp_path, num_classes=10):
    """A model with its weights moved off their init, saved with save_pretrained: (model, its folder)."""
    model = mv.create_model(name, num_classes=num_classes)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    mv.save_pretrained(model, tmp_path / name)
    return model, tmp_path / name


def _assert_backbone_took(ref_state, body_state, line):
    shared = [k for k in body_state if k in ref_state]
    assert len(shared) > 100 and f"{len(shared)} of {len(body_state)}" in line
    for k in shared:
        assert torch.equal(body_state[k], ref_state[k]), k


@pytest.mark.parametrize("task_model", ["ssdlite_mobilevit_xxs", "deeplabv3_mobilevit_xxs"])
def test_backbone_takes_the_classifier_weights(task_model, tmp_path):
    clf, path = _saved("mobilevit_xxs", tmp_path)
    model = mv.create_model(task_model, num_classes=4)
    line = init_backbone(model, path)
    _assert_backbone_took(clf.state_dict(), backbone_classifier(model).state_dict(), line)


def test_another_models_checkpoint_is_refused(tmp_path):
    _, path = _saved("mobilenetv2_050", tmp_path)
    with pytest.raises(ValueError, match="mobilenetv2_050.*backbone is 'mobilevit_xxs'"):
        init_backbone(mv.create_model("ssdlite_mobilevit_xxs", num_classes=4), path)


def test_a_backbone_built_with_other_options_is_refused_by_shape(tmp_path):
    _, path = _saved("mobilenetv3_large_100", tmp_path)  # torchvision's SSDLite halves the last stage
    with pytest.raises(ValueError, match="does not fit model mobilenetv3_large_100: .* shape mismatches"):
        init_backbone(mv.create_model("ssdlite320_mobilenetv3_large_100", num_classes=4), path)


def test_a_detectors_checkpoint_gives_a_segmenter_its_backbone(tmp_path):
    det, path = _saved("ssdlite_mobilevit_xxs", tmp_path, num_classes=4)
    seg = mv.create_model("deeplabv3_mobilevit_xxs", num_classes=11)
    line = init_backbone(seg, path)
    assert "the backbone of ssdlite_mobilevit_xxs" in line
    _assert_backbone_took(backbone_classifier(det).state_dict(), backbone_classifier(seg).state_dict(), line)


def test_a_task_model_on_another_backbone_is_refused(tmp_path):
    _, path = _saved("ssdlite_mobilevit_xxs", tmp_path, num_classes=4)
    with pytest.raises(ValueError, match="'ssdlite_mobilevit_xxs' is built on 'mobilevit_xxs'.*'mobilenetv3_large_100'"):
        init_backbone(mv.create_model("lraspp_mobilenetv3_large_100", num_classes=11), path)


def test_the_full_tail_detector_takes_a_plain_classifier(tmp_path):
    """torchvision builds the full tail when it starts SSDLite from a pretrained classifier; so do we on request."""
    clf, path = _saved("mobilenetv3_large_100", tmp_path)
    det = mv.create_model("ssdlite320_mobilenetv3_large_100", num_classes=4, reduced_tail=False)
    line = init_backbone(det, path)
    body = backbone_classifier(det).state_dict()
    ref = clf.state_dict()
    assert all(torch.equal(body[k], ref[k]) for k in body if k in ref) and "of" in line
    default = mv.create_model("ssdlite320_mobilenetv3_large_100", num_classes=4)
    assert sum(p.numel() for p in det.parameters()) > sum(p.numel() for p in default.parameters())
