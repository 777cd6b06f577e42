"""Assertion helpers for the notebooks' test cells.

Each helper raises ``AssertionError`` with a message that names what was checked and
shows what was expected and what was got, so a student sees at once what to fix.
Tensors are moved to the CPU before values are compared, so a test grades the same
whether the student's code ran on a CPU, a CUDA GPU or Apple's MPS.
"""

from typing import Any, Sequence, Tuple, Type, Union

import numpy as np
import torch

TypeSpec = Union[Type, Tuple[Type, ...]]


def _type_name(spec: TypeSpec) -> str:
    if isinstance(spec, tuple):
        return " or ".join(t.__name__ for t in spec)
    return spec.__name__


def check_type(value: Any, expected_type: TypeSpec, name: str) -> None:
    """Assert that ``value`` is an instance of ``expected_type`` (a type or a tuple of types)."""
    if not isinstance(value, expected_type):
        raise AssertionError(
            f"{name}: expected type {_type_name(expected_type)}, got {type(value).__name__}"
        )


def check_shape(tensor: Any, expected_shape: Sequence[int], name: str) -> None:
    """Assert that a tensor or array has exactly ``expected_shape``."""
    check_type(tensor, (torch.Tensor, np.ndarray), name)
    got = tuple(tensor.shape)
    expected = tuple(expected_shape)
    if got != expected:
        raise AssertionError(f"{name}: expected shape {expected}, got {got}")


def check_dtype(tensor: Any, expected_dtype: Union[torch.dtype, Tuple[torch.dtype, ...]], name: str) -> None:
    """Assert that a tensor has the given dtype (or one of a tuple of dtypes)."""
    check_type(tensor, torch.Tensor, name)
    allowed = expected_dtype if isinstance(expected_dtype, tuple) else (expected_dtype,)
    if tensor.dtype not in allowed:
        wanted = " or ".join(str(d) for d in allowed)
        raise AssertionError(f"{name}: expected dtype {wanted}, got {tensor.dtype}")


def to_cpu_tensor(value: Any) -> torch.Tensor:
    """Return ``value`` (tensor, array, list or number) as a detached CPU tensor."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    return torch.as_tensor(np.asarray(value))


def check_close(actual: Any, expected: Any, name: str, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    """Assert that ``actual`` equals ``expected`` within ``rtol``/``atol``, compared on the CPU.

    Works for tensors on any device, NumPy arrays and Python numbers. Shapes must match.
    """
    got = to_cpu_tensor(actual).double()
    want = to_cpu_tensor(expected).double()
    if tuple(got.shape) != tuple(want.shape):
        raise AssertionError(f"{name}: expected shape {tuple(want.shape)}, got {tuple(got.shape)}")
    if torch.allclose(got, want, rtol=rtol, atol=atol, equal_nan=False):
        return
    if got.numel() == 1:
        raise AssertionError(
            f"{name}: expected {want.item():.6g}, got {got.item():.6g} (rtol={rtol}, atol={atol})"
        )
    difference = (got - want).abs()
    worst = int(torch.nan_to_num(difference, nan=float("inf")).argmax())
    raise AssertionError(
        f"{name}: values differ (rtol={rtol}, atol={atol}); largest difference "
        f"{difference.flatten()[worst].item():.6g} at flat index {worst}: "
        f"expected {want.flatten()[worst].item():.6g}, got {got.flatten()[worst].item():.6g}"
    )


def check_equal(actual: Any, expected: Any, name: str) -> None:
    """Assert exact equality; tensors and arrays are compared element-wise on the CPU."""
    if isinstance(actual, (torch.Tensor, np.ndarray)) or isinstance(expected, (torch.Tensor, np.ndarray)):
        got = to_cpu_tensor(actual)
        want = to_cpu_tensor(expected)
        if tuple(got.shape) != tuple(want.shape):
            raise AssertionError(f"{name}: expected shape {tuple(want.shape)}, got {tuple(got.shape)}")
        # Promote both to a common dtype: casting one to the other's would hide 1.5 vs 1.
        common = torch.promote_types(got.dtype, want.dtype)
        got, want = got.to(common), want.to(common)
        if not torch.equal(got, want):
            mismatches = int((got != want).sum())
            raise AssertionError(
                f"{name}: {mismatches} of {want.numel()} entries differ;\nexpected\n{want}\ngot\n{got}"
            )
        return
    if actual != expected:
        raise AssertionError(f"{name}: expected {expected!r}, got {actual!r}")


def check_true(condition: bool, message: str) -> None:
    """Assert a condition with a message that says what was checked (expected vs got)."""
    if not condition:
        raise AssertionError(message)
