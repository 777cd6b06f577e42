"""Ready-made models: torchvision's ResNet-18 with ImageNet weights, when they can be had.

torchvision keeps downloaded weights in ``<torch hub folder>/checkpoints`` (by default
``~/.cache/torch/hub/checkpoints``; the environment variable ``TORCH_HOME`` moves it).
On a machine without internet the weights must be copied there by hand; until then
:func:`pretrained_resnet18` falls back to a randomly initialised network and says so,
so that a notebook still runs. Nothing here runs on import.
"""

import pickle
import urllib.error
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torchvision.models import ResNet18_Weights

#: The ImageNet weights :func:`pretrained_resnet18` loads.
RESNET18_WEIGHTS = ResNet18_Weights.IMAGENET1K_V1


def resnet18_checkpoint_path() -> Path:
    """Return where torch.hub keeps (or would keep) the ImageNet ResNet-18 weights file.

    That is ``torch.hub.get_dir()/checkpoints/resnet18-f37072fd.pth`` (the file name is
    the last part of the weights' URL, as torch.hub names it). Nothing is created.
    """
    file_name = Path(urlparse(RESNET18_WEIGHTS.url).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / file_name


def resnet18_weights_available() -> bool:
    """Return True if the ImageNet ResNet-18 weights file is already on this machine. Never downloads."""
    return resnet18_checkpoint_path().is_file()


def pretrained_resnet18(
    allow_download: bool = False, show_progress: bool = True
) -> tuple[torch.nn.Module, bool]:
    """Return ``(model, pretrained)``: torchvision's ResNet-18 and whether it has ImageNet weights.

    The weights (:data:`RESNET18_WEIGHTS`) are loaded when the file is already in
    :func:`resnet18_checkpoint_path`'s folder, or downloaded there first when
    ``allow_download``. Otherwise (no file and no download, no internet, or a damaged
    file) the model is randomly initialised, ``pretrained`` is False, and one line says
    why and how to get the weights.

    The model is the standard ``torchvision.models.resnet18``: input (N, 3, H, W)
    normalised as ``RESNET18_WEIGHTS.transforms()`` does, output (N, 1000) logits.
    """
    checkpoint = resnet18_checkpoint_path()
    if not checkpoint.is_file() and not allow_download:
        reason = f"the ImageNet weights are not in {checkpoint.parent} and downloads are off"
    else:
        try:
            # torch.hub reuses the cached file, or downloads it there and checks its hash.
            state = torch.hub.load_state_dict_from_url(
                RESNET18_WEIGHTS.url, progress=show_progress, check_hash=True
            )
            model = torchvision.models.resnet18(weights=None)
            model.load_state_dict(state)
            return model, True
        # URLError, HTTPError, ConnectionError and time-outs are all OSErrors; so is a
        # cached file that cannot be read (e.g. no permission).
        except (urllib.error.URLError, OSError) as error:
            action = "read" if checkpoint.is_file() else "downloaded"
            reason = f"the ImageNet weights could not be {action} ({error})"
        # A truncated file gives RuntimeError, garbage UnpicklingError, an empty file
        # EOFError; a download with the wrong hash or a file of another model RuntimeError.
        except (RuntimeError, pickle.UnpicklingError, EOFError) as error:
            details = (str(error).strip().splitlines() or ["no details"])[0]
            reason = (
                f"the weights file {checkpoint} seems damaged or is not ResNet-18's "
                f"({type(error).__name__}: {details}); delete it"
            )
    print(
        f"dlmed: using a RANDOMLY INITIALISED ResNet-18: {reason}. To get the weights, run "
        f"dlmed.models.pretrained_resnet18(allow_download=True) once with internet, or copy "
        f"{checkpoint.name} (from {RESNET18_WEIGHTS.url}) into {checkpoint.parent}."
    )
    return torchvision.models.resnet18(weights=None), False
