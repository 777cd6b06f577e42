"""Tests for dlmed.models: ResNet-18 with ImageNet weights when cached, random weights otherwise.

TORCH_HOME points at a temporary folder in every test, so the real torch.hub cache is
neither read nor written, and every way to reach the network is replaced by a function
that fails the test (or imitates a download) when called.
"""

import inspect
import runpy
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision

from dlmed import models
from dlmed.models import pretrained_resnet18, resnet18_checkpoint_path, resnet18_weights_available

CHECKPOINT_NAME = "resnet18-f37072fd.pth"  # the basename of ResNet18_Weights.IMAGENET1K_V1.url


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty TORCH_HOME, so torch.hub looks for checkpoints under tmp_path."""
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # in case something called set_dir
    return home


@pytest.fixture
def no_network(no_network, monkeypatch):
    """conftest's no_network (urlopen refused), plus torch.hub's own downloaders; records the calls."""

    def refuse(url, *args, **kwargs):
        no_network.append(url)
        raise AssertionError(f"the network was used: {url!r}")

    monkeypatch.setattr(torch.hub, "urlopen", refuse)  # torch.hub imported it by name
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    return no_network


def _save_fake_checkpoint(torch_home: Path) -> dict:
    """Save a freshly built (random) ResNet-18's weights where the ImageNet file would be."""
    torch.manual_seed(123)
    state = torchvision.models.resnet18(weights=None).state_dict()
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(state, folder / CHECKPOINT_NAME)
    return state


def test_import_has_no_side_effects(tmp_path, monkeypatch):
    """Running dlmed/models.py's top-level code creates no folder (not even the torch hub one)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    assert "pretrained_resnet18" in runpy.run_path(models.__file__)
    assert list(tmp_path.iterdir()) == []


def test_public_functions_have_docstrings():
    """Every public function of dlmed.models is documented."""
    public = [
        obj
        for name, obj in vars(models).items()
        if not name.startswith("_") and inspect.isfunction(obj) and obj.__module__ == models.__name__
    ]
    assert len(public) >= 3
    assert [obj.__name__ for obj in public if not (obj.__doc__ or "").strip()] == []


def test_checkpoint_path_follows_torch_hub(torch_home):
    """The file is torch.hub.get_dir()/checkpoints/<basename of the weights' URL>."""
    assert resnet18_checkpoint_path() == torch_home / "hub" / "checkpoints" / CHECKPOINT_NAME
    assert Path(torch.hub.get_dir()) == torch_home / "hub"


def test_not_available_gives_random_weights_and_says_how(torch_home, monkeypatch, no_network, capsys):
    """Without the file and with downloads off: random weights, one clear line, no network, no folder."""

    def must_not_load(*args, **kwargs):
        raise AssertionError("torch.hub.load_state_dict_from_url was called with downloads off")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", must_not_load)
    assert not resnet18_weights_available()
    model, pretrained = pretrained_resnet18(show_progress=False)
    assert pretrained is False
    assert isinstance(model, torchvision.models.ResNet) and model.fc.out_features == 1000
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    assert "RANDOMLY INITIALISED" in lines[0]
    assert "allow_download=True" in lines[0]
    assert str(torch_home / "hub" / "checkpoints") in lines[0]
    assert CHECKPOINT_NAME in lines[0] and models.RESNET18_WEIGHTS.url in lines[0]
    assert no_network == []
    assert not torch_home.exists()


def test_cached_checkpoint_is_loaded(torch_home, no_network, capsys):
    """With the file in the cache: available, pretrained=True, and the weights are the file's."""
    state = _save_fake_checkpoint(torch_home)
    assert resnet18_weights_available()
    model, pretrained = pretrained_resnet18(allow_download=False, show_progress=False)
    assert pretrained is True
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[key], state[key]) for key in state)
    assert capsys.readouterr().out == ""
    assert no_network == []


def test_download_when_allowed(torch_home, monkeypatch):
    """With allow_download=True and no file, torch.hub downloads it into the cache and it is used."""
    torch.manual_seed(7)
    served = torchvision.models.resnet18(weights=None).state_dict()
    urls = []

    def fake_download(url, destination, hash_prefix=None, progress=True):
        urls.append(url)
        torch.save(served, destination)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    model, pretrained = pretrained_resnet18(allow_download=True, show_progress=False)
    assert pretrained is True
    assert urls == [models.RESNET18_WEIGHTS.url]
    assert resnet18_weights_available()
    assert torch.equal(model.conv1.weight, served["conv1.weight"])


def test_download_failure_falls_back(torch_home, monkeypatch, capsys):
    """Offline with downloads allowed: random weights and a line saying the download failed."""

    def unreachable(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", unreachable)
    model, pretrained = pretrained_resnet18(allow_download=True, show_progress=False)
    assert pretrained is False and isinstance(model, torchvision.models.ResNet)
    out = capsys.readouterr().out
    assert "could not be downloaded" in out and "name resolution" in out


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_checkpoint_falls_back_and_says_so(torch_home, no_network, capsys, damage):
    """A damaged cached file gives random weights and a line naming the file as damaged."""
    _save_fake_checkpoint(torch_home)
    path = resnet18_checkpoint_path()
    content = path.read_bytes()
    path.write_bytes({"truncated": content[: len(content) // 2], "garbage": b"garbage", "empty": b""}[damage])
    model, pretrained = pretrained_resnet18(show_progress=False)
    assert pretrained is False and isinstance(model, torchvision.models.ResNet)
    out = capsys.readouterr().out
    assert "damaged" in out and str(path) in out and "delete it" in out
    assert no_network == []


def test_checkpoint_of_another_model_falls_back(torch_home, no_network, capsys):
    """A file with other layers under the expected name is reported, and the model is not half-loaded."""
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, folder / CHECKPOINT_NAME)
    model, pretrained = pretrained_resnet18(show_progress=False)
    assert pretrained is False
    assert model.conv1.weight.abs().sum() > 0  # a fresh random model, not the zeros
    assert "damaged" in capsys.readouterr().out
