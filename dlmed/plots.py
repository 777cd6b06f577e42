"""Plots for the notebooks: image grids, learning curves, confusion matrices, LR finder.

Every function returns the matplotlib ``Figure`` and never calls ``plt.show()``. In a
notebook the figure appears at the end of the cell by itself; write ``fig = show_images(...)``
or end the line with ``;`` so it is not shown a second time as the cell's value.
Tensors may live on any device; they are copied to the CPU before plotting.
"""

import math
from typing import Any, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

RIGHT_COLOUR = "green"
WRONG_COLOUR = "red"


def _as_cpu_tensor(values: Any) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu()
    return torch.as_tensor(np.asarray(values))


def _as_numpy(values: Any) -> np.ndarray:
    return _as_cpu_tensor(values).numpy()


def _rescale_each_image(images: torch.Tensor) -> torch.Tensor:
    """Stretch each image of (N, ...) to [0, 1] so any value range (e.g. normalised) displays."""
    flat = images.reshape(images.shape[0], -1)
    low = flat.min(dim=1).values.reshape(-1, *([1] * (images.dim() - 1)))
    high = flat.max(dim=1).values.reshape(-1, *([1] * (images.dim() - 1)))
    # A constant image has no range; clamping avoids dividing by zero and shows it black.
    return (images - low) / (high - low).clamp(min=1e-12)


def _class_name(index: int, class_names: Optional[Sequence[str]]) -> str:
    if class_names is None:
        return str(index)
    if not 0 <= index < len(class_names):
        raise ValueError(
            f"class index {index} has no name: class_names has {len(class_names)} entries; "
            "pass one name per class"
        )
    return str(class_names[index])


def _as_index_list(values: Any, name: str, expected_length: int) -> list:
    indices = _as_cpu_tensor(values).reshape(-1).tolist()
    if len(indices) != expected_length:
        raise ValueError(
            f"{name} has {len(indices)} entries but there are {expected_length} images; "
            f"pass one {name[:-1]} per image"
        )
    return [int(index) for index in indices]


