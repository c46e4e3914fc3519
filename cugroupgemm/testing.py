"""Random inputs and the float64 GPU reference, shared by tests, the demo and the benchmark.

Imports CuPy (a runtime dependency) lazily, and never a framework.
"""

from __future__ import annotations


def make_gemm_inputs(groups, m, n, k, masked_m, seed=0):
    """Fresh random CuPy inputs: normal data quantised with plain (non-power-of-two) scales.

    Row magnitudes vary over 2^-2..2^0 so per-token scales differ row to row. The data
    lives in the regime of upstream's tests (dequantised values of order 1), where
    DESIGN.md's element-wise bound |out - ref| <= 3e-2 (1 + |ref|) is meaningful: the
    tensor cores' fp8 accumulation error scales with the magnitude of the summed terms.
    """
    import cupy as cp

    from .quantize import per_block_cast_to_fp8, per_token_cast_to_fp8

    rng = cp.random.RandomState(seed)
    row_scale = cp.exp2(rng.randint(-2, 1, size=(groups, m, 1))).astype(cp.float32)
    a = rng.standard_normal((groups, m, k), dtype=cp.float32) * row_scale
    a_fp8, a_scale = per_token_cast_to_fp8(a, power_of_two_scale=False)
    del a
    b = rng.standard_normal((groups, n, k), dtype=cp.float32)
    b_fp8, b_scale = per_block_cast_to_fp8(b, power_of_two_scale=False)
    del b
    return dict(a=a_fp8, b=b_fp8, a_scale=a_scale, b_scale=b_scale,
                masked_m=cp.asarray(masked_m, dtype=cp.int32))


def reference_gpu(a, b, a_scale, b_scale, masked_m):
    """float64 result on the GPU, same definition as cugroupgemm.reference.masked_gemm."""
    import cupy as cp
    import numpy as np

    from cugroupgemm import reference

    table = cp.asarray(reference.fp8_e4m3_to_float64(np.arange(256, dtype=np.uint8)))
    groups, m, k = a.shape
    n = b.shape[1]
    out = cp.zeros((groups, m, n), dtype=cp.float64)
    rows = np.clip(cp.asnumpy(masked_m).astype(np.int64), 0, m)
    for g in range(groups):
        if rows[g] == 0:
            continue
        a_g = table[a[g, :rows[g]]] * cp.repeat(a_scale[g, :rows[g]].astype(cp.float64), 128, 1)
        b_scale_full = cp.repeat(cp.repeat(b_scale[g].astype(cp.float64), 128, 0), 128, 1)[:n]
        out[g, :rows[g]] = a_g @ (table[b[g]] * b_scale_full).T
    return out


def assert_close_to_reference(out, ref, masked_m):
    """DESIGN.md's bar on valid rows: calc_diff < 1e-3 per group and |out-ref| <= 3e-2(1+|ref|)."""
    import cupy as cp
    import numpy as np

    from cugroupgemm.reference import calc_diff

    m = ref.shape[1]
    for g, rows in enumerate(np.clip(cp.asnumpy(masked_m), 0, m)):
        got, want = out[g, :rows], ref[g, :rows]
        if rows == 0:
            continue
        assert not bool(cp.isnan(got).any()), f"group {g}: NaN in the output"
        diff = calc_diff(cp.asnumpy(got), cp.asnumpy(want))
        assert diff < 1e-3, f"group {g}: calc_diff {diff}"
        excess = cp.abs(got - want) - 3e-2 * (1 + cp.abs(want))
        assert float(excess.max()) <= 0, f"group {g}: max excess error {float(excess.max())}"


def to_cupy_float64(x):
    """A torch/JAX/CuPy result as a CuPy float64 array (bf16 decoded from its bits)."""
    import cupy as cp

    module = type(x).__module__.split(".")[0]
    if module == "torch":
        return cp.from_dlpack(x.float().contiguous()).astype(cp.float64)
    if module in ("jax", "jaxlib"):
        import jax.numpy as jnp

        return cp.from_dlpack(jnp.asarray(x, jnp.float32)).astype(cp.float64)
    if x.dtype.itemsize == 2 and x.dtype.kind not in "fiu":  # CuPy bfloat16 (ml_dtypes)
        return (x.view(cp.uint16).astype(cp.uint32) << 16).view(cp.float32).astype(cp.float64)
    return x.astype(cp.float64)
