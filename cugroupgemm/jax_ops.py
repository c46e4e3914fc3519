"""cugroupgemm inside ``jax.jit``: the GEMM as an XLA custom call, and fp8 quantizers in jnp.

Optional: this module imports jax (``import cugroupgemm`` never does). Guide:
docs/jax-jit.md. The GEMM is a ``jax.experimental.buffer_callback``: XLA hands the
callback its CUDA stream and its device buffers, and the kernel is launched on that
stream, with no copy and no synchronisation. Shapes and dtypes are checked at trace time
by the same rules and messages as the eager function (``api.check_problem`` on abstract
views), and again on the buffers at run time.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax.experimental.buffer_callback import buffer_callback

from . import api, dlpack, intake
from .errors import ArgumentTypeError, ArgumentValueError, CuGroupGemmError, describe

BLOCK = 128  # quantisation block along k (per token) and along n and k (per block)
E4M3_MAX = 448.0
AMAX_FLOOR = 1e-4
_RANKS = {"a": 3, "b": 3, "a_scale": 3, "b_scale": 3, "masked_m": 1, "out": 3}
_OUT_OPERAND = 5  # position of out among the callback's operands: aliased to the result


class NoDerivativeError(CuGroupGemmError, NotImplementedError):
    """jax.grad (or jvp) reached the GEMM, which has no derivative rule."""


def batch_deepgemm_fp8_nt_groupwise(a, b, a_scale, b_scale, masked_m, expected_m,
                                    scale_granularity_mnk=(1, 128, 128), out=None,
                                    out_dtype=None, *, command_buffer_compatible=True):
    """The masked grouped FP8 GEMM of ``cugroupgemm``, callable inside ``jax.jit``.

    Arguments as in the eager function (docs/api.md); ``expected_m`` must be a Python
    int (it picks the kernel at trace time). Rows past ``masked_m[g]`` hold ``out``'s
    values when ``out`` is given (it is aliased, not written in place: donate it to
    save the copy), zeros otherwise. ``command_buffer_compatible``: let XLA record the
    launch into its command buffers (CUDA graphs); see docs/jax-jit.md.
    """
    arrays = {"a": a, "b": b, "a_scale": a_scale, "b_scale": b_scale, "masked_m": masked_m}
    if out is not None:
        arrays["out"] = out
    views = {name: _abstract_view(name, array) for name, array in arrays.items()}
    problem = api.check_problem(views, expected_m, scale_granularity_mnk, out_dtype)
    if out is None:
        out = jnp.zeros((problem.num_groups, problem.m, problem.n),
                        jnp.dtype(problem.out_kind.dtype.name))
    gemm = _gemm_op(problem.expected_m, tuple(scale_granularity_mnk),
                    jax.ShapeDtypeStruct(out.shape, out.dtype), command_buffer_compatible)
    return gemm(a, b, a_scale, b_scale, masked_m, out)


def _abstract_view(name: str, array) -> dlpack.TensorView:
    if not (hasattr(array, "shape") and hasattr(array, "dtype")):
        raise ArgumentTypeError(f"{name}: expected a JAX array, got {describe(array)}")
    return intake.view_of(array.shape, jnp.dtype(array.dtype).name)


def _gemm_op(expected_m: int, granularity: tuple, result: jax.ShapeDtypeStruct,
             command_buffer_compatible: bool):
    """The GEMM on (a, b, a_scale, b_scale, masked_m, out) for one static configuration."""

    def callback(ctx, result, a, b, a_scale, b_scale, masked_m, out):
        del out  # aliased: the same memory as result
        buffers = {"a": a, "b": b, "a_scale": a_scale, "b_scale": b_scale,
                   "masked_m": masked_m, "out": result}
        views = {name: _buffer_view(name, buffer) for name, buffer in buffers.items()}
        _launch(ctx, views, api.check_problem(views, expected_m, granularity))

    # NOTE: under jax.vmap, "broadcast_all" gives every operand the batch dimensions in
    # front; _buffer_view folds them into the groups, so a vmapped call is one launch.
    call = buffer_callback(callback, result, input_output_aliases={_OUT_OPERAND: 0},
                           vmap_method="broadcast_all",
                           command_buffer_compatible=command_buffer_compatible)

    @jax.custom_jvp
    def gemm(*arrays):
        return call(*arrays)

    gemm.defjvp(_no_derivative)
    return gemm


def _buffer_view(name: str, buffer) -> dlpack.TensorView:
    """The view of one of XLA's buffers, with vmap's leading batch dimensions folded
    into the groups (XLA hands custom calls dense row-major buffers)."""
    view = dlpack.view_from_capsule(buffer.__dlpack__(), producer=buffer)
    batch = view.ndim - _RANKS[name]
    if batch == 0:
        return view
    shape = (math.prod(view.shape[:batch + 1]), *view.shape[batch + 1:])
    return dataclasses.replace(view, shape=shape, strides=dlpack.compact_strides(shape))


def _launch(ctx, views: dict[str, dlpack.TensorView], problem):
    """Launch on XLA's stream (``ctx.stream``, a raw CUDA stream handle)."""
    api.launch_gemm(views, problem, views["a"].device_id, ctx.stream)


