"""Tests for dlmed.plots: every function returns a Figure with the expected content."""

import matplotlib

matplotlib.use("Agg")  # no display needed; must come before pyplot is imported

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from dlmed.plots import plot_confusion_matrix, plot_history, plot_lr_finder, show_images  # noqa: E402

CLASS_NAMES = ["Hand", "Chest", "Head"]


@pytest.fixture(autouse=True)
def close_figures():
    """Close every figure after each test so they do not pile up."""
    yield
    plt.close("all")


def titles_of(figure):
    """The title of every axes of ``figure``."""
    return [ax.get_title() for ax in figure.axes]


def test_show_images_nchw_with_class_names():
    """(N, C, H, W) RGB images give one titled axes per image, with class names."""
    images = torch.randn(5, 3, 8, 8) * 10 + 3  # far outside [0, 1]
    figure = show_images(images, labels=torch.tensor([0, 1, 2, 0, 1]), class_names=CLASS_NAMES, ncols=3, title="Batch")
    assert isinstance(figure, Figure)
    assert len(figure.axes) == 5  # the sixth grid cell is removed
    assert titles_of(figure) == ["Hand", "Chest", "Head", "Hand", "Chest"]
    assert figure._suptitle.get_text() == "Batch"
    shown = figure.axes[0].get_images()[0].get_array()
    assert shown.shape == (8, 8, 3) and shown.min() >= 0.0 and shown.max() <= 1.0


def test_show_images_nhw_is_grayscale():
    """(N, H, W) images are shown in grayscale, labels as numbers without class names."""
    figure = show_images(torch.rand(4, 8, 8), labels=[3, 1, 2, 0])
    assert len(figure.axes) == 4
    assert titles_of(figure) == ["3", "1", "2", "0"]
    image = figure.axes[0].get_images()[0]
    assert image.get_cmap().name == "gray"
    assert image.get_array().shape == (8, 8)


def test_show_images_single_channel_nchw_and_numpy():
    """(N, 1, H, W) images work, also as a NumPy array, without labels (no titles)."""
    figure = show_images(np.random.rand(3, 1, 8, 8).astype(np.float32))
    assert len(figure.axes) == 3
    assert titles_of(figure) == ["", "", ""]
    assert figure.axes[0].get_images()[0].get_cmap().name == "gray"


def test_show_images_cpu_tensor_that_requires_grad():
    """A CPU tensor still attached to the autograd graph is accepted (detached for plotting)."""
    images = torch.rand(2, 3, 8, 8, requires_grad=True) * 2
    figure = show_images(images)
    assert len(figure.axes) == 2


def test_show_images_predictions_coloured():
    """With predictions, titles read 'true / pred', green when right and red when wrong."""
    figure = show_images(
        torch.rand(3, 1, 8, 8), labels=torch.tensor([0, 1, 2]), predictions=torch.tensor([0, 2, 2]),
        class_names=CLASS_NAMES,
    )
    assert titles_of(figure) == ["Hand / Hand", "Chest / Head", "Head / Head"]
    colours = [ax.title.get_color() for ax in figure.axes]
    assert [to_rgba(colour) for colour in colours] == [to_rgba("green"), to_rgba("red"), to_rgba("green")]


def test_show_images_respects_max_images():
    """At most max_images images are drawn."""
    figure = show_images(torch.rand(50, 1, 4, 4), max_images=10, ncols=4)
    assert len(figure.axes) == 10


def test_show_images_rejects_bad_shapes():
    """A 2-D image, a channel count other than 1 or 3, or too few labels raise clear errors."""
    with pytest.raises(ValueError, match="shape"):
        show_images(torch.rand(8, 8))
    with pytest.raises(ValueError, match="C = 1 or 3"):
        show_images(torch.rand(2, 5, 8, 8))
    with pytest.raises(ValueError, match="labels has 2 entries"):
        show_images(torch.rand(3, 8, 8), labels=[0, 1])


