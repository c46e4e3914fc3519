"""Host-only checks of every argument before anything is launched (no GPU sync).

Each failure raises ArgumentTypeError/ArgumentValueError naming the argument, what
was expected and what was given. The values of masked_m live on the GPU and are not
read here: the kernels clamp them to [0, m] (see ``masked_m_violations`` for the
opt-in check).
"""

from __future__ import annotations

import operator

from . import dtypes
from .dlpack import KDL_CUDA, TensorView, device_name
from .dtypes import OutKind
from .errors import ArgumentTypeError, ArgumentValueError, describe
from .problem import Problem

SUPPORTED_GRANULARITY = (1, 128, 128)
OPERAND_ALIGN_BYTES = 16  # cp.async / TMA move 16-byte chunks of a and b rows
OUT_ROW_ALIGN_ELEMENTS = 8  # vectorised epilogue stores
# NOTE: the params struct (kernels_cu/common/params.cuh) holds groups, m, n and k as int32;
# ctypes would wrap a larger value silently and the kernel would compute the wrong problem.
MAX_EXTENT = 2**31 - 1


def _shape_text(shape) -> str:
    return str(tuple(int(s) for s in shape))


def check_device_array(view: TensorView, argument: str):
    if view.device_type != KDL_CUDA:
        raise ArgumentValueError(f"{argument}: expected an array on a CUDA device, got one on "
                                 f"{device_name(view.device_type)}")


def check_non_negative_extents(view: TensorView, argument: str):
    """DLPack extents are int64: a negative one is a broken producer, refused by name."""
    if any(extent < 0 for extent in view.shape):
        raise ArgumentValueError(f"{argument}: expected non-negative extents, got shape "
                                 f"{_shape_text(view.shape)}")


def check_same_device(views: dict[str, TensorView]) -> int:
    """The device all arrays share, or a ValueError naming each argument's device."""
    devices = {name: view.device_id for name, view in views.items()}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{name} on cuda:{dev}" for name, dev in devices.items())
        raise ArgumentValueError(f"all arrays must be on one CUDA device; got {listing}")
    return next(iter(devices.values()))


def check_dtype(view: TensorView, argument: str, allowed: tuple[dtypes.DType, ...]):
    if view.dtype not in allowed:
        names = " or ".join(d.name for d in allowed)
        raise ArgumentTypeError(f"{argument}: expected dtype {names}, got {view.dtype}")


def check_shape(view: TensorView, argument: str, expected: tuple[int, ...], meaning: str):
    if view.shape != tuple(expected):
        raise ArgumentValueError(f"{argument}: expected shape {_shape_text(expected)} "
                                 f"{meaning}, got {_shape_text(view.shape)}")


def check_rank(view: TensorView, argument: str, rank: int, meaning: str):
    if view.ndim != rank:
        raise ArgumentValueError(f"{argument}: expected a {rank}-D array {meaning}, got "
                                 f"{view.ndim}-D of shape {_shape_text(view.shape)}")


def check_non_negative_strides(view: TensorView, argument: str):
    if any(s < 0 for s in view.strides):
        raise ArgumentValueError(f"{argument}: negative strides are not supported, got "
                                 f"strides {_shape_text(view.strides)} (elements)")


def _check_operand(view: TensorView, argument: str):
    """a and b: K-major rows whose starts are 16-byte aligned."""
    check_non_negative_strides(view, argument)
    if view.shape[2] > 1 and view.strides[2] != 1:
        raise ArgumentValueError(f"{argument}: expected K-major layout (last stride 1), got "
                                 f"strides {_shape_text(view.strides)}")
    misaligned = [s for s in view.strides[:2] if s % OPERAND_ALIGN_BYTES]
    if view.ptr % OPERAND_ALIGN_BYTES or misaligned:
        raise ArgumentValueError(
            f"{argument}: expected a {OPERAND_ALIGN_BYTES}-byte aligned start and group/row "
            f"strides that are multiples of {OPERAND_ALIGN_BYTES} bytes, got address "
            f"0x{view.ptr:x} and strides {_shape_text(view.strides)}")


def _check_scale(view: TensorView, argument: str, expected: tuple[int, ...], meaning: str):
    check_dtype(view, argument, (dtypes.FLOAT32,))
    check_shape(view, argument, expected, meaning)
    check_non_negative_strides(view, argument)
    if view.ptr % 4:
        raise ArgumentValueError(f"{argument}: expected a 4-byte aligned start, got "
                                 f"0x{view.ptr:x}")


def check_expected_m(expected_m, m: int) -> int:
    if isinstance(expected_m, bool):
        raise ArgumentTypeError(f"expected_m: expected an int, got {expected_m!r}")
    try:
        value = operator.index(expected_m)
    except TypeError:
        raise ArgumentTypeError(f"expected_m: expected an int, got "
                                f"{type(expected_m).__name__} {describe(expected_m)}") from None
    if not 0 <= value <= m:
        raise ArgumentValueError(f"expected_m: expected an int in [0, m={m}], got {value}")
    return value


