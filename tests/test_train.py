"""Tests for dlmed.train: the training loop, evaluation, prediction and fit()."""

import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dlmed.train import evaluate, fit, predict, train_one_epoch

CPU = torch.device("cpu")
NUM_FEATURES = 4
NUM_CLASSES = 3


def make_loader(num_examples=48, batch_size=8, seed=0):
    """A learnable toy problem: the class is the index of the largest of the first 3 features."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(num_examples, NUM_FEATURES, generator=generator)
    labels = inputs[:, :NUM_CLASSES].argmax(dim=1)
    return DataLoader(TensorDataset(inputs, labels), batch_size=batch_size, shuffle=False)


def make_model(seed=0, dropout=0.0):
    """A seeded two-layer classifier (N, 4) -> (N, 3), with a dropout layer at index 2."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(NUM_FEATURES, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, NUM_CLASSES)
    )


def weights_of(model):
    """Copies of all parameters, to compare before and after."""
    return [parameter.detach().clone() for parameter in model.parameters()]


class CountingOptimizer(torch.optim.SGD):
    """SGD that counts its steps."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.steps_taken = 0

    def step(self, closure=None):
        self.steps_taken += 1
        return super().step(closure)


class CountingScheduler:
    """Stands in for a per-batch scheduler and counts step() calls."""

    def __init__(self):
        self.steps_taken = 0

    def step(self):
        self.steps_taken += 1


def record_modes(model):
    """Register a forward hook recording (model.training, grad enabled) at each call."""
    seen = []
    model.register_forward_hook(lambda module, inputs, output: seen.append((module.training, torch.is_grad_enabled())))
    return seen


def test_train_one_epoch_lowers_the_loss():
    """A few epochs on a learnable problem lower the mean training loss clearly."""
    model = make_model()
    loader = make_loader()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = [
        train_one_epoch(model, loader, nn.CrossEntropyLoss(), optimizer, CPU, show_progress=False)
        for _ in range(8)
    ]
    assert isinstance(losses[0], float)
    assert losses[-1] < 0.7 * losses[0], losses


def test_train_one_epoch_returns_batch_size_weighted_mean():
    """With lr=0 the returned loss equals the loss over the whole data set, despite a short last batch."""
    model = make_model()
    loader = make_loader(num_examples=20, batch_size=8)  # batches of 8, 8 and 4
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    mean_loss = train_one_epoch(model, loader, nn.CrossEntropyLoss(), optimizer, CPU, show_progress=False)
    inputs, labels = loader.dataset.tensors
    with torch.no_grad():
        expected = nn.CrossEntropyLoss()(model(inputs), labels).item()
    assert mean_loss == pytest.approx(expected, rel=1e-5)


def test_train_one_epoch_respects_max_steps():
    """max_steps stops the epoch after that many optimizer steps and scheduler steps."""
    model = make_model()
    optimizer = CountingOptimizer(model.parameters(), lr=0.1)
    scheduler = CountingScheduler()
    train_one_epoch(
        model, make_loader(), nn.CrossEntropyLoss(), optimizer, CPU,
        max_steps=2, scheduler=scheduler, show_progress=False,
    )
    assert optimizer.steps_taken == 2
    assert scheduler.steps_taken == 2


def test_scheduler_steps_once_per_batch():
    """The scheduler steps once per batch of the whole epoch."""
    model = make_model()
    loader = make_loader(num_examples=40, batch_size=8)
    scheduler = CountingScheduler()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train_one_epoch(model, loader, nn.CrossEntropyLoss(), optimizer, CPU, scheduler=scheduler, show_progress=False)
    assert scheduler.steps_taken == len(loader) == 5


def test_scheduler_steps_after_the_optimizer():
    """A real OneCycleLR runs without PyTorch's 'scheduler stepped before optimizer' warning."""
    model = make_model()
    loader = make_loader(num_examples=40, batch_size=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=len(loader))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*lr_scheduler.step.*before.*optimizer.step")
        train_one_epoch(model, loader, nn.CrossEntropyLoss(), optimizer, CPU, scheduler=scheduler, show_progress=False)
    assert scheduler.last_epoch == len(loader)


