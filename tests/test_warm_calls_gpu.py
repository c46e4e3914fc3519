"""Warm calls on a GPU: a repeated call skips the host work, and nothing else changes."""

import pytest
from conftest import (
    assert_close_to_reference,
    make_gemm_inputs,
    reference_gpu,
    to_cupy_float64,
)

from cugroupgemm import api
from cugroupgemm import batch_deepgemm_fp8_nt_groupwise as gemm
from cugroupgemm.bench_peers import torch_gemm_inputs

pytestmark = pytest.mark.gpu


@pytest.fixture
def full_calls(monkeypatch):
    """One entry per call that went the whole way (through intake) once inputs are made."""
    seen, take = [], api.intake.take_arrays
    monkeypatch.setattr(api.intake, "take_arrays",
                        lambda arrays, context: seen.append("full") or take(arrays, context))
    return seen


def framework_inputs(framework, seed, full_calls=None):
    inputs = make_gemm_inputs(2, 64, 256, 512, [64, 17], seed=seed)
    if full_calls is not None:
        full_calls.clear()  # the quantisers that made the inputs go through intake too
    return inputs, (torch_gemm_inputs(inputs) if framework == "torch" else inputs)


def synchronize(framework):
    import cupy as cp

    if framework == "torch":
        import torch

        torch.cuda.synchronize()
    cp.cuda.runtime.deviceSynchronize()


@pytest.mark.parametrize("framework", ["torch", "cupy"])
def test_a_repeated_call_skips_the_host_work_and_gives_a_new_correct_output(
        full_calls, framework):
    inputs, arrays = framework_inputs(framework, seed=21, full_calls=full_calls)
    first = gemm(**arrays, expected_m=40, out_dtype="float32")
    second = gemm(**arrays, expected_m=40, out_dtype="float32")
    synchronize(framework)
    assert full_calls == ["full"]  # the second call was warm
    assert type(second) is type(first) and second.shape == first.shape
    assert second.dtype == first.dtype
    reference = reference_gpu(**inputs)
    for out in (first, second):
        assert_close_to_reference(to_cupy_float64(out), reference, inputs["masked_m"])
    address = (lambda t: t.data_ptr()) if framework == "torch" else (lambda t: t.data.ptr)
    assert address(first) != address(second)  # each call its own output


@pytest.mark.parametrize("framework", ["torch", "cupy"])
def test_a_warm_call_writes_a_given_output_again(full_calls, framework):
    import cupy as cp

    inputs, arrays = framework_inputs(framework, seed=22, full_calls=full_calls)
    out = cp.full((2, 64, 256), float("nan"), dtype=cp.float32)
    target = torch_gemm_inputs({"out": out})["out"] if framework == "torch" else out
    assert gemm(**arrays, expected_m=40, out=target) is target
    synchronize(framework)
    out[...] = float("nan")  # poisoned again: only the warm call can fill it
    assert gemm(**arrays, expected_m=40, out=target) is target
    synchronize(framework)
    assert full_calls == ["full"]
    assert_close_to_reference(out.astype(cp.float64), reference_gpu(**inputs), inputs["masked_m"])
    assert bool(cp.isnan(out[1, 17:]).all())  # rows past masked_m stay untouched


def test_a_call_that_differs_in_any_array_or_option_goes_the_whole_way(full_calls):
    import cupy as cp

    inputs, _ = framework_inputs("cupy", seed=23, full_calls=full_calls)
    gemm(**inputs, expected_m=40)
    gemm(**inputs, expected_m=41)  # another expected_m
    gemm(**inputs, expected_m=40, out_dtype="float32")  # another output dtype
    gemm(**{**inputs, "masked_m": inputs["masked_m"].copy()}, expected_m=40)  # another buffer
    gemm(**{**inputs, "b": inputs["b"][:, :128], "b_scale": inputs["b_scale"][:, :1]},
         expected_m=40)  # another n
    gemm(**inputs, expected_m=40, check_masked_m=True)  # the opt-in check reads masked_m
    gemm(**inputs, expected_m=40, stream=cp.cuda.Stream(non_blocking=True))  # another stream
    cp.cuda.runtime.deviceSynchronize()
    assert len(full_calls) == 7


def test_a_bad_call_after_a_good_one_still_raises():
    inputs, _ = framework_inputs("cupy", seed=24)
    gemm(**inputs, expected_m=40)
    with pytest.raises(TypeError, match="expected_m"):
        gemm(**inputs, expected_m=40.0)  # equal to 40, but not an int
    with pytest.raises(TypeError, match="scale_granularity_mnk"):
        gemm(**inputs, expected_m=40, scale_granularity_mnk=(1.0, 128, 128))


def test_another_kernel_family_is_never_served_a_stale_launch(full_calls, monkeypatch):
    inputs, _ = framework_inputs("cupy", seed=25, full_calls=full_calls)
    gemm(**inputs, expected_m=40)
    monkeypatch.setenv("CUGROUPGEMM_KERNEL", "portable")
    out = gemm(**inputs, expected_m=40, out_dtype="float32")
    gemm(**inputs, expected_m=40, out_dtype="float32")  # warm for the portable family
    import cupy as cp

    cp.cuda.runtime.deviceSynchronize()
    assert full_calls == ["full", "full"]
    assert_close_to_reference(out.astype(cp.float64), reference_gpu(**inputs), inputs["masked_m"])
