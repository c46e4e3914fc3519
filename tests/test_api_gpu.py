"""The GEMM on a GPU: torch, JAX and CuPy callers, the masked contract, dtypes, streams."""

import dataclasses

import numpy as np
import pytest
from conftest import (
    assert_close_to_reference,
    make_gemm_inputs,
    reference_gpu,
    to_cupy_float64,
)

import cugroupgemm
from cugroupgemm import batch_deepgemm_fp8_nt_groupwise as gemm
from cugroupgemm.bench_adapters import jax_gemm_inputs
from cugroupgemm.bench_peers import torch_gemm_inputs as torch_inputs

pytestmark = pytest.mark.gpu

POISON_BITS = 0x7E57  # a finite bf16/f16 pattern no result row should hold by chance


def expected_m_of(masked_m, m):
    return min(int(np.mean(masked_m)) + 1, m)


SHAPES = [  # groups, m, n, k, masked_m
    (1, 1, 128, 128, [1]),
    (2, 100, 256, 512, [37, 100]),  # m not a multiple of 64, one full group
    (3, 64, 144, 256, [0, 64, 17]),  # empty group, n not a multiple of 128
    (4, 257, 384, 384, [256, 1, 129, 257]),  # rows at tile edges
    (2, 1000, 512, 1024, [999, 513]),
    (5, 8, 128, 640, [3, 8, 0, 5, 7]),
]


@pytest.mark.parametrize("groups, m, n, k, masked", SHAPES)
def test_cupy_inputs_match_the_reference(groups, m, n, k, masked):
    import cupy as cp

    inputs = make_gemm_inputs(groups, m, n, k, masked, seed=groups * 7 + m)
    out = gemm(**inputs, expected_m=expected_m_of(masked, m), out_dtype="float32")
    assert isinstance(out, cp.ndarray) and out.dtype == cp.float32 and out.shape == (groups, m, n)
    cp.cuda.runtime.deviceSynchronize()
    assert_close_to_reference(to_cupy_float64(out), reference_gpu(**inputs), inputs["masked_m"])


@pytest.mark.parametrize("groups, m, n, k, masked", SHAPES[1:4])
def test_torch_inputs_give_torch_bf16_results(groups, m, n, k, masked):
    import torch

    inputs = make_gemm_inputs(groups, m, n, k, masked, seed=11)
    out = gemm(**torch_inputs(inputs), expected_m=expected_m_of(masked, m))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16
    torch.cuda.synchronize()
    assert_close_to_reference(to_cupy_float64(out), reference_gpu(**inputs), inputs["masked_m"])


@pytest.mark.parametrize("groups, m, n, k, masked", SHAPES[1:4])
def test_jax_inputs_give_jax_results(groups, m, n, k, masked):
    import jax
    import jax.numpy as jnp

    inputs = make_gemm_inputs(groups, m, n, k, masked, seed=12)
    out = gemm(**jax_gemm_inputs(inputs), expected_m=expected_m_of(masked, m),
               out_dtype=jnp.bfloat16)
    assert isinstance(out, jax.Array) and out.dtype == jnp.bfloat16 and out.shape == (groups, m, n)
    assert_close_to_reference(to_cupy_float64(out), reference_gpu(**inputs), inputs["masked_m"])


def test_jax_out_is_refused():
    import jax.numpy as jnp

    inputs = jax_gemm_inputs(make_gemm_inputs(1, 16, 128, 128, [4]))
    with pytest.raises(TypeError, match=r"^out: JAX arrays are immutable"):
        gemm(**inputs, expected_m=4, out=jnp.zeros((1, 16, 128), jnp.bfloat16))