def test_gradients_do_not_accumulate():
    """Garbage pre-filled in .grad is zeroed: the update equals a clean SGD step."""
    loader = make_loader(num_examples=8, batch_size=8)
    loss_fn = nn.CrossEntropyLoss()

    clean_model = make_model()
    clean_optimizer = torch.optim.SGD(clean_model.parameters(), lr=0.1)
    inputs, labels = next(iter(loader))
    clean_optimizer.zero_grad()
    loss_fn(clean_model(inputs), labels).backward()
    clean_optimizer.step()

    model = make_model()
    for parameter in model.parameters():
        parameter.grad = torch.full_like(parameter, 1e3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train_one_epoch(model, loader, loss_fn, optimizer, CPU, show_progress=False)

    for got, expected in zip(model.parameters(), clean_model.parameters()):
        torch.testing.assert_close(got, expected)


def test_train_one_epoch_sets_train_mode():
    """The model is in training mode with gradients on during the forward pass."""
    model = make_model()
    model.eval()
    seen = record_modes(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train_one_epoch(model, make_loader(), nn.CrossEntropyLoss(), optimizer, CPU, max_steps=1, show_progress=False)
    assert seen == [(True, True)]


@pytest.mark.parametrize("was_training", [True, False])
def test_evaluate_and_predict_run_in_eval_mode_and_restore_it(was_training):
    """evaluate() and predict() run in eval mode without gradients and restore the previous mode."""
    model = make_model()
    model.train(was_training)
    seen = record_modes(model)
    evaluate(model, make_loader(), nn.CrossEntropyLoss(), CPU)
    predict(model, make_loader(), CPU)
    assert seen and all(mode == (False, False) for mode in seen), seen
    assert all(module.training == was_training for module in model.modules())


def test_evaluation_restores_mixed_submodule_modes():
    """A submodule kept in eval mode (e.g. frozen batch norm) stays in eval mode afterwards."""
    model = make_model()
    model.train()
    model[2].eval()
    evaluate(model, make_loader(), nn.CrossEntropyLoss(), CPU)
    assert model.training and model[0].training
    assert not model[2].training


def test_evaluate_and_predict_do_not_change_weights():
    """evaluate() and predict() leave every parameter untouched."""
    model = make_model()
    before = weights_of(model)
    evaluate(model, make_loader(), nn.CrossEntropyLoss(), CPU)
    predict(model, make_loader(), CPU)
    for got, expected in zip(weights_of(model), before):
        assert torch.equal(got, expected)


def test_evaluate_is_deterministic_with_dropout():
    """With heavy dropout, two evaluations of a model left in train mode give identical results."""
    model = make_model(dropout=0.9)
    model.train()
    first = evaluate(model, make_loader(), nn.CrossEntropyLoss(), CPU)
    second = evaluate(model, make_loader(), nn.CrossEntropyLoss(), CPU)
    assert first == second


def test_evaluate_values():
    """evaluate() returns the data set's mean loss and accuracy as floats."""
    model = make_model()
    loader = make_loader(num_examples=20, batch_size=8)
    metrics = evaluate(model, loader, nn.CrossEntropyLoss(), CPU)
    inputs, labels = loader.dataset.tensors
    with torch.no_grad():
        logits = model(inputs)
    assert set(metrics) == {"loss", "accuracy"}
    assert isinstance(metrics["loss"], float) and isinstance(metrics["accuracy"], float)
    assert metrics["loss"] == pytest.approx(nn.CrossEntropyLoss()(logits, labels).item(), rel=1e-5)
    assert metrics["accuracy"] == pytest.approx((logits.argmax(dim=1) == labels).float().mean().item())


def test_evaluate_respects_max_steps():
    """evaluate() with max_steps looks at only that many batches."""
    model = make_model()
    seen = record_modes(model)
    evaluate(model, make_loader(), nn.CrossEntropyLoss(), CPU, max_steps=2)
    assert len(seen) == 2


def test_predict_shapes_types_and_probabilities():
    """predict() returns (N, C) float CPU probabilities summing to 1 and (N,) int64 labels, N != C."""
    model = make_model()
    loader = make_loader(num_examples=20, batch_size=8)
    probabilities, labels = predict(model, loader, CPU)
    assert probabilities.shape == (20, NUM_CLASSES)
    assert probabilities.dtype == torch.float32 and probabilities.device.type == "cpu"
    assert labels.shape == (20,) and labels.dtype == torch.int64 and labels.device.type == "cpu"
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(20))
    assert torch.all(probabilities >= 0)
    assert torch.equal(labels, loader.dataset.tensors[1])
    with torch.no_grad():
        expected = torch.softmax(model(loader.dataset.tensors[0]), dim=1)
    torch.testing.assert_close(probabilities, expected)


def test_predict_respects_max_steps():
    """predict() with max_steps returns only the examples of those batches."""
    probabilities, labels = predict(make_model(), make_loader(batch_size=8), CPU, max_steps=2)
    assert probabilities.shape == (16, NUM_CLASSES) and labels.shape == (16,)


def test_empty_loader_gives_a_clear_error():
    """A loader without batches raises a ValueError that says so, rather than returning NaN."""
    empty = DataLoader(TensorDataset(torch.zeros(0, NUM_FEATURES), torch.zeros(0, dtype=torch.long)), batch_size=4)
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="no batches"):
        train_one_epoch(model, empty, nn.CrossEntropyLoss(), optimizer, CPU, show_progress=False)
    with pytest.raises(ValueError, match="no batches"):
        evaluate(model, empty, nn.CrossEntropyLoss(), CPU)


def test_fit_history_with_validation():
    """fit() records one entry per epoch in every list of the history."""
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    history = fit(
        model, make_loader(), nn.CrossEntropyLoss(), optimizer, num_epochs=3, device=CPU,
        val_loader=make_loader(seed=1), show_progress=False,
    )
    assert set(history) == {"epoch", "train_loss", "val_loss", "val_accuracy", "seconds"}
    assert history["epoch"] == [1, 2, 3]
    assert all(len(values) == 3 for values in history.values()), history
    assert all(0.0 <= accuracy <= 1.0 for accuracy in history["val_accuracy"])
    assert all(seconds >= 0.0 for seconds in history["seconds"])


def test_fit_without_validation_and_with_max_steps(capsys):
    """Without val_loader the val lists stay empty; max_steps_per_epoch caps each epoch; nothing printed."""
    model = make_model()
    optimizer = CountingOptimizer(model.parameters(), lr=0.1)
    history = fit(
        model, make_loader(), nn.CrossEntropyLoss(), optimizer, num_epochs=2, device="cpu",
        max_steps_per_epoch=3, show_progress=False,
    )
    assert history["val_loss"] == [] and history["val_accuracy"] == []
    assert len(history["train_loss"]) == len(history["seconds"]) == 2
    assert optimizer.steps_taken == 6
    assert capsys.readouterr().out == ""


def test_fit_prints_one_line_per_epoch_when_showing_progress(capsys):
    """With show_progress, fit() prints a summary line per epoch."""
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    fit(model, make_loader(), nn.CrossEntropyLoss(), optimizer, num_epochs=2, device=CPU, val_loader=make_loader())
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2") and "val accuracy" in lines[0]