def test_plot_history_with_validation():
    """A history with validation gives a loss axes (train and val lines) and an accuracy axes."""
    history = {
        "epoch": [1, 2, 3], "train_loss": [1.0, 0.7, 0.5], "val_loss": [1.1, 0.8, 0.7],
        "val_accuracy": [0.5, 0.6, 0.7], "seconds": [1.0, 1.0, 1.0],
    }
    figure = plot_history(history)
    assert isinstance(figure, Figure)
    assert titles_of(figure) == ["Loss", "Validation accuracy"]
    loss_ax, accuracy_ax = figure.axes
    assert [line.get_label() for line in loss_ax.get_lines()] == ["train", "validation"]
    assert list(loss_ax.get_lines()[0].get_xdata()) == [1, 2, 3]
    assert list(accuracy_ax.get_lines()[0].get_ydata()) == [0.5, 0.6, 0.7]


def test_plot_history_without_validation():
    """A history without validation gives a single axes with only the training curve."""
    history = {"epoch": [1], "train_loss": [0.9], "val_loss": [], "val_accuracy": [], "seconds": [0.1]}
    figure = plot_history(history)
    assert len(figure.axes) == 1
    assert [line.get_label() for line in figure.axes[0].get_lines()] == ["train"]


def test_plot_history_rejects_non_history():
    """Something that is not a fit() history raises an error that says what to pass."""
    with pytest.raises(ValueError, match="fit"):
        plot_history({"loss": [1.0]})


def test_plot_confusion_matrix_counts():
    """Counts are shown as whole numbers, one text per cell, with class names on the axes."""
    matrix = torch.tensor([[5, 1, 0], [2, 3, 1], [0, 0, 4]])
    figure = plot_confusion_matrix(matrix, CLASS_NAMES, title="Test set")
    assert isinstance(figure, Figure)
    matrix_ax = figure.axes[0]
    assert len(figure.axes) == 2  # the matrix and its colour bar
    assert matrix_ax.get_title() == "Test set"
    cell_texts = [text.get_text() for text in matrix_ax.texts]
    assert len(cell_texts) == 9
    assert cell_texts[:3] == ["5", "1", "0"]
    assert [label.get_text() for label in matrix_ax.get_xticklabels()] == CLASS_NAMES


def test_plot_confusion_matrix_normalized_rows_sum_to_one():
    """normalize=True shows row fractions: the displayed values of each row sum to 1."""
    matrix = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 4]])
    figure = plot_confusion_matrix(matrix, CLASS_NAMES, normalize=True)
    values = np.array([float(text.get_text()) for text in figure.axes[0].texts]).reshape(3, 3)
    np.testing.assert_allclose(values.sum(axis=1), 1.0, atol=0.011)  # texts are rounded to 2 decimals
    assert values[0, 0] == pytest.approx(5 / 6, abs=0.005)
    assert "fraction" in figure.axes[0].get_title()


def test_plot_confusion_matrix_checks_names():
    """A wrong number of class names raises an error naming both sizes."""
    with pytest.raises(ValueError, match="class_names has 2"):
        plot_confusion_matrix(np.eye(3), ["a", "b"])


def test_plot_lr_finder():
    """The learning-rate finder plot has one axes with a log x axis and one line of all finite points."""
    learning_rates = np.logspace(-5, 0, 20)
    losses = np.linspace(2.0, 0.5, 20)
    losses[-1] = np.inf  # a diverged final step is left out
    figure = plot_lr_finder(learning_rates, torch.tensor(losses))
    assert isinstance(figure, Figure)
    assert len(figure.axes) == 1
    ax = figure.axes[0]
    assert ax.get_xscale() == "log"
    assert len(ax.get_lines()) == 1 and len(ax.get_lines()[0].get_xdata()) == 19
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()


def test_plot_lr_finder_rejects_mismatched_lengths():
    """Learning rates and losses of different lengths raise a clear error."""
    with pytest.raises(ValueError, match="equally long"):
        plot_lr_finder([1e-3, 1e-2], [1.0])


def test_plotting_does_not_call_show(monkeypatch):
    """No plotting function calls plt.show()."""

    def fail_show(*args, **kwargs):
        raise AssertionError("plt.show() was called")

    monkeypatch.setattr(plt, "show", fail_show)
    show_images(torch.rand(2, 8, 8))
    plot_history({"epoch": [1], "train_loss": [1.0], "val_loss": [1.0], "val_accuracy": [0.5]})
    plot_confusion_matrix(np.eye(2), ["a", "b"], normalize=True)
    plot_lr_finder([1e-3, 1e-2], [1.0, 0.5])
