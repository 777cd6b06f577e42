"""Tests for dlmed.core, dlmed.config, dlmed.checks and importing dlmed."""

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dlmed import checks
from dlmed.config import GRADING_LIMITS, RunConfig, is_grading, run_config
from dlmed.core import device, seed_everything


@pytest.fixture
def lab_mode(monkeypatch):
    """Make sure NBGRADER_EXECUTION is not set (nbgrader or CI may set it around us)."""
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)


@pytest.fixture
def grading_mode(monkeypatch):
    """Pretend nbgrader is executing the notebook."""
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")


# --- core -------------------------------------------------------------------------------


@pytest.mark.parametrize("forced", ["cpu", "meta"])
def test_device_honours_environment_variable(monkeypatch, forced):
    """DLMED_DEVICE forces the device, returned as a torch.device ("meta" is never a default choice)."""
    monkeypatch.setenv("DLMED_DEVICE", forced)
    chosen = device()
    assert isinstance(chosen, torch.device)
    assert chosen == torch.device(forced)


def test_device_without_environment_variable(monkeypatch):
    """Without DLMED_DEVICE the device is a torch.device of a known type that tensors can go to."""
    monkeypatch.delenv("DLMED_DEVICE", raising=False)
    chosen = device()
    assert isinstance(chosen, torch.device)
    assert chosen.type in {"cuda", "mps", "cpu"}
    assert torch.zeros(1, device=chosen).device.type == chosen.type


def test_seed_everything_repeats_all_generators():
    """After the same seed, torch, NumPy and random draw the same numbers, and the Generator is seeded."""

    def draw():
        generator = seed_everything(123)
        return (
            torch.rand(3),
            np.random.rand(3),
            random.random(),
            torch.rand(3, generator=generator),
        )

    first, second = draw(), draw()
    assert torch.equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert first[2] == second[2]
    assert torch.equal(first[3], second[3])
    assert torch.equal(first[3], torch.rand(3, generator=torch.Generator().manual_seed(123)))
    assert isinstance(seed_everything(0), torch.Generator)


def test_seed_everything_different_seeds_differ():
    """Different seeds give different numbers (so the test above can fail)."""
    seed_everything(1)
    one = torch.rand(3)
    seed_everything(2)
    assert not torch.equal(one, torch.rand(3))


# --- config -----------------------------------------------------------------------------


def test_run_config_lab_mode_returns_given_settings(lab_mode):
    """In lab mode the settings come back exactly as given."""
    config = run_config(num_epochs=5, batch_size=128, images_per_class=2000, image_size=32)
    assert not is_grading()
    assert config.mode == "lab" and not config.grading
    assert (config.num_epochs, config.batch_size, config.images_per_class, config.image_size) == (5, 128, 2000, 32)
    assert config.max_steps_per_epoch is None
    assert config.allow_download and config.show_progress


def test_run_config_grading_mode_caps_settings(grading_mode):
    """With NBGRADER_EXECUTION set, values are capped by GRADING_LIMITS, downloads and progress bars off."""
    config = run_config(num_epochs=5, batch_size=128, images_per_class=2000, image_size=32)
    assert is_grading()
    assert config.mode == "grading" and config.grading
    for name, limit in GRADING_LIMITS.items():
        assert getattr(config, name) == limit, name
    assert config.image_size == 32  # not a limited setting
    assert config.allow_download is False
    assert config.show_progress is False


@pytest.fixture
def inline_backend():
    """matplotlib's inline backend as a notebook has it, its settings put back afterwards."""
    from matplotlib_inline.backend_inline import InlineBackend

    settings = InlineBackend.instance()
    before = dict(settings.print_figure_kwargs)
    yield settings
    settings.print_figure_kwargs = before


def test_grading_mode_draws_figures_once_and_lab_mode_keeps_the_tight_box(lab_mode, inline_backend, monkeypatch):
    """Lab mode leaves the inline backend's "tight" bounding box; grading mode turns it off (one drawing per figure)."""
    run_config(num_epochs=5)
    assert inline_backend.print_figure_kwargs.get("bbox_inches") == "tight", inline_backend.print_figure_kwargs
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    run_config(num_epochs=5)
    assert inline_backend.print_figure_kwargs.get("bbox_inches", "tight") is None, inline_backend.print_figure_kwargs


def test_run_config_grading_mode_replaces_none_and_keeps_smaller_values(grading_mode):
    """In grading mode None (no limit) becomes the limit, and values already below it are kept."""
    config = run_config(max_steps_per_epoch=None, images_per_class=None, batch_size=2)
    assert config.max_steps_per_epoch == GRADING_LIMITS["max_steps_per_epoch"]
    assert config.images_per_class == GRADING_LIMITS["images_per_class"]
    assert config.batch_size == 2


