"""The public GEMM: intake -> validate -> allocate -> dispatch -> plan -> launch.

``check_problem`` and ``launch_gemm`` are the core every caller shares: the eager
function below, and the compiler adapters (``jax_ops``, ``torch_ops``), which make their
views at trace time (abstract) and at run time (XLA's or torch's buffers) themselves.
"""

from __future__ import annotations

import logging

from . import dispatch, env, frameworks, intake, validate, warm_calls
from .device import device_info
from .dispatch import Family
from .dlpack import TensorView
from .dtypes import OutKind, out_kind_from_user
from .errors import ArgumentTypeError, MaskedMError
from .launch import KernelLaunch, gemm_params, prepare
from .problem import Problem

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
    checking = check_masked_m if check_masked_m is not None else env.check_masked_m()
    warm_key = None
    if stream is None and not checking and not env.print_config():
        warm_key = warm_calls.key_of((a, b, a_scale, b_scale, masked_m, out), expected_m,
                                     scale_granularity_mnk, out_dtype)
        result = warm_calls.replay(warm_key, out)
        if result is not None:
            return result

    context = intake.call_context(a, "a", stream)
    if out is not None and frameworks.framework_of(out) == "jax":
        raise ArgumentTypeError("out: JAX arrays are immutable and cannot be written in place; "
                                "call without out= (or use cugroupgemm.jax_ops, whose out= "
                                "is aliased)")
    arrays = {"a": a, "b": b, "a_scale": a_scale, "b_scale": b_scale, "masked_m": masked_m}
    if out is not None:
        arrays["out"] = out
    views = intake.take_arrays(arrays, context)
    problem = check_problem(views, expected_m, scale_granularity_mnk, out_dtype)
    if checking:
        _raise_on_bad_masked_m(views["masked_m"], problem.m, context)

    if out is None:
        views["out"], result = frameworks.allocate(
            context.framework, (problem.num_groups, problem.m, problem.n),
            problem.out_kind.dtype, context.device_id, context.stream)
    else:
        result = out
    launched = launch_gemm(views, problem, context.device_id, context.stream)
    warm_calls.remember(warm_key, launched, problem, out is None)
    return frameworks.deliver(context.framework, result)


def check_problem(views: dict[str, TensorView], expected_m, granularity,
                  out_dtype=None) -> Problem:
    """Every host-side rule on the views of "a", "b", "a_scale", "b_scale", "masked_m"
    and the optional "out"; returns the problem they describe.

    NOTE: as the spec says, out_dtype is ignored when out is given (out's dtype wins;
    validate rejects an out whose dtype is not an output kind).
    """
    out = views.get("out")
    out_kind = (out_kind_from_user(out_dtype) if out is None
                else OutKind.of(out.dtype) or OutKind.BF16)
    return validate.check_gemm(views["a"], views["b"], views["a_scale"], views["b_scale"],
                               views["masked_m"], expected_m, granularity, out, out_kind)


def launch_gemm(views: dict[str, TensorView], problem: Problem, device_id: int,
                stream: int, family: Family | None = None) -> tuple[Family, KernelLaunch] | None:
    """Launch the GEMM on validated views (``out`` included) on a raw CUDA stream handle,
    with ``family`` (default: the dispatcher's choice for the device); returns the family
    and the launch (None for an empty problem: nothing to launch).

    Host work only: no allocation, no synchronisation, so it may run while the stream
    is being captured into a CUDA graph or an XLA command buffer.
    """
    if problem.is_empty:
        return None
    info = device_info(device_id)
    family = family or dispatch.choose_family(info)
    plan = family.plan(problem, info)
    if env.print_config():
        print(f"cugroupgemm: {family.name} {plan.spec.expression} for {plan.spec.target} "
              f"grid={plan.grid} block={plan.block} smem={plan.smem_bytes} {problem}")
    params = gemm_params(problem, views["a"], views["b"], views["a_scale"], views["b_scale"],
                         views["masked_m"], views["out"])
    prepared = prepare(plan, device_id, params, *family.extra_arguments(plan, views))
    prepared.run(stream)
    return family, prepared


def _raise_on_bad_masked_m(view, m: int, context):
    """The opt-in check: copy masked_m to the host (a sync) and raise on bad values."""
    import cupy

    with cupy.cuda.Device(context.device_id):
        values = _cupy_view(view).get(stream=frameworks.cupy_stream(context.stream))
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
