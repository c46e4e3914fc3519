"""``python -m cugroupgemm demo``: the README example on this GPU, against the reference."""

from __future__ import annotations


def run_demo() -> int:
    import cupy as cp

    from . import batch_deepgemm_fp8_nt_groupwise, per_block_cast_to_fp8, per_token_cast_to_fp8
    from .device import device_info
    from .dispatch import choose_family
    from .testing import assert_close_to_reference, reference_gpu

    m, n, k, groups = 128, 2048, 4096, 2
    a = cp.random.rand(groups, m, k, dtype=cp.float32)
    b = cp.random.rand(groups, n, k, dtype=cp.float32)
    masked_m = cp.random.randint(0, m, size=groups, dtype=cp.int32)
    a_fp8, a_scale = per_token_cast_to_fp8(a)  # CuPy: e4m3 bits in uint8
    b_fp8, b_scale = per_block_cast_to_fp8(b)
    expected_m = min(int(masked_m.mean()) + 1, m)
    out = batch_deepgemm_fp8_nt_groupwise(a_fp8, b_fp8, a_scale, b_scale, masked_m, expected_m,
                                          out_dtype="float32")
    info = device_info(cp.cuda.Device().id)
    print(f"{info.name} (sm_{info.arch}): family {choose_family(info).name}, "
          f"out {out.shape} {out.dtype}, masked_m {masked_m.tolist()}")
    ref = reference_gpu(a_fp8, b_fp8, a_scale, b_scale, masked_m)
    from .reference import calc_diff

    for g, rows in enumerate(masked_m.tolist()):
        got, want = out[g, :rows].astype(cp.float64), ref[g, :rows]
        error = float(cp.abs(got - want).max()) if rows else 0.0
        print(f"group {g}: {rows} rows, calc_diff {calc_diff(got.get(), want.get()):.2e}, "
              f"max |out - ref| {error:.3e}")
    try:
        assert_close_to_reference(out.astype(cp.float64), ref, masked_m)
    except AssertionError as exc:
        print(f"FAIL: {exc}")
        return 1
    print("OK: matches the float64 reference")
    return 0
