"""Device selection and reproducibility."""

import os
import random

import numpy as np
import torch


def device() -> torch.device:
    """Return the best available device: CUDA, then Apple's MPS, then the CPU.

    Set the environment variable ``DLMED_DEVICE`` (e.g. ``cpu``) to force a choice.
    """
    forced = os.environ.get("DLMED_DEVICE")
    if forced:
        try:
            return torch.device(forced)
        except RuntimeError as error:
            raise ValueError(
                f"DLMED_DEVICE={forced!r} is not a device PyTorch knows ({error}); "
                "use e.g. cpu, cuda, cuda:1 or mps, or unset DLMED_DEVICE"
            ) from error
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 42) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (CPU and all GPUs) so runs repeat.

    Returns a ``torch.Generator`` seeded with the same value, handy for
    ``random_split`` and ``DataLoader(generator=...)``.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)