@pytest.mark.parametrize("dtype_name", ["bfloat16", "float16", "float32"])
def test_out_dtypes_and_poisoned_rows_past_the_mask_stay_untouched(dtype_name):
    import torch

    dtype = getattr(torch, dtype_name)
    masked = [0, 1, 63, 64, 65, 130]
    inputs = make_gemm_inputs(6, 130, 272, 256, masked, seed=3)
    out = torch.empty((6, 130, 272), dtype=dtype, device="cuda")
    bits = out.view(torch.int16 if out.element_size() == 2 else torch.int32)
    bits.fill_(POISON_BITS)
    result = gemm(**torch_inputs(inputs), expected_m=60, out=out)
    assert result is out
    torch.cuda.synchronize()
    assert_close_to_reference(to_cupy_float64(out), reference_gpu(**inputs), inputs["masked_m"])
    for g, rows in enumerate(masked):
        assert bool((bits[g, rows:] == POISON_BITS).all()), f"group {g}: rows past {rows} written"
        assert not bool((bits[g, :rows] == POISON_BITS).any()), f"group {g}: valid row unwritten"


def test_out_may_be_a_strided_view():
    import torch

    inputs = make_gemm_inputs(2, 40, 128, 256, [40, 13], seed=4)
    backing = torch.full((2, 48, 136), 7.0, dtype=torch.float32, device="cuda")
    out = backing[:, 4:44, :128]
    gemm(**torch_inputs(inputs), expected_m=30, out=out)
    torch.cuda.synchronize()
    assert_close_to_reference(to_cupy_float64(out.contiguous()), reference_gpu(**inputs),
                              inputs["masked_m"])
    assert bool((backing[:, :4] == 7).all() and (backing[:, 44:] == 7).all())
    assert bool((backing[:, :, 128:] == 7).all())
    assert bool((out[1, 13:] == 7).all())


def test_mn_major_and_broadcast_scales():
    import cupy as cp

    inputs = make_gemm_inputs(3, 96, 256, 384, [96, 50, 7], seed=5)
    mn_major = cp.ascontiguousarray(inputs["a_scale"].transpose(0, 2, 1)).transpose(0, 2, 1)
    assert mn_major.strides[1] == 4  # (G, m, kb) stored as (G, kb, m)
    inputs["a_scale"] = mn_major
    shared_b_scale = cp.broadcast_to(inputs["b_scale"][:1], inputs["b_scale"].shape)
    inputs["b_scale"] = shared_b_scale  # zero group stride
    out = gemm(**inputs, expected_m=64, out_dtype="float32")
    cp.cuda.runtime.deviceSynchronize()
    assert_close_to_reference(out.astype(cp.float64), reference_gpu(**inputs), inputs["masked_m"])


def test_masked_m_out_of_range_is_clamped_and_the_opt_in_check_raises():
    import torch

    masked = [-5, 2**31 - 1, 70, 0]
    inputs = make_gemm_inputs(4, 64, 128, 128, masked, seed=6)
    guard = torch.full((5, 64, 128), 1.0, dtype=torch.float32, device="cuda")
    out = guard[:4]
    out.fill_(3.0)
    gemm(**torch_inputs(inputs), expected_m=32, out=out)
    torch.cuda.synchronize()
    assert bool((out[0] == 3).all()) and bool((out[3] == 3).all())
    assert bool((guard[4] == 1).all()), "wrote past the last group"
    assert_close_to_reference(to_cupy_float64(out), reference_gpu(**inputs), inputs["masked_m"])
    with pytest.raises(cugroupgemm.MaskedMError,
                       match=r"^masked_m: expected every value in \[0, m=64\], got group 0: -5, "
                             r"group 1: 2147483647, group 2: 70"):
        gemm(**torch_inputs(inputs), expected_m=32, check_masked_m=True)


def test_torch_side_stream_orders_after_the_producer():
    import torch

    inputs = make_gemm_inputs(2, 256, 512, 1024, [256, 200], seed=8)
    ref = reference_gpu(**inputs)
    tensors = torch_inputs(inputs)
    side = torch.cuda.Stream()
    a_late = torch.empty_like(tensors["a"].view(torch.uint8))
    with torch.cuda.stream(side):
        torch.cuda._sleep(50_000_000)  # a slow producer: the copy below lands late
        a_late.copy_(tensors["a"].view(torch.uint8))
        out = gemm(**{**tensors, "a": a_late.view(torch.float8_e4m3fn)}, expected_m=228)
    side.synchronize()
    assert_close_to_reference(to_cupy_float64(out), ref, inputs["masked_m"])


