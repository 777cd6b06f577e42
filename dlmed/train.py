"""A small training loop with a progress bar, evaluation and prediction.

The functions work on any device: batches are moved to the ``device`` you pass, and
everything they return (numbers, tensors) lives on the CPU. The model itself must already
be on that device; call ``model.to(device)`` *before* creating the optimizer.

Loaders must yield ``(inputs, labels)`` pairs, as a ``DataLoader`` over a
``TensorDataset`` or an image-folder data set does. ``loss_fn`` must return the mean loss
over the batch (PyTorch's default ``reduction="mean"``).
"""

import contextlib
import itertools
import time
from typing import Any, Iterable, Iterator, Optional, Tuple

import torch
from tqdm.auto import tqdm


def _check_max_steps(max_steps: Optional[int], name: str) -> None:
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"{name} must be None (no limit) or at least 1, got {max_steps!r}")


def _limited(loader: Iterable, max_steps: Optional[int]) -> Iterator:
    """Iterate over ``loader``, stopping after ``max_steps`` batches when given."""
    # islice stops without fetching an extra batch, so a capped epoch loads only what it uses.
    return itertools.islice(loader, max_steps)


def _expected_steps(loader: Iterable, max_steps: Optional[int]) -> Optional[int]:
    """Number of batches the progress bar should expect, or None when it cannot be known."""
    try:
        total = len(loader)
    except TypeError:  # an iterable without __len__ (e.g. a generator)
        return max_steps
    return total if max_steps is None else min(total, max_steps)


def _split_batch(batch: Any) -> Tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    described = f"a {type(batch).__name__}"
    if isinstance(batch, (tuple, list)):
        described += f" of length {len(batch)}"
    raise ValueError(
        f"each batch must be a pair (inputs, labels), got {described}; use a "
        "TensorDataset(inputs, labels) or a data set whose items are (image, label)"
    )


def _check_model_device(model: torch.nn.Module, device) -> None:
    # PyTorch's own error for this ("Expected all tensors to be on the same device") does
    # not say which call to fix, so check once up front.
    first_parameter = next(model.parameters(), None)
    if first_parameter is None:
        return
    wanted = torch.device(device)
    if first_parameter.device.type != wanted.type:
        raise RuntimeError(
            f"the model is on {first_parameter.device} but batches go to {wanted}; "
            "call model.to(device) before creating the optimizer"
        )


def _no_batches_error(function_name: str) -> ValueError:
    return ValueError(
        f"{function_name}() got no batches from the loader; check that the data set is not "
        "empty and that drop_last=True does not drop the only (incomplete) batch"
    )


@contextlib.contextmanager
def _evaluation_mode(model: torch.nn.Module):
    """Put ``model`` in eval mode without gradients, then restore every submodule's mode."""
    # Restore module by module rather than with model.train(was_training): a model may
    # deliberately keep some parts in eval mode (e.g. frozen batch norm when fine-tuning).
    previous_modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, was_training in previous_modes:
            module.training = was_training


def train_one_epoch(
    model: torch.nn.Module,
    loader: Iterable,
    loss_fn,
    optimizer: torch.optim.Optimizer,
    device,
    max_steps: Optional[int] = None,
    scheduler=None,
    show_progress: bool = True,
    description: str = "train",
) -> float:
    """Train ``model`` for one pass over ``loader`` and return the mean training loss.

    For each batch ``(inputs, labels)`` (inputs e.g. (N, C, H, W), labels (N,)) the batch
    is moved to ``device``, the gradients are zeroed, the loss is computed and
    back-propagated, the optimizer takes a step, and then ``scheduler.step()`` is called if
    a scheduler is given (so use per-batch schedulers such as ``OneCycleLR``).

    Args:
        model: the network, already on ``device``; it is put in training mode.
        loader: yields ``(inputs, labels)`` batches.
        loss_fn: e.g. ``nn.CrossEntropyLoss()``; must average over the batch.
        optimizer: built from ``model.parameters()``.
        device: where the batches go (``torch.device`` or a string like ``"cuda"``).
        max_steps: stop after this many batches (``None``: the whole loader).
        scheduler: learning-rate scheduler stepped once per batch, or ``None``.
        show_progress: show a tqdm bar with the running loss.
        description: label of the progress bar.

    Returns:
        The mean loss over the batches seen, weighted by batch size, as a float.
    """
    _check_max_steps(max_steps, "max_steps")
    _check_model_device(model, device)
    model.train()
    total_loss = 0.0
    examples_seen = 0
    progress = tqdm(
        _limited(loader, max_steps),
        total=_expected_steps(loader, max_steps),
        desc=description,
        disable=not show_progress,
        leave=False,  # fit() prints a summary line per epoch; finished bars would only clutter
    )
    with progress:
        for batch in progress:
            inputs, labels = _split_batch(batch)
            inputs, labels = inputs.to(device), labels.to(device)
            optimizer.zero_grad()
            loss = loss_fn(model(inputs), labels)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            batch_size = labels.shape[0]
            total_loss += loss.item() * batch_size
            examples_seen += batch_size
            # refresh=False: let tqdm redraw at its own pace instead of on every batch.
            progress.set_postfix(loss=f"{total_loss / examples_seen:.4f}", refresh=False)
    if examples_seen == 0:
        raise _no_batches_error("train_one_epoch")
    return total_loss / examples_seen