def show_images(
    images: Any,
    labels: Any = None,
    class_names: Optional[Sequence[str]] = None,
    predictions: Any = None,
    ncols: int = 8,
    title: Optional[str] = None,
    max_images: int = 32,
) -> Figure:
    """Show a grid of images, titled with their classes.

    Args:
        images: tensor (or array) of shape (N, C, H, W) with C = 1 or 3, or (N, H, W) for
            grayscale; any device, any value range (each image is stretched to [0, 1]).
        labels: true class indices, shape (N,), or ``None``.
        class_names: names to show instead of class indices, or ``None``.
        predictions: predicted class indices, shape (N,), or ``None``. With ``labels`` the
            titles read "true / predicted", green when right and red when wrong.
        ncols: images per row.
        title: title above the grid, or ``None``.
        max_images: show at most the first this many images.

    Returns:
        The figure, with one axes per image shown.
    """
    pixels = _as_cpu_tensor(images).float()
    if pixels.dim() == 3:
        pixels = pixels.unsqueeze(1)  # (N, H, W) -> (N, 1, H, W)
    if pixels.dim() != 4 or pixels.shape[1] not in (1, 3):
        raise ValueError(
            f"images must have shape (N, C, H, W) with C = 1 or 3, or (N, H, W); got "
            f"{tuple(pixels.shape)}. For a single image add a batch axis: image.unsqueeze(0)"
        )
    if pixels.shape[0] == 0:
        raise ValueError("images is empty (N = 0); pass at least one image")
    if ncols < 1 or max_images < 1:
        raise ValueError(f"ncols and max_images must be at least 1, got {ncols} and {max_images}")

    total_images = pixels.shape[0]
    true_indices = None if labels is None else _as_index_list(labels, "labels", total_images)
    predicted_indices = None if predictions is None else _as_index_list(predictions, "predictions", total_images)

    shown = min(total_images, max_images)
    pixels = _rescale_each_image(pixels[:shown])
    columns = min(ncols, shown)
    rows = math.ceil(shown / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.8 * rows), squeeze=False)

    for position, ax in enumerate(axes.flat):
        if position >= shown:
            figure.delaxes(ax)  # an empty cell in the last row
            continue
        image = pixels[position]
        if image.shape[0] == 1:
            ax.imshow(image[0].numpy(), cmap="gray", vmin=0.0, vmax=1.0)
        else:
            ax.imshow(image.permute(1, 2, 0).numpy())  # matplotlib wants (H, W, C)
        ax.axis("off")

        if true_indices is not None and predicted_indices is not None:
            true_index, predicted_index = true_indices[position], predicted_indices[position]
            colour = RIGHT_COLOUR if true_index == predicted_index else WRONG_COLOUR
            text = f"{_class_name(true_index, class_names)} / {_class_name(predicted_index, class_names)}"
            ax.set_title(text, color=colour, fontsize=8)
        elif true_indices is not None:
            ax.set_title(_class_name(true_indices[position], class_names), fontsize=8)
        elif predicted_indices is not None:
            ax.set_title(f"pred: {_class_name(predicted_indices[position], class_names)}", fontsize=8)

    if title is not None:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_history(history: dict) -> Figure:
    """Plot learning curves from the history returned by :func:`dlmed.train.fit`.

    Args:
        history: dict of per-epoch lists with keys ``"epoch"``, ``"train_loss"`` and, when
            validation was run, ``"val_loss"`` and ``"val_accuracy"``.

    Returns:
        The figure: training and validation loss against epoch on one axes, plus a second
        axes with validation accuracy when the history has it.
    """
    missing = [key for key in ("epoch", "train_loss") if key not in history]
    if missing:
        raise ValueError(f"history lacks {missing}; pass the dict returned by dlmed.train.fit()")
    epochs = list(history["epoch"])
    if not epochs:
        raise ValueError("history is empty (no epochs); train for at least one epoch first")
    val_loss = list(history.get("val_loss", []))
    val_accuracy = list(history.get("val_accuracy", []))

    has_accuracy = len(val_accuracy) > 0
    figure, axes = plt.subplots(1, 2 if has_accuracy else 1, figsize=(10 if has_accuracy else 5, 3.5), squeeze=False)
    loss_ax = axes[0, 0]
    # Markers keep a one-epoch run (a single point) visible.
    loss_ax.plot(epochs, history["train_loss"], marker="o", label="train")
    if val_loss:
        loss_ax.plot(epochs, val_loss, marker="o", label="validation")
    loss_ax.set_title("Loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    loss_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    loss_ax.legend()

    if has_accuracy:
        accuracy_ax = axes[0, 1]
        accuracy_ax.plot(epochs, val_accuracy, marker="o", color="tab:orange")
        accuracy_ax.set_title("Validation accuracy")
        accuracy_ax.set_xlabel("epoch")
        accuracy_ax.set_ylabel("accuracy")
        accuracy_ax.set_ylim(0, 1.05)
        accuracy_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.tight_layout()
    return figure


def plot_confusion_matrix(
    matrix: Any, class_names: Sequence[str], normalize: bool = False, title: Optional[str] = None
) -> Figure:
    """Plot a confusion matrix with scikit-learn's ``ConfusionMatrixDisplay``.

    Args:
        matrix: counts of shape (C, C), tensor (any device) or array; rows are the true
            classes, columns the predicted ones.
        class_names: C names, in class-index order.
        normalize: show each row as fractions of that true class (rows sum to 1) instead of
            counts; a row with no examples shows zeros.
        title: axes title; by default "Confusion matrix" (plus "(row fractions)").

    Returns:
        The figure (the matrix axes and its colour bar).
    """
    # Imported here so `import dlmed.plots` stays quick for notebooks that never need it.
    from sklearn.metrics import ConfusionMatrixDisplay

    values = _as_numpy(matrix)
    if values.ndim != 2 or values.shape[0] != values.shape[1]:
        raise ValueError(f"matrix must be square with shape (C, C), got {values.shape}")
    if len(class_names) != values.shape[0]:
        raise ValueError(
            f"matrix is {values.shape[0]}x{values.shape[0]} but class_names has "
            f"{len(class_names)} entries; pass one name per class"
        )

    if normalize:
        row_totals = values.sum(axis=1, keepdims=True).astype(float)
        values = np.divide(values, row_totals, out=np.zeros(values.shape, dtype=float), where=row_totals > 0)
        values_format = ".2f"
    elif np.issubdtype(values.dtype, np.integer) or np.all(np.mod(values, 1) == 0):
        # Counts often arrive as floats (e.g. from a float tensor); show them as whole numbers.
        values = values.astype(np.int64)
        values_format = "d"
    else:
        values_format = ".3g"

    size = max(4.0, 0.6 * len(class_names) + 2.0)
    figure, ax = plt.subplots(figsize=(size + 1.0, size))
    display = ConfusionMatrixDisplay(confusion_matrix=values, display_labels=list(class_names))
    display.plot(ax=ax, cmap="Blues", values_format=values_format, xticks_rotation=45, colorbar=True)
    if normalize:
        display.im_.set_clim(0.0, 1.0)  # so colours compare across plots
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    default_title = "Confusion matrix (row fractions)" if normalize else "Confusion matrix"
    ax.set_title(default_title if title is None else title)
    figure.tight_layout()
    return figure


def plot_lr_finder(lrs: Any, losses: Any) -> Figure:
    """Plot loss against learning rate on a logarithmic x axis (the learning-rate finder).

    Args:
        lrs: learning rates tried, shape (K,), all positive.
        losses: the loss after each of them, shape (K,). Points where the loss is not finite
            (the run diverged) are left out.

    Returns:
        The figure with one axes.
    """
    learning_rates = _as_numpy(lrs).astype(float).reshape(-1)
    loss_values = _as_numpy(losses).astype(float).reshape(-1)
    if learning_rates.size == 0 or learning_rates.shape != loss_values.shape:
        raise ValueError(
            f"lrs and losses must be non-empty and equally long, got {learning_rates.size} "
            f"learning rates and {loss_values.size} losses"
        )
    if np.any(learning_rates <= 0):
        raise ValueError("learning rates must be positive to plot them on a log scale")

    finite = np.isfinite(loss_values)
    figure, ax = plt.subplots(figsize=(6, 4))
    ax.plot(learning_rates[finite], loss_values[finite])
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("loss")
    ax.set_title("Learning-rate finder")
    ax.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    return figure
