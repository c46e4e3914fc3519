"""The public GEMM: intake -> validate -> dispatch -> build -> launch -> hand back."""

from __future__ import annotations

import logging

from . import dispatch, env, frameworks, intake, validate
from .device import device_info
from .dtypes import OutKind, out_kind_from_user
from .errors import ArgumentTypeError, MaskedMError
from .launch import gemm_params, launch

log = logging.getLogger("cugroupgemm")


def batch_deepgemm_fp8_nt_groupwise(a, b, a_scale, b_scale, masked_m, expected_m,
                                    scale_granularity_mnk=(1, 128, 128), out=None,
                                    out_dtype=None, *, stream=None, check_masked_m=None):
    """Masked grouped FP8 GEMM with fine-grained fp32 scales (docs/api.md).

    For each group g: ``out[g, :masked_m[g]] = (a[g] * a_scale[g]) @ (b[g] * b_scale[g]).T``
    with a_scale per token and 128-wide k block and b_scale per 128x128 block, applied in
    fp32. Rows at and past ``masked_m[g]`` are not written. Returns the output in the
    framework of ``a`` (or ``out`` itself when given).
    """
    context = intake.call_context(a, "a", stream)
    if out is not None and frameworks.framework_of(out) == "jax":
        raise ArgumentTypeError("out: JAX arrays are immutable and cannot be written in place; "
                                "call without out= (or use the JAX adapter's aliasing)")
    arrays = {"a": a, "b": b, "a_scale": a_scale, "b_scale": b_scale, "masked_m": masked_m}
    if out is not None:
        arrays["out"] = out
    views = intake.take_arrays(arrays, context)
    # NOTE: as the spec says, out_dtype is ignored when out is given (out's dtype wins;
    # validate rejects an out whose dtype is not an output kind).
    out_kind = (out_kind_from_user(out_dtype) if out is None
                else OutKind.of(views["out"].dtype) or OutKind.BF16)
    problem = validate.check_gemm(views["a"], views["b"], views["a_scale"], views["b_scale"],
                                  views["masked_m"], expected_m, scale_granularity_mnk,
                                  views.get("out"), out_kind)
    if check_masked_m if check_masked_m is not None else env.check_masked_m():
        _raise_on_bad_masked_m(views["masked_m"], problem.m, context)

    if out is None:
        out_view, result = frameworks.allocate(
            context.framework, (problem.num_groups, problem.m, problem.n),
            out_kind.dtype, context.device_id, context.stream)
    else:
        out_view, result = views["out"], out
    if problem.is_empty:
        return result

    info = device_info(context.device_id)
    family = dispatch.choose_family(info)
    plan = family.plan(problem, info)
    if env.print_config():
        print(f"cugroupgemm: {family.name} {plan.spec.expression} for {plan.spec.target} "
              f"grid={plan.grid} block={plan.block} smem={plan.smem_bytes} {problem}")
    views["out"] = out_view
    params = gemm_params(problem, views["a"], views["b"], views["a_scale"], views["b_scale"],
                         views["masked_m"], out_view)
    launch(plan, context.device_id, context.stream, params,
           *family.extra_arguments(plan, views))
    return result


def _raise_on_bad_masked_m(view, m: int, context):
    """The opt-in check: copy masked_m to the host (a sync) and raise on bad values."""
    import cupy

    with cupy.cuda.Device(context.device_id):
        values = _cupy_view(view).get(stream=cupy.cuda.ExternalStream(context.stream))
    bad = validate.masked_m_violations(values, m)
    if bad:
        listing = ", ".join(f"group {g}: {v}" for g, v in bad[:8])
        more = f" and {len(bad) - 8} more" if len(bad) > 8 else ""
        raise MaskedMError(f"masked_m: expected every value in [0, m={m}], got {listing}{more}")


def _cupy_view(view):
    """A CuPy int32 array over a validated contiguous masked_m view (no copy)."""
    import cupy

    memory = cupy.cuda.UnownedMemory(view.ptr, view.numel * 4, view.owner, view.device_id)
    return cupy.ndarray(view.shape, dtype=cupy.int32,
                        memptr=cupy.cuda.MemoryPointer(memory, 0))