@pytest.mark.parametrize("explicit_stream", [False, True])
def test_torch_tensors_skip_dlpack_on_the_current_stream(monkeypatch, explicit_stream):
    """On torch's current stream the views are read off the tensors (host cost); with
    stream= another stream, DLPack's handshake orders torch's pending work before it."""
    import torch

    from cugroupgemm import dlpack

    inputs = make_gemm_inputs(2, 64, 256, 512, [64, 17], seed=10)
    tensors = torch_inputs(inputs)
    taken, take = [], dlpack.take
    monkeypatch.setattr(dlpack, "take",
                        lambda obj, name, stream: taken.append(name) or take(obj, name, stream))
    stream = {"stream": torch.cuda.Stream()} if explicit_stream else {}
    out = gemm(**tensors, expected_m=32, out_dtype="float32", **stream)
    torch.cuda.synchronize()
    assert sorted(taken) == (sorted(tensors) if explicit_stream else [])
    assert_close_to_reference(to_cupy_float64(out), reference_gpu(**inputs), inputs["masked_m"])


@pytest.mark.parametrize("explicit_stream", [False, True])
def test_cupy_arrays_skip_dlpack_on_the_current_stream(monkeypatch, explicit_stream):
    """The same for CuPy: on CuPy's current stream the views are read off the arrays."""
    import cupy as cp

    from cugroupgemm import dlpack

    inputs = make_gemm_inputs(2, 64, 256, 512, [64, 17], seed=11)
    taken, take = [], dlpack.take
    monkeypatch.setattr(dlpack, "take",
                        lambda obj, name, stream: taken.append(name) or take(obj, name, stream))
    stream = {"stream": cp.cuda.Stream(non_blocking=True)} if explicit_stream else {}
    out = gemm(**inputs, expected_m=32, out_dtype="float32", **stream)
    cp.cuda.runtime.deviceSynchronize()
    assert sorted(taken) == (sorted(inputs) if explicit_stream else [])
    assert_close_to_reference(out.astype(cp.float64), reference_gpu(**inputs), inputs["masked_m"])


def cupy_arrays():
    import cupy as cp

    base = cp.arange(4 * 6 * 256, dtype=cp.float32).reshape(4, 6, 256)
    yield "contiguous", base
    yield "transposed", base.transpose(0, 2, 1)
    yield "sliced with an offset", base[1:, 2:5, 128:]
    yield "zero stride", cp.broadcast_to(base[:1], (3, 6, 256))
    yield "one element", base[0, 0, :1]
    yield "empty", base[:0]
    for dtype in (cp.uint8, cp.int32, cp.float16, cp.float64):
        yield cp.dtype(dtype).name, base[:, :, :128].astype(dtype)


def test_direct_cupy_views_equal_the_dlpack_views():
    from cugroupgemm import dlpack, intake

    fields = ("ptr", "shape", "strides", "dtype", "device_type", "device_id", "readonly")
    for name, array in cupy_arrays():
        direct = intake._direct_cupy_view(array, array.data.device_id)
        via_dlpack = dlpack.take(array, "x", None)
        checked = fields[1:] if array.size == 0 else fields  # DLPack may null an empty one
        assert ({f: getattr(direct, f) for f in checked}
                == {f: getattr(via_dlpack, f) for f in checked}), name
        assert direct.owner is array


def test_only_cupy_arrays_of_known_dtypes_and_whole_element_strides_skip_dlpack():
    import cupy as cp

    from cugroupgemm import intake

    odd = cp.lib.stride_tricks.as_strided(cp.zeros(64, dtype=cp.int32), (7,), (6,))
    for array in (cp.zeros(4, dtype=cp.int16), odd):
        assert intake._direct_cupy_view(array, array.data.device_id) is None
    assert intake._direct_cupy_view(cp.zeros(4, dtype=cp.int32), 99) is None