def evaluate(model: torch.nn.Module, loader: Iterable, loss_fn, device, max_steps: Optional[int] = None) -> dict:
    """Return the mean loss and the accuracy of ``model`` on ``loader``.

    The model runs in eval mode (dropout off, batch norm uses its running statistics)
    under ``torch.no_grad()``; afterwards every submodule gets back the train/eval mode it
    had. The weights are not changed.

    Args:
        model: a classifier returning logits of shape (N, C), already on ``device``.
        loader: yields ``(inputs, labels)`` batches, labels of shape (N,) with class indices.
        loss_fn: e.g. ``nn.CrossEntropyLoss()``; must average over the batch.
        device: where the batches go.
        max_steps: look at only this many batches (``None``: all of them).

    Returns:
        ``{"loss": float, "accuracy": float}``, both averaged over examples; accuracy is a
        fraction between 0 and 1.
    """
    _check_max_steps(max_steps, "max_steps")
    _check_model_device(model, device)
    total_loss = 0.0
    correct = 0
    examples_seen = 0
    with _evaluation_mode(model):
        for batch in _limited(loader, max_steps):
            inputs, labels = _split_batch(batch)
            inputs, labels = inputs.to(device), labels.to(device)
            logits = model(inputs)
            batch_size = labels.shape[0]
            total_loss += loss_fn(logits, labels).item() * batch_size
            correct += (logits.argmax(dim=1) == labels).sum().item()
            examples_seen += batch_size
    if examples_seen == 0:
        raise _no_batches_error("evaluate")
    return {"loss": total_loss / examples_seen, "accuracy": correct / examples_seen}


def predict(
    model: torch.nn.Module, loader: Iterable, device, max_steps: Optional[int] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Return the predicted class probabilities and the true labels for ``loader``.

    Runs like :func:`evaluate` (eval mode, no gradients, modes restored afterwards).

    Args:
        model: a classifier returning logits of shape (N, C), already on ``device``.
        loader: yields ``(inputs, labels)`` batches.
        device: where the batches go.
        max_steps: look at only this many batches (``None``: all of them).

    Returns:
        ``(probabilities, labels)``: probabilities of shape (N, C), float32 on the CPU, each
        row a softmax over the classes (sums to 1); labels of shape (N,), int64 on the CPU.
        Take ``probabilities.argmax(dim=1)`` for the predicted classes.
    """
    _check_max_steps(max_steps, "max_steps")
    _check_model_device(model, device)
    probability_batches = []
    label_batches = []
    with _evaluation_mode(model):
        for batch in _limited(loader, max_steps):
            inputs, labels = _split_batch(batch)
            logits = model(inputs.to(device))
            probability_batches.append(torch.softmax(logits.float(), dim=1).cpu())
            label_batches.append(labels.cpu().long())
    if not probability_batches:
        raise _no_batches_error("predict")
    return torch.cat(probability_batches), torch.cat(label_batches)


def fit(
    model: torch.nn.Module,
    train_loader: Iterable,
    loss_fn,
    optimizer: torch.optim.Optimizer,
    num_epochs: int,
    device,
    val_loader: Optional[Iterable] = None,
    max_steps_per_epoch: Optional[int] = None,
    scheduler=None,
    show_progress: bool = True,
) -> dict:
    """Train for ``num_epochs`` epochs, evaluating on ``val_loader`` after each, and return the history.

    Each epoch calls :func:`train_one_epoch` (a progress bar over the batches) and, when
    ``val_loader`` is given, :func:`evaluate`. With ``show_progress`` one summary line is
    printed per epoch. ``max_steps_per_epoch`` caps the batches of both training and
    validation, so a capped run (e.g. in grading mode) stays fast throughout.

    Args:
        model, loss_fn, optimizer, device, scheduler: as for :func:`train_one_epoch`.
        train_loader: yields ``(inputs, labels)`` training batches.
        num_epochs: passes over the training set (at least 1).
        val_loader: validation batches, or ``None`` to skip validation.
        max_steps_per_epoch: batches per epoch (``None``: the whole loader).
        show_progress: show progress bars and the per-epoch summary.

    Returns:
        A dict of lists with one entry per epoch: ``"epoch"`` (1, 2, ...), ``"train_loss"``,
        ``"val_loss"``, ``"val_accuracy"`` (both empty without ``val_loader``) and
        ``"seconds"`` (wall time of the epoch). Plot it with ``dlmed.plots.plot_history``.
    """
    if num_epochs < 1:
        raise ValueError(f"num_epochs must be at least 1, got {num_epochs!r}")
    _check_max_steps(max_steps_per_epoch, "max_steps_per_epoch")
    history = {"epoch": [], "train_loss": [], "val_loss": [], "val_accuracy": [], "seconds": []}
    for epoch in range(1, num_epochs + 1):
        started = time.perf_counter()
        train_loss = train_one_epoch(
            model,
            train_loader,
            loss_fn,
            optimizer,
            device,
            max_steps=max_steps_per_epoch,
            scheduler=scheduler,
            show_progress=show_progress,
            description=f"epoch {epoch}/{num_epochs}",
        )
        summary = f"epoch {epoch}/{num_epochs}: train loss {train_loss:.4f}"
        if val_loader is not None:
            metrics = evaluate(model, val_loader, loss_fn, device, max_steps=max_steps_per_epoch)
            history["val_loss"].append(metrics["loss"])
            history["val_accuracy"].append(metrics["accuracy"])
            summary += f", val loss {metrics['loss']:.4f}, val accuracy {metrics['accuracy']:.1%}"
        seconds = time.perf_counter() - started
        history["epoch"].append(epoch)
        history["train_loss"].append(train_loss)
        history["seconds"].append(seconds)
        if show_progress:
            print(f"{summary} ({seconds:.1f} s)")
    return history
