"""Tests for dlmed.explain.grad_cam: the map Lab 2's Exercise 5 defines, no hooks left behind."""

import runpy

import pytest
import torch
import torch.nn as nn

from dlmed import explain
from dlmed.explain import grad_cam


def _reference_cam(model, layer, image, class_index):
    store = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    logits = model(image.unsqueeze(0))
    handle.remove()
    gradient, = torch.autograd.grad(logits[0, class_index], store["a"])
    weights = gradient[0].mean(dim=(1, 2))
    result = torch.relu((weights[:, None, None] * store["a"][0]).sum(0)).detach()
    return result / result.max() if result.max() > 0 else result


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                         nn.Dropout(0.3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))


@pytest.mark.parametrize("layer_index, class_index", [(2, 1), (2, 0), (0, 2)])
def test_matches_reference(layer_index, class_index):
    """Same map as a plain reference, shape (h, w), values in [0, 1], eval mode, no hooks left."""
    model = _model().train()
    image = torch.rand(1, 8, 10)
    got = grad_cam(model, model[layer_index], image, class_index)
    assert got.shape == (8, 10) and got.dtype == torch.float32 and got.device.type == "cpu"
    assert float(got.min()) >= 0 and float(got.max()) <= 1 + 1e-6
    torch.testing.assert_close(got, _reference_cam(model, model[layer_index], image, class_index), rtol=1e-4, atol=1e-5)
    assert not model.training
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


def test_unused_layer_is_a_clear_error():
    """A layer outside the model's forward pass raises ValueError, and its hook is removed."""
    model, stray = _model(), nn.Conv2d(1, 1, 1)
    with pytest.raises(ValueError, match="not used"):
        grad_cam(model, stray, torch.rand(1, 8, 8), 0)
    assert len(stray._forward_hooks) == 0


def test_import_has_no_side_effects(tmp_path, monkeypatch):
    """Running dlmed/explain.py's top-level code defines grad_cam and writes nothing."""
    monkeypatch.chdir(tmp_path)
    assert "grad_cam" in runpy.run_path(explain.__file__)
    assert list(tmp_path.iterdir()) == []