def _no_derivative(primals, tangents):
    raise NoDerivativeError(
        "batch_deepgemm_fp8_nt_groupwise (cugroupgemm.jax_ops) has no derivative rule; "
        "apply jax.lax.stop_gradient to its inputs if no gradient should flow through it")


# ---------------------------------------------------------------------------------------
# Quantizers in jnp: XLA fuses them with their neighbours inside jit, and vmap and grad
# pass through them. Bit for bit the arithmetic of cugroupgemm.reference (and so of the
# CUDA quantizers): float32 amax ignoring NaN, scale = max(amax, 1e-4) / 448 (optionally
# the next power of two), q = e4m3(x / scale) rounded to nearest even, saturating.

def per_token_cast_to_fp8(x, *, power_of_two_scale: bool = True):
    """Quantise ``x`` (..., m, k), k a multiple of 128, in 1x128 blocks along k.

    Returns (q float8_e4m3fn of x's shape, scale float32 of shape (..., m, k/128)).
    """
    x = _float32_input(x)
    *lead, m, k = x.shape
    if k % BLOCK:
        raise ArgumentValueError(f"x: per-token quantisation needs the last dimension to be a "
                                 f"multiple of {BLOCK}, got {k}")
    blocks = x.reshape(*lead, m, k // BLOCK, BLOCK)
    scale = _scale_for_amax(jnp.max(_abs_ignoring_nan(blocks), axis=-1), power_of_two_scale)
    return _to_e4m3(_ieee_divide(blocks, scale[..., None])).reshape(x.shape), scale


def per_block_cast_to_fp8(x, *, power_of_two_scale: bool = True):
    """Quantise ``x`` (..., n, k) in 128x128 blocks (edge blocks as if zero-padded).

    Returns (q float8_e4m3fn of x's shape, scale float32 (..., ceil(n/128), ceil(k/128))).
    """
    x = _float32_input(x)
    *lead, n, k = x.shape
    n_blocks, k_blocks = -(-n // BLOCK), -(-k // BLOCK)
    pad = [(0, 0)] * len(lead) + [(0, n_blocks * BLOCK - n), (0, k_blocks * BLOCK - k)]
    blocks = jnp.pad(x, pad).reshape(*lead, n_blocks, BLOCK, k_blocks, BLOCK)
    scale = _scale_for_amax(jnp.max(_abs_ignoring_nan(blocks), axis=(-3, -1)),
                            power_of_two_scale)
    q = _to_e4m3(_ieee_divide(blocks, scale[..., :, None, :, None]))
    return q.reshape(*lead, n_blocks * BLOCK, k_blocks * BLOCK)[..., :n, :k], scale


def _float32_input(x):
    if not hasattr(x, "dtype") or jnp.dtype(x.dtype).name not in ("float32", "bfloat16",
                                                                  "float16"):
        raise ArgumentTypeError(f"x: expected dtype float32, bfloat16 or float16, got "
                                f"{getattr(x, 'dtype', describe(x))}")
    if x.ndim < 2:
        raise ArgumentValueError(f"x: expected at least 2 dimensions (..., rows, cols), got "
                                 f"shape {tuple(x.shape)}")
    return x.astype(jnp.float32)  # exact for all three


def _abs_ignoring_nan(x):
    return jnp.where(jnp.isnan(x), jnp.float32(0), jnp.abs(x))


def _scale_for_amax(amax, power_of_two: bool):
    scale = _ieee_divide(jnp.maximum(amax, jnp.float32(AMAX_FLOOR)), jnp.float32(E4M3_MAX))
    if not power_of_two:
        return scale
    mantissa, exponent = jnp.frexp(scale)  # scale = mantissa * 2^exponent, in [0.5, 1)
    exact = (mantissa == 0.5) | ~jnp.isfinite(scale)
    return jnp.where(exact, scale, jnp.ldexp(jnp.float32(1), exponent))


def _ieee_divide(x, divisor):
    """x / divisor in float32, rounded once to nearest even, as the kernels divide.

    NOTE: XLA's GPU backend lowers a float32 division to div.full.f32 (up to 2 ulp off,
    LLVM's -nvptx-prec-divf32=1), and its simplifier may turn a division by a constant or
    a broadcast into a multiplication by the rounded reciprocal. A float64 division is
    IEEE on every backend, and its quotient rounded to float32 is the correctly rounded
    float32 quotient (53 >= 2 * 24 + 2 bits: double rounding is harmless for division).
    A divisor that depends on x element by element escapes the rewrite; a NaN x gives
    NaN with either divisor.
    """
    with jax.enable_x64(True):
        wide = x.astype(jnp.float64)
        divisor = jnp.where(jnp.isnan(wide), 1.0, jnp.asarray(divisor).astype(jnp.float64))
        return (wide / divisor).astype(jnp.float32)


def _to_e4m3(scaled):
    # NOTE: XLA's convert turns values past the e4m3fn range into NaN; the kernels saturate
    # (cvt.rn.satfinite), so clip first. NaN codes carry no sign there: +NaN is 0x7F.
    saturated = jnp.clip(scaled, -E4M3_MAX, E4M3_MAX)
    unsigned_nan = jnp.where(jnp.isnan(saturated), jnp.float32(jnp.nan), saturated)
    return unsigned_nan.astype(jnp.float8_e4m3fn)
