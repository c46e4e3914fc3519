"""The torch adapter without a GPU: fake (meta) implementations, opcheck, and tracing by
torch.compile(fullgraph=True) on meta tensors, where the fake implementations run."""

import pytest

torch = pytest.importorskip("torch")

from cugroupgemm import torch_ops  # noqa: E402
from cugroupgemm.errors import ArgumentTypeError, ArgumentValueError  # noqa: E402

G, M, N, K = 2, 64, 256, 512


def meta_args(device="meta", **overrides):
    args = dict(a=torch.empty((G, M, K), dtype=torch.float8_e4m3fn, device=device),
                b=torch.empty((G, N, K), dtype=torch.float8_e4m3fn, device=device),
                a_scale=torch.empty((G, M, K // 128), device=device),
                b_scale=torch.empty((G, N // 128, K // 128), device=device),
                masked_m=torch.empty((G,), dtype=torch.int32, device=device))
    args.update(overrides)
    return args


def gemm(*args, **kwargs):
    return torch_ops.batch_deepgemm_fp8_nt_groupwise(*args, **kwargs)


@pytest.mark.parametrize("out_dtype, want", [(None, torch.bfloat16), ("float32", torch.float32),
                                             (torch.float16, torch.float16)])
def test_fake_output_shape_and_dtype(out_dtype, want):
    out = gemm(**meta_args(), expected_m=16, out_dtype=out_dtype)
    assert out.shape == (G, M, N) and out.dtype == want and out.device.type == "meta"


def test_out_is_returned_as_is():
    out = torch.empty((G, M, N), dtype=torch.float32, device="meta")
    assert gemm(**meta_args(), expected_m=16, out=out) is out


@pytest.mark.parametrize("override, error, message", [
    ({"masked_m": torch.empty((G,), device="meta")}, ArgumentTypeError,
     r"^masked_m: expected dtype int32, got float32"),
    ({"b": torch.empty((G, N, K + 128), dtype=torch.float8_e4m3fn, device="meta")},
     ArgumentValueError, r"^b: expected shape \(groups=2, n, k=512\) to match a"),
    ({"a": torch.empty((G, K, M), dtype=torch.float8_e4m3fn, device="meta").transpose(1, 2)},
     ArgumentValueError, r"^a: expected K-major layout \(last stride 1\)"),
])
def test_fake_checks_are_the_eager_ones(override, error, message):
    with pytest.raises(error, match=message):
        gemm(**meta_args(**override), expected_m=16)


def test_bad_out_and_out_dtype_and_granularity():
    with pytest.raises(ArgumentValueError, match=r"^out: expected shape \(2, 64, 256\)"):
        gemm(**meta_args(), expected_m=16, out=torch.empty((G, M, N + 16), device="meta"))
    with pytest.raises(ArgumentTypeError, match=r"^out_dtype: expected bfloat16, float16 or "
                                                r"float32"):
        gemm(**meta_args(), expected_m=16, out_dtype=torch.int32)
    with pytest.raises(ArgumentValueError, match=r"^scale_granularity_mnk: only \(1, 128, "
                                                 r"128\)"):
        gemm(**meta_args(), expected_m=16, scale_granularity_mnk=(128, 128, 128))
    with pytest.raises(ArgumentValueError, match=r"^expected_m: expected an int in \[0, m=64\]"):
        gemm(**meta_args(), expected_m=65)


def test_cpu_tensors_are_refused_by_the_real_implementation():
    with pytest.raises(ArgumentValueError, match=r"^a: expected an array on a CUDA device, "
                                                 r"got one on CPU"):
        gemm(**meta_args(device="cpu"), expected_m=16)


@pytest.mark.parametrize("variant", ["functional", "out"])
def test_opcheck_on_meta(variant):
    args = tuple(meta_args().values())
    if variant == "functional":
        torch.library.opcheck(torch.ops.cugroupgemm.masked_gemm, (*args, 16, torch.bfloat16))
    else:
        out = torch.empty((G, M, N), dtype=torch.bfloat16, device="meta")
        torch.library.opcheck(torch.ops.cugroupgemm.masked_gemm_out, (*args, 16, out))


@pytest.mark.parametrize("dynamic", [False, True])
def test_compiles_with_fullgraph(dynamic):
    def project(a, b, a_scale, b_scale, masked_m, out):
        y = gemm(a, b, a_scale, b_scale, masked_m, 16, out_dtype="float32")
        gemm(a, b, a_scale, b_scale, masked_m, 16, out=out)
        return torch.nn.functional.silu(y) + out

    compiled = torch.compile(project, backend="aot_eager", fullgraph=True, dynamic=dynamic)
    result = compiled(**meta_args(), out=torch.empty((G, M, N), device="meta"))
    assert result.shape == (G, M, N) and result.dtype == torch.float32
