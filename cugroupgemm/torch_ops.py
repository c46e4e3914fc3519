"""cugroupgemm inside ``torch.compile`` and CUDA graphs: ``torch.library`` custom ops.

Optional: this module imports torch (``import cugroupgemm`` never does). Guide:
docs/torch-compile.md. Two ops in the "cugroupgemm" namespace, each with a fake
implementation that checks shapes and dtypes by the eager function's rules and messages,
so the compiler traces them without running them:

- ``cugroupgemm::masked_gemm(a, b, a_scale, b_scale, masked_m, expected_m, out_dtype)``
  returns a new output whose rows past ``masked_m`` are zero;
- ``cugroupgemm::masked_gemm_out(..., expected_m, out)`` writes the valid rows of ``out``
  in place (declared as mutating ``out``).

Both launch on torch's current stream with no synchronisation and no allocation beyond
the output, so a call can be captured in a CUDA graph. A call that repeats an earlier one
(the same tensors and expected_m) replays its launch, as an eager call does
(warm_calls.py).
"""

from __future__ import annotations

import torch

from . import api, env, frameworks, intake, validate, warm_calls
from .dlpack import TensorView
from .dtypes import out_kind_from_user

_ARGUMENTS = ("a", "b", "a_scale", "b_scale", "masked_m", "out")


def batch_deepgemm_fp8_nt_groupwise(a, b, a_scale, b_scale, masked_m, expected_m,
                                    scale_granularity_mnk=(1, 128, 128), out=None,
                                    out_dtype=None):
    """The masked grouped FP8 GEMM as custom ops (arguments as in docs/api.md).

    With ``out``: its valid rows are written in place and ``out`` is returned. Without:
    a new tensor of ``out_dtype`` (default bfloat16) whose rows past the mask are zero.
    """
    validate.check_granularity(scale_granularity_mnk)
    if out is not None:
        torch.ops.cugroupgemm.masked_gemm_out(a, b, a_scale, b_scale, masked_m, expected_m, out)
        return out
    # NOTE: None is settled here in plain Python: dynamo cannot trace our DType objects.
    if out_dtype is None:
        out_dtype = torch.bfloat16
    elif not isinstance(out_dtype, torch.dtype):
        out_dtype = getattr(torch, out_kind_from_user(out_dtype).dtype.name)
    return torch.ops.cugroupgemm.masked_gemm(a, b, a_scale, b_scale, masked_m, expected_m,
                                             out_dtype)


@torch.library.custom_op("cugroupgemm::masked_gemm_out", mutates_args=("out",))
def masked_gemm_out(a: torch.Tensor, b: torch.Tensor, a_scale: torch.Tensor,
                    b_scale: torch.Tensor, masked_m: torch.Tensor, expected_m: int,
                    out: torch.Tensor) -> None:
    tensors = (a, b, a_scale, b_scale, masked_m, out)
    # A call that repeats an earlier one only launches (warm_calls.py), as eager calls do.
    key = None if env.print_config() else warm_calls.key_of(
        tensors, expected_m, validate.SUPPORTED_GRANULARITY, None)
    if warm_calls.replay(key, out) is not None:
        return
    views = _views(tensors, real=True)
    problem = api.check_problem(views, expected_m, validate.SUPPORTED_GRANULARITY)
    device_id = views["a"].device_id
    launched = api.launch_gemm(views, problem, device_id,
                               frameworks.current_stream("torch", device_id))
    warm_calls.remember(key, launched, problem, False)


@masked_gemm_out.register_fake
def _masked_gemm_out_fake(a, b, a_scale, b_scale, masked_m, expected_m, out):
    views = _views((a, b, a_scale, b_scale, masked_m, out), real=False)
    api.check_problem(views, expected_m, validate.SUPPORTED_GRANULARITY)


@torch.library.custom_op("cugroupgemm::masked_gemm", mutates_args=())
def masked_gemm(a: torch.Tensor, b: torch.Tensor, a_scale: torch.Tensor,
                b_scale: torch.Tensor, masked_m: torch.Tensor, expected_m: int,
                out_dtype: torch.dtype) -> torch.Tensor:
    out_kind_from_user(out_dtype)  # named in the error, before anything is allocated
    # NOTE: zeros, not empty: rows past the mask are never written, and a functional op
    # must give the same result every time (opcheck and the compilers compare runs).
    out = torch.zeros((a.shape[0], a.shape[1], b.shape[1]), dtype=out_dtype, device=a.device)
    masked_gemm_out(a, b, a_scale, b_scale, masked_m, expected_m, out)
    return out


@masked_gemm.register_fake
def _masked_gemm_fake(a, b, a_scale, b_scale, masked_m, expected_m, out_dtype):
    views = _views((a, b, a_scale, b_scale, masked_m), real=False)
    problem = api.check_problem(views, expected_m, validate.SUPPORTED_GRANULARITY, out_dtype)
    return a.new_empty((problem.num_groups, problem.m, problem.n), dtype=out_dtype)


def _views(tensors, real: bool) -> dict[str, TensorView]:
    """Views of (a, b, a_scale, b_scale, masked_m[, out]) read off the tensors.

    NOTE: no DLPack: the tensors are torch's own and run on torch's current stream, so
    there is nothing to order, and a capsule per tensor would cost host time on every call.
    Fake tensors (real=False) have no memory: their views are the abstract ones.
    """
    return {name: intake.torch_tensor_view(t, located=real)
            for name, t in zip(_ARGUMENTS, tensors)}
