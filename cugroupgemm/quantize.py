"""Host half of kernels_cu/quantize_fp8.cu: the fp8 quantizers users feed the GEMM with.

Both take any DLPack array (float32, bfloat16, float16) of rank 2, or rank 3 for a batch
of groups, and return (e4m3 data, float32 scales) in the caller's framework (CuPy
callers get the e4m3 bits as uint8, CuPy having no fp8 dtype).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from . import dtypes, frameworks, intake, validate
from .build import KernelSpec, plain_target
from .device import device_info
from .dtypes import InKind
from .errors import ArgumentTypeError, ArgumentValueError
from .launch import LaunchPlan, launch

SOURCE = "quantize_fp8.cu"
TOKEN_WARPS = 8  # per-token: one warp per (row, 128-column block), 8 warps per block
BLOCK_THREADS = 256  # per-block: one CTA per 128x128 block


class DLPackArray(Protocol):
    """Any array that speaks DLPack: torch.Tensor, jax.Array, cupy.ndarray, ..."""

    def __dlpack__(self) -> Any: ...

    def __dlpack_device__(self) -> Any: ...


# Results come back in the caller's framework: the type of the array passed in.
ArrayT = TypeVar("ArrayT", bound=DLPackArray)


class QuantParams(ctypes.Structure):
    """Mirror of ``struct QuantParams`` in kernels_cu/quantize_fp8.cu."""

    _fields_ = [("x", ctypes.c_void_p), ("q", ctypes.c_void_p), ("scale", ctypes.c_void_p),
                ("x_stride_g", ctypes.c_int64), ("x_stride_r", ctypes.c_int64),
                ("x_stride_c", ctypes.c_int64),
                ("groups", ctypes.c_int32), ("rows", ctypes.c_int32), ("cols", ctypes.c_int32)]


@dataclass(frozen=True)
class QuantConfig:
    kernel: str  # per_token_cast_to_fp8 or per_block_cast_to_fp8
    in_kind: InKind
    power_of_two_scale: bool

    def expression(self) -> str:
        pow2 = "true" if self.power_of_two_scale else "false"
        return f"{self.kernel}<{int(self.in_kind)}, {pow2}>"


def per_token_cast_to_fp8(x: ArrayT, *, power_of_two_scale: bool = True,
                          stream: Any = None) -> tuple[ArrayT, ArrayT]:
    """Quantise each row in 1x128 blocks along k: returns (q, scales of shape (..., m, k/128)).

    scale = max|x| over the block (at least 1e-4) / 448, rounded up to a power of two
    unless ``power_of_two_scale=False``; q = fp8_e4m3(x / scale), rounded to nearest even.
    """
    return _quantize("per_token_cast_to_fp8", x, power_of_two_scale, stream)


def per_block_cast_to_fp8(x: ArrayT, *, power_of_two_scale: bool = True,
                          stream: Any = None) -> tuple[ArrayT, ArrayT]:
    """Quantise in 128x128 blocks: returns (q, scales of shape (..., ceil(n/128), ceil(k/128))).

    Edge blocks count only their real elements (as if zero-padded). Scale rule as in
    ``per_token_cast_to_fp8``.
    """
    return _quantize("per_block_cast_to_fp8", x, power_of_two_scale, stream)


def _quantize(kernel: str, x, power_of_two_scale: bool, stream):
    context = intake.call_context(x, "x", stream)
    view = intake.take_arrays({"x": x}, context)["x"]
    in_kind = InKind.of(view.dtype)
    if in_kind is None:
        raise ArgumentTypeError(f"x: expected dtype float32, bfloat16 or float16, got "
                                f"{view.dtype}")
    if view.ndim not in (2, 3):
        raise ArgumentValueError(f"x: expected a 2-D (rows, cols) or 3-D (groups, rows, cols) "
                                 f"array, got {view.ndim}-D of shape {view.shape}")
    validate.check_non_negative_strides(view, "x")
    groups, rows, cols = view.shape if view.ndim == 3 else (1, *view.shape)
    strides = view.strides if view.ndim == 3 else (0, *view.strides)
    if kernel == "per_token_cast_to_fp8":
        if cols % 128:
            raise ArgumentValueError(f"x: per-token quantisation needs the last dimension to "
                                     f"be a multiple of 128, got {cols}")
        scale_tail = (rows, cols // 128)
    else:
        scale_tail = (-(-rows // 128), -(-cols // 128))
    lead = view.shape[:-2]
    q_view, q = frameworks.allocate(context.framework, view.shape, dtypes.FLOAT8_E4M3FN,
                                    context.device_id, context.stream)
    s_view, s = frameworks.allocate(context.framework, (*lead, *scale_tail), dtypes.FLOAT32,
                                    context.device_id, context.stream)

    def delivered():  # the caller's arrays, once any launch that writes them is queued
        return tuple(frameworks.deliver(context.framework, array) for array in (q, s))

    if view.numel == 0:
        return delivered()
    config = QuantConfig(kernel, in_kind, bool(power_of_two_scale))
    spec = KernelSpec(SOURCE, config.expression(), plain_target(device_info(context.device_id)))
    if kernel == "per_token_cast_to_fp8":
        blocks = groups * rows * (cols // 128)
        plan = LaunchPlan(spec, (-(-blocks // TOKEN_WARPS), 1, 1), (TOKEN_WARPS * 32, 1, 1),
                          0, config)
    else:
        plan = LaunchPlan(spec, (scale_tail[1], scale_tail[0], groups), (BLOCK_THREADS, 1, 1),
                          0, config)
    params = QuantParams(view.ptr, q_view.ptr, s_view.ptr, *strides, groups, rows, cols)
    launch(plan, context.device_id, context.stream, params)
    return delivered()


def check_specs(target: str) -> list[KernelSpec]:
    """The instances CI compiles: every kernel, input kind and scale rule."""
    return [KernelSpec(SOURCE, QuantConfig(kernel, kind, pow2).expression(), target)
            for kernel in ("per_token_cast_to_fp8", "per_block_cast_to_fp8")
            for kind in InKind for pow2 in (True, False)]