def check_granularity(granularity):
    try:
        given = tuple(operator.index(g) for g in granularity)
    except TypeError:
        raise ArgumentTypeError(f"scale_granularity_mnk: expected a tuple of 3 ints, got "
                                f"{describe(granularity)}") from None
    if given != SUPPORTED_GRANULARITY:
        raise ArgumentValueError(f"scale_granularity_mnk: only {SUPPORTED_GRANULARITY} "
                                 f"(per-token a, 128x128 b) is supported, got {given}")


def check_gemm(a: TensorView, b: TensorView, a_scale: TensorView, b_scale: TensorView,
               masked_m: TensorView, expected_m, granularity, out: TensorView | None,
               out_kind: OutKind) -> Problem:
    """Every host-side rule of the GEMM; returns the problem it describes."""
    views = {"a": a, "b": b, "a_scale": a_scale, "b_scale": b_scale, "masked_m": masked_m}
    if out is not None:
        views["out"] = out
    for name, view in views.items():
        check_device_array(view, name)
        check_non_negative_extents(view, name)
    check_same_device(views)
    check_granularity(granularity)

    check_dtype(a, "a", dtypes.FP8_INPUT_DTYPES)
    check_dtype(b, "b", dtypes.FP8_INPUT_DTYPES)
    check_rank(a, "a", 3, "(groups, m, k)")
    check_rank(b, "b", 3, "(groups, n, k)")
    num_groups, m, k = a.shape
    n = b.shape[1]
    if b.shape[0] != num_groups or b.shape[2] != k:
        raise ArgumentValueError(f"b: expected shape (groups={num_groups}, n, k={k}) to match a "
                                 f"{_shape_text(a.shape)}, got {_shape_text(b.shape)}")
    if k == 0 or k % 128:
        raise ArgumentValueError(f"a, b: expected k to be a positive multiple of 128 (the scale "
                                 f"block), got k={k}")
    if n == 0 or n % 16:
        raise ArgumentValueError(f"b: expected n (b.shape[1]) to be a positive multiple of 16, "
                                 f"got n={n}")
    _check_int32_extents(num_groups, m, n, k)
    _check_operand(a, "a")
    _check_operand(b, "b")
    problem = Problem(num_groups, m, n, k, check_expected_m(expected_m, m), out_kind)

    _check_scale(a_scale, "a_scale", (num_groups, m, problem.k_blocks), "(groups, m, k/128)")
    _check_scale(b_scale, "b_scale", (num_groups, problem.n_blocks, problem.k_blocks),
                 "(groups, ceil(n/128), k/128)")
    check_dtype(masked_m, "masked_m", (dtypes.INT32,))
    check_shape(masked_m, "masked_m", (num_groups,), "(groups,)")
    if num_groups > 1 and masked_m.strides[0] != 1:
        raise ArgumentValueError(f"masked_m: expected a contiguous array, got stride "
                                 f"{masked_m.strides[0]}")
    if masked_m.ptr % 4:
        raise ArgumentValueError(f"masked_m: expected a 4-byte aligned start, got "
                                 f"0x{masked_m.ptr:x}")
    if out is not None:
        check_out(out, problem)
    return problem


def _check_int32_extents(num_groups: int, m: int, n: int, k: int):
    for argument, what, value in (("a", "groups (a.shape[0])", num_groups),
                                  ("a", "m (a.shape[1])", m), ("b", "n (b.shape[1])", n),
                                  ("a, b", "k", k)):
        if value > MAX_EXTENT:
            raise ArgumentValueError(f"{argument}: expected {what} at most 2^31 - 1 (the "
                                     f"kernels hold it in int32), got {value}")


def check_out(out: TensorView, problem: Problem):
    if out.readonly:
        raise ArgumentValueError("out: expected a writable array, got a read-only one")
    if OutKind.of(out.dtype) is None:
        raise ArgumentTypeError(f"out: expected dtype bfloat16, float16 or float32, got "
                                f"{out.dtype}")
    check_shape(out, "out", (problem.num_groups, problem.m, problem.n), "(groups, m, n)")
    check_non_negative_strides(out, "out")
    if (out.strides[2] != 1 or out.strides[1] % OUT_ROW_ALIGN_ELEMENTS
            or out.strides[0] % OUT_ROW_ALIGN_ELEMENTS or out.ptr % 16):
        raise ArgumentValueError(
            f"out: expected rows contiguous along n (last stride 1), group and row strides "
            f"that are multiples of {OUT_ROW_ALIGN_ELEMENTS} elements and a 16-byte aligned "
            f"start, got "
            f"strides {_shape_text(out.strides)} and address 0x{out.ptr:x}")
    # The elements one group's rows cover: (m - 1) row strides plus one row of n.
    group_span = (problem.m - 1) * out.strides[1] + problem.n
    if problem.num_groups > 1 and problem.m > 0 and out.strides[0] < group_span:
        raise ArgumentValueError(f"out: groups overlap: group stride {out.strides[0]} is less "
                                 f"than (m - 1) * row stride + n = {group_span}")
    if problem.m > 1 and out.strides[1] < problem.n:
        raise ArgumentValueError(f"out: rows overlap: row stride {out.strides[1]} is less than "
                                 f"n = {problem.n}")


def masked_m_violations(values, m: int) -> list[tuple[int, int]]:
    """(group, value) for each masked_m value outside [0, m] (host copy of the values)."""
    return [(g, int(v)) for g, v in enumerate(values) if not 0 <= int(v) <= m]