def test_run_config_grading_overrides_explicit_download_and_progress(grading_mode):
    """Even if a notebook asks for downloads and progress bars, grading mode turns them off."""
    config = run_config(allow_download=True, show_progress=True)
    assert config.allow_download is False and config.show_progress is False


def test_run_config_rejects_unknown_settings(lab_mode):
    """A misspelt setting raises TypeError naming it; passing mode is refused too."""
    with pytest.raises(TypeError, match="num_epoch"):
        run_config(num_epoch=3)
    with pytest.raises(TypeError, match="mode"):
        run_config(mode="grading")


def test_run_config_is_frozen(lab_mode):
    """RunConfig cannot be changed after creation, so a notebook cannot undo the grading caps."""
    config = run_config()
    assert isinstance(config, RunConfig)
    with pytest.raises(AttributeError):
        config.num_epochs = 100


# --- checks -----------------------------------------------------------------------------


def assert_message_mentions(error_info, *fragments):
    """Assert that the raised error's message contains every fragment."""
    message = str(error_info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in message {message!r}"


def test_check_type():
    """check_type passes on the right type and names expected and got types otherwise."""
    checks.check_type(3, int, "answer")
    checks.check_type(3.0, (int, float), "answer")
    with pytest.raises(AssertionError) as error_info:
        checks.check_type("3", (int, float), "answer")
    assert_message_mentions(error_info, "answer", "int or float", "str")


def test_check_shape():
    """check_shape passes on the exact shape and reports expected and got shapes otherwise."""
    checks.check_shape(torch.zeros(2, 3), (2, 3), "logits")
    checks.check_shape(np.zeros((4,)), [4], "labels")
    with pytest.raises(AssertionError) as error_info:
        checks.check_shape(torch.zeros(2, 3), (3, 2), "logits")
    assert_message_mentions(error_info, "logits", "(3, 2)", "(2, 3)")
    with pytest.raises(AssertionError) as error_info:
        checks.check_shape([1, 2], (2,), "labels")
    assert_message_mentions(error_info, "labels", "Tensor", "list")


def test_check_dtype():
    """check_dtype passes on an allowed dtype and names expected and got dtypes otherwise."""
    checks.check_dtype(torch.zeros(2), torch.float32, "x")
    checks.check_dtype(torch.zeros(2, dtype=torch.float64), (torch.float32, torch.float64), "x")
    with pytest.raises(AssertionError) as error_info:
        checks.check_dtype(torch.zeros(2, dtype=torch.int64), torch.float32, "x")
    assert_message_mentions(error_info, "x", "torch.float32", "torch.int64")


def test_check_close_scalars():
    """check_close accepts numbers within tolerance and reports expected and got values otherwise."""
    checks.check_close(1.0 + 1e-7, 1.0, "loss")
    checks.check_close(torch.tensor(0.5), 0.5, "loss")
    with pytest.raises(AssertionError) as error_info:
        checks.check_close(1.5, 1.0, "loss")
    assert_message_mentions(error_info, "loss", "expected 1", "got 1.5")


def test_check_close_tensors():
    """check_close compares tensors and arrays element-wise and points at the worst entry."""
    checks.check_close(torch.tensor([1.0, 2.0]), np.array([1.0, 2.0]), "weights")
    with pytest.raises(AssertionError) as error_info:
        checks.check_close(torch.tensor([1.0, 2.0, 7.0]), torch.tensor([1.0, 2.0, 3.0]), "weights")
    assert_message_mentions(error_info, "weights", "index 2", "expected 3", "got 7")


def test_check_close_shape_mismatch():
    """check_close refuses tensors of different shapes, naming both shapes."""
    with pytest.raises(AssertionError) as error_info:
        checks.check_close(torch.zeros(2, 3), torch.zeros(3, 2), "features")
    assert_message_mentions(error_info, "features", "(3, 2)", "(2, 3)")


def test_check_close_nan_fails():
    """A NaN never counts as close."""
    with pytest.raises(AssertionError, match="loss"):
        checks.check_close(float("nan"), 1.0, "loss")


def test_check_equal_tensors():
    """check_equal compares tensors exactly and reports how many entries differ."""
    checks.check_equal(torch.tensor([1, 2, 3]), [1, 2, 3], "predictions")
    with pytest.raises(AssertionError) as error_info:
        checks.check_equal(torch.tensor([1, 0, 3]), torch.tensor([1, 2, 3]), "predictions")
    assert_message_mentions(error_info, "predictions", "1 of 3", "expected", "got")
    with pytest.raises(AssertionError) as error_info:
        checks.check_equal(torch.tensor([1, 2]), torch.tensor([1, 2, 3]), "predictions")
    assert_message_mentions(error_info, "predictions", "(3,)", "(2,)")


def test_check_equal_plain_values():
    """check_equal compares plain values with == and shows both reprs."""
    checks.check_equal("Hand", "Hand", "class name")
    checks.check_equal([1, 2], [1, 2], "list")
    with pytest.raises(AssertionError) as error_info:
        checks.check_equal("Hand", "Head", "class name")
    assert_message_mentions(error_info, "class name", "'Head'", "'Hand'")


def test_check_true():
    """check_true passes on True and raises with the given message on False."""
    checks.check_true(True, "unused")
    message = "accuracy: expected at least 0.9, got 0.5"
    with pytest.raises(AssertionError) as error_info:
        checks.check_true(False, message)
    assert str(error_info.value) == message


class LyingFloat(float):
    """A float subclass that agrees with everything, as a hostile answer could return."""

    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    def __lt__(self, other):
        return True

    __le__ = __gt__ = __ge__ = __lt__

    def __sub__(self, other):
        return 0.0

    __rsub__ = __sub__
    __hash__ = float.__hash__

    def __float__(self):
        return 0.5


class LyingInt(int):
    """An int subclass that agrees with everything."""

    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    __hash__ = int.__hash__

    def __int__(self):
        return 64


class LyingStr(str):
    """A str subclass that agrees with everything."""

    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    __hash__ = str.__hash__


class LyingList(list):
    """A list subclass that agrees with everything."""

    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False

    def __iter__(self):
        return iter([64, 64])


def test_check_type_rejects_subclasses_of_numbers():
    """Only the plain builtin type passes for float, int and str; NumPy's float64 counts as a float."""
    checks.check_type(0.5, float, "accuracy")
    checks.check_type(np.float64(0.5), float, "accuracy")
    checks.check_type(True, int, "flag")
    checks.check_type([1], list, "history")
    for liar, kind in [(LyingFloat(0.5), float), (LyingInt(3), int), (LyingStr("a"), str)]:
        with pytest.raises(AssertionError) as error_info:
            checks.check_type(liar, kind, "answer")
        assert_message_mentions(error_info, "answer", f"plain {kind.__name__}", type(liar).__name__)
    with pytest.raises(AssertionError, match="plain float"):
        checks.check_type(LyingFloat(0.5), (int, float), "answer")


def test_check_each_type_names_the_element():
    """check_each_type checks every element and says which one was wrong."""
    checks.check_each_type([0.5, 1.0], float, "losses")
    with pytest.raises(AssertionError) as error_info:
        checks.check_each_type([0.5, torch.tensor(1.0)], float, "losses")
    assert_message_mentions(error_info, "losses[1]", "float", "Tensor")
    with pytest.raises(AssertionError, match=r"losses\[0\]"):
        checks.check_each_type([LyingFloat(2.0)], float, "losses")
    with pytest.raises(AssertionError, match="list or tuple"):
        checks.check_each_type(torch.tensor([0.5]), float, "losses")


def test_plain_reads_stored_values():
    """plain() reads the stored number, never the subclass's own methods, also inside containers."""
    assert type(checks.plain(LyingFloat(2.0))) is float and checks.plain(LyingFloat(2.0)) == 2.0
    assert type(checks.plain(LyingInt(3))) is int and checks.plain(LyingInt(3)) == 3
    assert type(checks.plain(LyingStr("x"))) is str
    assert checks.plain(LyingList([1, 2])) == [1, 2]
    assert checks.plain({"a": [np.int64(1), (LyingInt(2),)]}) == {"a": [1, (2,)]}
    assert checks.plain({LyingInt(1)}) == {1}
    with pytest.raises(TypeError):
        checks.plain(object())


def test_check_equal_and_close_ignore_lying_comparisons():
    """Lying ==, != and - make no difference: the stored values are compared."""
    with pytest.raises(AssertionError, match="expected 64, got 3"):
        checks.check_equal(LyingInt(3), 64, "size")
    checks.check_equal(LyingInt(64), 64, "size")  # the stored value is right
    with pytest.raises(AssertionError):
        checks.check_equal(LyingStr("Head"), "Hand", "class")
    with pytest.raises(AssertionError):
        checks.check_equal(LyingList([1, 2]), [64, 64], "list")
    with pytest.raises(AssertionError):
        checks.check_equal({"label": LyingInt(0)}, {"label": 1}, "parsed")
    with pytest.raises(AssertionError):
        checks.check_equal((1, 2), [1, 2], "a tuple is not a list")
    with pytest.raises(AssertionError, match="expected 0.9"):
        checks.check_close(LyingFloat(0.2), 0.9, "accuracy")
    with pytest.raises(AssertionError):
        checks.check_close([LyingFloat(0.2), 0.9], [0.9, 0.9], "losses")
    with pytest.raises(AssertionError, match="got a object"):
        checks.check_equal(object(), 3, "size")


def test_check_equal_other_objects_by_type():
    """Objects that are not plain values must have the expected type and be equal to it."""
    checks.check_equal(torch.float16, torch.float16, "dtype")
    checks.check_equal(None, None, "nothing")
    checks.check_equal(int, int, "type of label")
    with pytest.raises(AssertionError):
        checks.check_equal(bool, int, "type of label")
    with pytest.raises(AssertionError):
        checks.check_equal(torch.float32, torch.float16, "dtype")
    with pytest.raises(AssertionError):
        checks.check_equal("float16", torch.float16, "dtype")

    class AgreesWithEverything:
        def __eq__(self, other):
            return True

    with pytest.raises(AssertionError):
        checks.check_equal(AgreesWithEverything(), torch.float16, "dtype")
    with pytest.raises(AssertionError):
        checks.check_equal(AgreesWithEverything(), None, "nothing")


def test_check_true_wants_a_real_bool():
    """check_true takes bools (also NumPy and one-element torch ones) and refuses anything else."""
    checks.check_true(np.bool_(True), "unused")
    checks.check_true(torch.tensor(True), "unused")
    with pytest.raises(AssertionError, match="went down"):
        checks.check_true(torch.tensor(False), "went down")
    with pytest.raises(AssertionError, match="not a bool"):
        checks.check_true(LyingFloat(1.0) < 0.0 and LyingFloat(1.0), "went down")
    with pytest.raises(AssertionError, match="not a bool"):
        checks.check_true(1, "went down")


# --- import -----------------------------------------------------------------------------


REPO_ROOT = Path(__file__).resolve().parents[1]


def run_in_fresh_python(code):
    """Run ``code`` in a new interpreter that imports dlmed from this source tree."""
    # Put the source tree first on the path so the test checks this code even when the
    # installed (editable) copy is stale or pytest runs from another folder.
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=60
    )