def test_explicit_stream_argument_wins():
    import cupy as cp

    inputs = make_gemm_inputs(1, 32, 128, 256, [32], seed=9)
    stream = cp.cuda.Stream(non_blocking=True)
    out = gemm(**inputs, expected_m=32, out_dtype="float32", stream=stream)
    stream.synchronize()
    assert_close_to_reference(out.astype(cp.float64), reference_gpu(**inputs), inputs["masked_m"])


def test_sm80_conversion_path_is_correct_on_this_gpu(monkeypatch):
    """The fp8 -> f16 register path (what sm_80 runs), checked here by forcing it."""
    import functools

    import cupy as cp

    from cugroupgemm.families import portable

    forced = dataclasses.replace(portable.FAMILY,
                                 plan=functools.partial(portable.plan, native_fp8_mma=False))
    monkeypatch.setattr(portable, "FAMILY", forced)
    masked = [77, 128, 5]
    inputs = make_gemm_inputs(3, 128, 256, 512, masked, seed=10)
    out = gemm(**inputs, expected_m=70, out_dtype="float32")
    cp.cuda.runtime.deviceSynchronize()
    assert_close_to_reference(out.astype(cp.float64), reference_gpu(**inputs), inputs["masked_m"])


def test_forcing_an_unknown_family_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("CUGROUPGEMM_KERNEL", "sm70")
    inputs = make_gemm_inputs(1, 16, 128, 128, [4])
    with pytest.raises(cugroupgemm.UnsupportedDeviceError, match=r"CUGROUPGEMM_KERNEL='sm70': "
                                                                  r"expected one of portable"):
        gemm(**inputs, expected_m=4)


def test_upstream_example_with_torch():
    """The spec's example, as written there (quantisers included), against the reference."""
    import torch

    from cugroupgemm import per_block_cast_to_fp8, per_token_cast_to_fp8

    m, n, k, group_size = 128, 2048, 4096, 2
    a = torch.rand((group_size, m, k), device="cuda", dtype=torch.float32)
    b = torch.rand((group_size, n, k), device="cuda", dtype=torch.float32)
    masked_m = torch.randint(0, m, (group_size,), device="cuda", dtype=torch.int32)
    a_fp8, a_scale = per_token_cast_to_fp8(a)
    b_fp8, b_scale = per_block_cast_to_fp8(b)
    expected_m = min(int(masked_m.float().mean()) + 1, m)
    result = gemm(a_fp8, b_fp8, a_scale, b_scale, masked_m, expected_m, out_dtype=torch.bfloat16)
    assert result.shape == (2, 128, 2048) and a_fp8.dtype == torch.float8_e4m3fn
    import cupy as cp

    ref = reference_gpu(cp.from_dlpack(a_fp8.view(torch.uint8)), cp.from_dlpack(
        b_fp8.view(torch.uint8)), cp.from_dlpack(a_scale), cp.from_dlpack(b_scale),
        cp.from_dlpack(masked_m))
    assert_close_to_reference(to_cupy_float64(result), ref, cp.from_dlpack(masked_m))


UPSTREAM_GRID = [(g, m, n, k) for g in (1, 4, 8, 64) for m in (128, 256, 512, 1024)
                 for n, k in ((128, 512), (512, 128), (4096, 7168), (7168, 2048))]


@pytest.mark.parametrize("groups, m, n, k", UPSTREAM_GRID)
def test_upstream_test_grid(groups, m, n, k):
    import torch

    rng = np.random.default_rng(groups * 1000 + m + n)
    masked = rng.integers(0, m, size=groups)
    inputs = make_gemm_inputs(groups, m, n, k, masked, seed=int(masked.sum()) % 1000)
    out = gemm(**torch_inputs(inputs), expected_m=expected_m_of(masked, m))
    torch.cuda.synchronize()
    assert_close_to_reference(to_cupy_float64(out), reference_gpu(**inputs), inputs["masked_m"])
