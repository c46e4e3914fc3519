"""Random inputs and the float64 GPU reference, shared by tests, the demo and the benchmark.

Imports CuPy (a runtime dependency) lazily, and never a framework.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os


def make_gemm_inputs(groups, m, n, k, masked_m, seed=0, host_born=False):
    """Fresh random CuPy inputs: normal data quantised with plain (non-power-of-two) scales.

    Row magnitudes vary over 2^-2..2^0 so per-token scales differ row to row. The data
    lives in the regime of upstream's tests (dequantised values of order 1), where
    DESIGN.md's element-wise bound |out - ref| <= 3e-2 (1 + |ref|) is meaningful: the
    tensor cores' fp8 accumulation error scales with the magnitude of the summed terms.
    ``host_born``: drawn and quantised by NumPy (cugroupgemm.reference's quantizers, which
    the GPU's match bit for bit) and copied to the device, so that no kernel wrote them:
    what initcheck can follow when it instruments only our kernels (scripts/sanitize.sh).
    """
    import cupy as cp
    import numpy as np

    from . import reference
    from .quantize import per_block_cast_to_fp8, per_token_cast_to_fp8

    if host_born:
        xp, rng = np, np.random.default_rng(seed)
        integers, quantize_rows, quantize_blocks = (rng.integers, reference.per_token_cast_to_fp8,
                                                    reference.per_block_cast_to_fp8)
    else:
        xp, rng = cp, cp.random.RandomState(seed)
        integers, quantize_rows, quantize_blocks = (rng.randint, per_token_cast_to_fp8,
                                                    per_block_cast_to_fp8)
    row_scale = xp.exp2(integers(-2, 1, size=(groups, m, 1))).astype(xp.float32)
    a = rng.standard_normal((groups, m, k), dtype=xp.float32) * row_scale
    a_fp8, a_scale = quantize_rows(a, power_of_two_scale=False)
    del a
    b = rng.standard_normal((groups, n, k), dtype=xp.float32)
    b_fp8, b_scale = quantize_blocks(b, power_of_two_scale=False)
    del b
    inputs = dict(a=a_fp8, b=b_fp8, a_scale=a_scale, b_scale=b_scale,
                  masked_m=xp.asarray(masked_m, dtype=xp.int32))
    return {name: cp.asarray(array) for name, array in inputs.items()}


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
    """DESIGN.md's bar on valid rows: calc_diff < 1e-3 per group and |out-ref| <= 3e-2(1+|ref|).
    out and ref: both CuPy or both NumPy arrays."""
    import cupy as cp
    import numpy as np

    from cugroupgemm.reference import calc_diff

    xp = cp.get_array_module(out)
    m = ref.shape[1]
    for g, rows in enumerate(np.clip(cp.asnumpy(masked_m), 0, m)):
        got, want = out[g, :rows], ref[g, :rows]
        if rows == 0:
            continue
        assert not bool(xp.isnan(got).any()), f"group {g}: NaN in the output"
        diff = calc_diff(cp.asnumpy(got), cp.asnumpy(want))
        assert diff < 1e-3, f"group {g}: calc_diff {diff}"
        excess = xp.abs(got - want) - 3e-2 * (1 + xp.abs(want))
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


# Poison: bit patterns no result of a finite GEMM holds (finite huge bf16 / f32 values,
# a non-canonical NaN in f16), so a test can tell written elements from untouched ones.
POISON_BITS = {2: 0x7E57, 4: 0x7E577E57}


class PoisonedOutput:
    """A (G, m, n) output view inside a larger CuPy buffer of poison bits.

    ``front`` poisoned elements come before the first row, ``back`` after the last, and
    each row is followed by ``row_pad`` more: every element a call must not write is in
    the buffer, so ``assert_only_valid_rows_written`` sees any stray store.
    """

    def __init__(self, shape, dtype, row_pad=0, front=256, back=4096, host_born=False):
        import cupy as cp
        import numpy as np

        dtype = np.dtype(dtype)
        groups, m, n = shape
        self.shape, self.row_pad, self.front = tuple(shape), row_pad, front
        size, bits = front + groups * m * (n + row_pad) + back, POISON_BITS[dtype.itemsize]
        kind = f"uint{8 * dtype.itemsize}"
        # host_born: poisoned by a copy from the host, not by a kernel (make_gemm_inputs)
        self.bits = cp.asarray(np.full(size, bits, kind)) if host_born else cp.full(size, bits, kind)
        self.out = self.region(self.bits.view(dtype))

    def region(self, whole):
        """The slice of ``whole`` (an array the size of the buffer) that ``out`` is."""
        groups, m, n = self.shape
        end = self.front + groups * m * (n + self.row_pad)
        return whole[self.front:end].reshape(groups, m, n + self.row_pad)[:, :, :n]


def assert_only_valid_rows_written(poisoned: PoisonedOutput, masked_m, bits=None):
    """Rows [0, clamp(masked_m[g], 0, m)) of every group were written; nothing else was.
    ``bits``: the buffer's contents if not ``poisoned.bits`` (a NumPy copy: checked on the
    host)."""
    import cupy as cp
    import numpy as np

    bits = poisoned.bits if bits is None else bits
    xp = cp.get_array_module(bits)
    m = poisoned.shape[1]
    valid = xp.zeros(bits.shape, dtype=xp.bool_)
    region = poisoned.region(valid)
    rows_of = np.asarray(masked_m) if xp is np else cp.asnumpy(cp.asarray(masked_m))
    for g, rows in enumerate(np.clip(rows_of.astype(np.int64), 0, m)):
        region[g, :rows] = True
    untouched = bits == POISON_BITS[bits.dtype.itemsize]
    stray = ~untouched & ~valid
    if bool(stray.any()):
        first = int(xp.argmax(stray))
        raise AssertionError(f"{int(stray.sum())} elements outside the valid rows were written; "
                             f"the first at buffer index {first} (out starts at "
                             f"{poisoned.front}, rows padded by {poisoned.row_pad})")
    missing = int((untouched & valid).sum())
    assert missing == 0, f"{missing} elements of valid rows still hold the poison"


F16_PATH = "portable-f16"  # the portable kernel's sm_80 path (e4m3 -> f16 with integer ops)


def runnable_families(info) -> list[str]:
    """Every kernel variant that runs on ``info``: the families, plus the portable kernel's
    sm_80 conversion path wherever the portable family runs."""
    from . import dispatch

    names = [name for name, family in dispatch.families().items() if family.runs_on(info)]
    return names + ([F16_PATH] if "portable" in names else [])


@contextlib.contextmanager
def sm90_config(config):
    """Make the sm90 family plan every call with ``config`` (an Sm90Config; the out kind
    stays the call's) for the duration: GPU tests, tuning and sanitizer cases."""
    from .families import sm90

    saved = sm90.FAMILY
    sm90.FAMILY = dataclasses.replace(saved, plan=functools.partial(sm90.plan, config=config))
    try:
        yield
    finally:
        sm90.FAMILY = saved


@contextlib.contextmanager
def kernel_family(name: str):
    """Force a kernel family (CUGROUPGEMM_KERNEL) for the duration; ``F16_PATH`` forces the
    portable kernel's integer e4m3 -> f16 conversion (what sm_80 runs) on this GPU."""
    from .families import portable

    saved_env, saved_family = os.environ.get("CUGROUPGEMM_KERNEL"), portable.FAMILY
    os.environ["CUGROUPGEMM_KERNEL"] = "portable" if name == F16_PATH else name
    if name == F16_PATH:
        portable.FAMILY = dataclasses.replace(
            saved_family, plan=functools.partial(portable.plan, native_fp8_mma=False))
    try:
        yield
    finally:
        portable.FAMILY = saved_family
        if saved_env is None:
            os.environ.pop("CUGROUPGEMM_KERNEL", None)
        else:
            os.environ["CUGROUPGEMM_KERNEL"] = saved_env