def test_import_dlmed_does_not_import_torch():
    """`import dlmed` in a fresh interpreter leaves torch unimported (it is slow and not always needed)."""
    result = run_in_fresh_python(
        "import dlmed, sys\n"
        "assert dlmed.__file__ and dlmed.__file__.endswith('__init__.py'), f'not the real package: {dlmed!r}'\n"
        "assert 'torch' not in sys.modules, 'import dlmed imported torch'\n"
    )
    assert result.returncode == 0, result.stderr


def test_lazy_attributes_resolve():
    """dlmed.run_config and friends resolve lazily to the submodules' objects; unknown names raise AttributeError."""
    # Checked with the config helpers only: resolving dlmed.device would import torch, which
    # costs seconds in a fresh interpreter and is covered by the core tests above.
    result = run_in_fresh_python(
        "import dlmed, dlmed.config\n"
        "assert dlmed.run_config is dlmed.config.run_config\n"
        "assert dlmed.RunConfig is dlmed.config.RunConfig\n"
        "assert 'device' in dlmed.__all__ and 'seed_everything' in dlmed.__all__\n"
        "try:\n"
        "    dlmed.no_such_thing\n"
        "except AttributeError as error:\n"
        "    assert 'no_such_thing' in str(error)\n"
        "else:\n"
        "    raise AssertionError('dlmed.no_such_thing did not raise AttributeError')\n"
    )
    assert result.returncode == 0, result.stderr


def test_check_equal_does_not_cast_away_differences():
    """check_equal compares in a common dtype: 1.5 is not 1, and 300 is not a uint8 44."""
    with pytest.raises(AssertionError, match="entries differ"):
        checks.check_equal(torch.tensor([1.5, 2.7]), torch.tensor([1, 2]), "x")
    with pytest.raises(AssertionError, match="entries differ"):
        checks.check_equal(torch.tensor([300]), torch.tensor([44], dtype=torch.uint8), "y")
    checks.check_equal(torch.tensor([1, 2]), torch.tensor([1.0, 2.0]), "same values, other dtype")


def test_device_rejects_unknown_override(monkeypatch):
    """A DLMED_DEVICE that PyTorch does not know gives an error naming the variable."""
    monkeypatch.setenv("DLMED_DEVICE", "banana")
    with pytest.raises(ValueError, match="DLMED_DEVICE"):
        device()
