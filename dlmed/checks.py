"""Assertion helpers for the notebooks' test cells.

Each helper raises ``AssertionError`` with a message that names what was checked and
shows what was expected and what was got, so a student sees at once what to fix.
Tensors are moved to the CPU before values are compared, so a test grades the same
whether the student's code ran on a CPU, a CUDA GPU or Apple's MPS.

An answer is hostile input: it may return an instance of a subclass of ``float``, ``int``,
``str``, ``list`` or ``dict`` whose ``==``, ``<`` or ``-`` say whatever it wants. So
:func:`check_type` accepts only the plain builtin type itself for numbers, strings and bytes
(``float``, ``int``, ``bool``, ...; NumPy's ``float64`` too, which is honest), and
:func:`check_equal` and :func:`check_close` compare *plain* copies of the values
(:func:`plain`), never calling a method of the answer's own class. :func:`check_true` takes
only a real ``bool`` (or a NumPy or one-element torch bool): a test that compares an answer
itself must first check its exact type (``check_type``, ``check_each_type``).
"""

from typing import Any, Sequence, Tuple, Type, Union

import numpy as np
import torch

TypeSpec = Union[Type, Tuple[Type, ...]]


def _type_name(spec: TypeSpec) -> str:
    if isinstance(spec, tuple):
        return " or ".join(t.__name__ for t in spec)
    return spec.__name__


#: Types whose comparisons and arithmetic an answer cannot redefine (they cannot be changed,
#: and are not subclasses): what ``check_type`` accepts for a builtin scalar type.
PLAIN_SCALAR_TYPES = (bool, int, float, complex, str, bytes, type(None), np.float64, np.str_, np.bytes_)
_BUILTIN_SCALARS = (bool, int, float, complex, str, bytes)


def check_type(value: Any, expected_type: TypeSpec, name: str) -> None:
    """Assert that ``value`` is an instance of ``expected_type`` (a type or a tuple of types).

    For the builtin scalar types (``float``, ``int``, ``bool``, ``str``, ``bytes``,
    ``complex``) only the plain type itself passes, not a subclass (whose ``==`` or ``<``
    could lie); NumPy's ``float64`` counts as a plain ``float``.
    """
    if not isinstance(value, expected_type):
        raise AssertionError(
            f"{name}: expected type {_type_name(expected_type)}, got {type(value).__name__}"
        )
    expected = expected_type if isinstance(expected_type, tuple) else (expected_type,)
    scalar_wanted = [t for t in expected if t in _BUILTIN_SCALARS and isinstance(value, t)]
    if scalar_wanted and type(value) not in PLAIN_SCALAR_TYPES:
        wanted = scalar_wanted[0].__name__
        raise AssertionError(
            f"{name}: expected a plain {wanted}, got {type(value).__name__} (a subclass of {wanted}); "
            f"return {wanted}(...) of the value"
        )


def check_each_type(values: Any, expected_type: TypeSpec, name: str) -> None:
    """Assert that ``values`` is a list or tuple and that every element passes :func:`check_type`."""
    check_type(values, (list, tuple), name)
    for index, value in enumerate(list.__iter__(values) if isinstance(values, list) else tuple.__iter__(values)):
        check_type(value, expected_type, f"{name}[{index}]")


def plain(value: Any) -> Any:
    """A copy of ``value`` made of plain builtin values only, read without calling its own methods.

    Numbers and strings of a subclass become the plain ``int``, ``float``, ``str`` they hold
    (``float.__float__(x)`` reads the stored number, whatever the subclass redefines); NumPy
    scalars become Python numbers; lists, tuples, dicts and sets (also of subclasses) are
    copied element by element. Anything else raises ``TypeError``.
    """
    if type(value) in PLAIN_SCALAR_TYPES:
        return value.item() if isinstance(value, np.generic) else value
    if isinstance(value, np.generic):
        return plain(np.generic.item(value))
    for base in (int, float, complex, str, bytes):  # bool cannot be subclassed
        if isinstance(value, base):
            return getattr(base, f"__{base.__name__}__")(value)
    if isinstance(value, list):
        return [plain(item) for item in list.__iter__(value)]
    if isinstance(value, tuple):
        return tuple(plain(item) for item in tuple.__iter__(value))
    if isinstance(value, dict):
        return {plain(key): plain(item) for key, item in dict.items(value)}
    if isinstance(value, (set, frozenset)):
        iterate = set.__iter__ if isinstance(value, set) else frozenset.__iter__
        return {plain(item) for item in iterate(value)}
    raise TypeError(f"not a plain value: {type(value).__name__}")


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
    """Return ``value`` (tensor, array, list or number) as a detached CPU tensor.

    Numbers and lists of numbers are read as plain values (:func:`plain`), so a subclass of
    ``float`` cannot pass itself off as another number.
    """
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise AssertionError(f"expected numbers, got a NumPy array of Python objects: {value!r:.80}")
        return torch.as_tensor(np.array(value))
    try:
        value = plain(value)
    except TypeError:
        raise AssertionError(f"expected a number, a list of numbers, a tensor or an array, got {type(value).__name__}") from None
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
    """Assert exact equality; tensors and arrays are compared element-wise on the CPU.

    Numbers, strings and containers of them are compared as plain values (:func:`plain`),
    so an answer's own ``==`` is never asked. Other objects (a ``torch.dtype``, a device)
    must be of the same type as ``expected`` and equal to it, asked of ``expected``.
    """
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
    try:
        want = plain(expected)
    except TypeError:
        # Not a plain value (torch.dtype, torch.device, ...): same type, and ask `expected`.
        if type(actual) is not type(expected) or type(expected).__eq__(expected, actual) is not True:
            raise AssertionError(f"{name}: expected {expected!r}, got {_safe_repr(actual)}") from None
        return
    try:
        got = plain(actual)
    except TypeError:
        raise AssertionError(
            f"{name}: expected {expected!r} ({type(expected).__name__}), got a {type(actual).__name__}"
        ) from None
    if not _plain_equal(got, want):
        raise AssertionError(f"{name}: expected {want!r}, got {got!r}")


def _plain_equal(got: Any, want: Any) -> bool:
    """``got == want`` for plain values, also requiring the same container types."""
    if isinstance(want, (list, tuple, dict, set)) or isinstance(got, (list, tuple, dict, set)):
        if type(got) is not type(want):
            return False
    return bool(got == want)


def _safe_repr(value: Any) -> str:
    """The type name of a value, and its repr when that is a plain one."""
    try:
        return repr(plain(value))
    except TypeError:
        return f"a {type(value).__name__}"


def check_true(condition: bool, message: str) -> None:
    """Assert a condition with a message that says what was checked (expected vs got).

    ``condition`` must be a real ``bool`` (a NumPy bool or a one-element torch bool tensor
    also does): a comparison involving an answer's object could return anything, so check
    the answer's exact type first (``check_type``), or compare :func:`plain` values.
    """
    if type(condition) is np.bool_:
        condition = bool(condition)
    elif type(condition) in (torch.Tensor, torch.nn.Parameter) and condition.dtype == torch.bool and condition.numel() == 1:
        condition = bool(condition.item())
    if type(condition) is not bool:
        raise AssertionError(
            f"{message} [the condition was a {type(condition).__name__}, not a bool: an answer of a "
            "subclass of a number, or of an unexpected type, cannot be compared]"
        )
    if not condition:
        raise AssertionError(message)
