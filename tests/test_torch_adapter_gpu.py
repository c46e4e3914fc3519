"""The torch adapter on a GPU: the custom ops against the eager call and the float64
reference, torch.compile(fullgraph=True), CUDA graph replay with new data and masked_m,
and opcheck on CUDA tensors."""

import numpy as np
import pytest
from conftest import (
    assert_close_to_reference,
    capture_torch_graph,
    make_gemm_inputs,
    reference_gpu,
    refill_torch_inputs,
    to_cupy_float64,
)

import cugroupgemm

torch = pytest.importorskip("torch")
from cugroupgemm import torch_ops  # noqa: E402
from cugroupgemm.bench_peers import torch_gemm_inputs  # noqa: E402

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="torch has no GPU here")]

POISON = -7.0
OPCHECK_TESTS = ("test_schema", "test_autograd_registration", "test_faketensor",
                 "test_aot_dispatch_dynamic")  # opcheck's default set


def gemm(**kwargs):
    return torch_ops.batch_deepgemm_fp8_nt_groupwise(**kwargs)


def test_functional_op_matches_eager_and_zeroes_rows_past_the_mask():
    masked = [37, 100, 0]
    inputs = make_gemm_inputs(3, 100, 256, 512, masked, seed=1)
    tensors = torch_gemm_inputs(inputs)
    got = gemm(**tensors, expected_m=60, out_dtype=torch.float32)
    eager = cugroupgemm.batch_deepgemm_fp8_nt_groupwise(**tensors, expected_m=60,
                                                        out_dtype=torch.float32)
    torch.cuda.synchronize()
    for g, rows in enumerate(masked):
        assert torch.equal(got[g, :rows], eager[g, :rows])
        assert not got[g, rows:].any()
    assert_close_to_reference(to_cupy_float64(got), reference_gpu(**inputs), inputs["masked_m"])


def test_out_variant_keeps_rows_past_the_mask():
    masked = [5, 64, 0, 17]
    inputs = make_gemm_inputs(4, 64, 128, 256, masked, seed=2)
    out = torch.full((4, 64, 128), POISON, dtype=torch.bfloat16, device="cuda")
    assert gemm(**torch_gemm_inputs(inputs), expected_m=16, out=out) is out
    torch.cuda.synchronize()
    for g, rows in enumerate(masked):
        assert (out[g, rows:] == POISON).all()
    assert_close_to_reference(to_cupy_float64(out), reference_gpu(**inputs), inputs["masked_m"])


def test_a_repeated_op_call_only_launches_and_is_still_correct(monkeypatch):
    masked = [5, 64]
    inputs = make_gemm_inputs(2, 64, 128, 256, masked, seed=3)
    tensors = torch_gemm_inputs(inputs)
    read, views = [], torch_ops._views
    monkeypatch.setattr(torch_ops, "_views", lambda *args, **kwargs: read.append(1)
                        or views(*args, **kwargs))
    out = torch.full((2, 64, 128), POISON, dtype=torch.float32, device="cuda")
    gemm(**tensors, expected_m=16, out=out)
    torch.cuda.synchronize()
    out.fill_(POISON)  # only the warm call can fill it again
    gemm(**tensors, expected_m=16, out=out)
    torch.cuda.synchronize()
    assert read == [1]  # the second call was warm
    assert_close_to_reference(to_cupy_float64(out), reference_gpu(**inputs), inputs["masked_m"])
    assert (out[0, 5:] == POISON).all()


@pytest.mark.parametrize("mode", [None, "reduce-overhead"])
def test_compiled_with_fullgraph_equals_eager(mode):
    def project(a, b, a_scale, b_scale, masked_m):
        y = gemm(a=a, b=b, a_scale=a_scale, b_scale=b_scale, masked_m=masked_m, expected_m=48)
        return y, torch.nn.functional.silu(y.float())

    compiled = torch.compile(project, fullgraph=True, mode=mode)
    rng = np.random.default_rng(3)
    for step in range(4):  # new data and new masked_m; reduce-overhead replays a graph
        masked = rng.integers(0, 97, size=4)
        tensors = torch_gemm_inputs(make_gemm_inputs(4, 96, 256, 512, masked, seed=30 + step))
        got, got_silu = (t.clone() for t in compiled(**tensors))
        eager = cugroupgemm.batch_deepgemm_fp8_nt_groupwise(**tensors, expected_m=48)
        torch.cuda.synchronize()
        for g, rows in enumerate(masked):
            assert torch.equal(got[g, :rows], eager[g, :rows]), f"step {step}, group {g}"
            assert not got[g, rows:].any()
        # NOTE: inductor fuses its own silu, not bit-identical to eager's kernel.
        torch.testing.assert_close(got_silu, torch.nn.functional.silu(got.float()))


def test_cuda_graph_replays_with_new_data_and_new_masked_m():
    groups, m, n, k = 3, 80, 256, 512
    static = torch_gemm_inputs(make_gemm_inputs(groups, m, n, k, [m] * groups, seed=4))
    static = {name: t.clone() for name, t in static.items()}
    out = torch.full((groups, m, n), POISON, dtype=torch.bfloat16, device="cuda")

    def step():
        gemm(**static, expected_m=40, out=out)
        return gemm(**static, expected_m=40, out_dtype=torch.float32)

    graph, functional = capture_torch_graph(step)
    rng = np.random.default_rng(5)
    for replay in range(4):
        masked = rng.integers(0, m + 1, size=groups)
        inputs = make_gemm_inputs(groups, m, n, k, masked, seed=40 + replay)
        refill_torch_inputs(static, inputs)
        out.fill_(POISON)
        graph.replay()
        torch.cuda.synchronize()
        reference = reference_gpu(**inputs)
        assert_close_to_reference(to_cupy_float64(out), reference, inputs["masked_m"])
        assert_close_to_reference(to_cupy_float64(functional), reference, inputs["masked_m"])
        for g, rows in enumerate(masked):
            assert (out[g, rows:] == POISON).all() and not functional[g, rows:].any()


@pytest.mark.parametrize("codes", ["float8_e4m3fn", "uint8"])
@pytest.mark.parametrize("variant", ["functional", "out"])
def test_opcheck_on_cuda(variant, codes):
    tensors = torch_gemm_inputs(make_gemm_inputs(2, 64, 128, 256, [64, 37], seed=6))
    for name in ("a", "b"):
        tensors[name] = tensors[name].view(getattr(torch, codes))
    args = tuple(tensors[name] for name in ("a", "b", "a_scale", "b_scale", "masked_m"))
    # NOTE: opcheck's schema test compares tensors with allclose, which torch has no fp8
    # kernel for; it runs on the uint8 codes (the same op and kernel), the others on both.
    skip = ("test_schema",) if codes == "float8_e4m3fn" else ()
    test_utils = tuple(name for name in OPCHECK_TESTS if name not in skip)
    if variant == "functional":
        torch.library.opcheck(torch.ops.cugroupgemm.masked_gemm, (*args, 32, torch.bfloat16),
                              test_utils=test_utils)
    else:
        out = torch.full((2, 64, 128), POISON, dtype=torch.bfloat16, device="cuda")
        torch.library.opcheck(torch.ops.cugroupgemm.masked_gemm_out, (*args, 32, out),
                              test_utils=test_utils)
