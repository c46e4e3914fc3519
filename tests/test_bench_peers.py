"""The peers' preparation on CPU torch tensors: layouts and results match the reference.

cuBLASLt's block-wise ``torch._scaled_mm`` exists only on CUDA, so it is replaced here by a
model of what it computes with the layouts it demands; the GPU run checks the real one.
"""

import sys

import numpy as np
import pytest

from cugroupgemm import bench_peers, reference
from cugroupgemm.bench_shapes import Shape

torch = pytest.importorskip("torch")

SHAPE = Shape("test", 3, 40, 256, 384, 20)
MASKED = np.array([20, 0, 33], dtype=np.int32)


@pytest.fixture(scope="module")
def case():
    rng = np.random.default_rng(1)
    a_bits, a_scale = reference.per_token_cast_to_fp8(
        rng.standard_normal((SHAPE.groups, SHAPE.m, SHAPE.k)).astype(np.float32), False)
    b_bits, b_scale = reference.per_block_cast_to_fp8(
        rng.standard_normal((SHAPE.groups, SHAPE.n, SHAPE.k)).astype(np.float32), False)
    inputs = dict(a=a_bits, b=b_bits, a_scale=a_scale, b_scale=b_scale, masked_m=MASKED)
    return bench_peers.Case(SHAPE, MASKED, [inputs])  # NumPy arrays speak DLPack too


def assert_matches_reference(prepared, case):
    inputs = case.inputs[0]
    want = reference.masked_gemm(inputs["a"], inputs["b"], inputs["a_scale"],
                                 inputs["b_scale"], MASKED)
    prepared.call(0)
    for g, rows in enumerate(MASKED):
        got = prepared.valid_rows(g)
        assert got.shape == (rows, SHAPE.n)
        if rows:
            assert reference.calc_diff(got, want[g, :rows]) < 1e-4


def blockwise_scaled_mm(a, b, scale_a, scale_b, out_dtype):
    """What cuBLASLt computes, given the operand and scale layouts it accepts."""
    assert a.stride(1) == 1 and b.stride(0) == 1  # row-major a, column-major b
    m, k = a.shape
    n = b.shape[1]
    assert scale_a.shape == (m, k // 128) and scale_a.stride(0) == 1  # outer-dim-major
    assert scale_b.shape == (k // 128, n // 128) and scale_b.stride(0) == 1
    out = torch.zeros((m, n), dtype=torch.float64)
    for kb in range(k // 128):
        block = a[:, kb * 128:(kb + 1) * 128].double() @ b[kb * 128:(kb + 1) * 128].double()
        out += block * scale_a[:, kb:kb + 1].double() * scale_b[kb].double().repeat_interleave(
            128)[None, :n]
    return out.to(out_dtype)


def test_looped_scaled_mm_passes_the_layouts_cublaslt_wants(case, monkeypatch):
    monkeypatch.setattr(torch, "_scaled_mm", blockwise_scaled_mm)
    assert_matches_reference(bench_peers._prepare_looped_scaled_mm(case), case)


def test_bf16_bmm_on_dequantised_inputs(case):
    assert_matches_reference(bench_peers._prepare_bf16_bmm(case), case)


def test_deepgemm_gets_its_tuple_arguments(case, monkeypatch):
    def masked_gemm(a, b, out, masked_m, expected_m):
        assert expected_m == SHAPE.expected_m and masked_m.tolist() == MASKED.tolist()
        for g in range(out.shape[0]):
            out[g] = blockwise_scaled_mm(a[0][g], b[0][g].t(), a[1][g].t().contiguous().t(),
                                         b[1][g].t(), out.dtype)

    module = type(bench_peers)("deep_gemm")
    module.m_grouped_fp8_gemm_nt_masked = masked_gemm
    monkeypatch.setitem(sys.modules, "deep_gemm", module)
    assert_matches_reference(bench_peers._prepare_deepgemm(case), case)


def test_torch_without_cuda_is_a_reason_to_skip():
    if not torch.cuda.is_available():
        assert bench_peers.torch_missing() == "torch sees no CUDA device"
