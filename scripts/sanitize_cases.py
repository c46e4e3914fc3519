"""The work compute-sanitizer watches (scripts/sanitize.sh): every kernel that runs on this
GPU on a small and a tail-heavy problem, each result checked; exit status 1 if one is wrong.

    python scripts/sanitize_cases.py            # the cases
    python scripts/sanitize_cases.py --canary   # a deliberate out-of-bounds write: the
                                                # proof that the sanitizer sees our kernels
    python scripts/sanitize_cases.py --unwritten-canary FAMILY OPERAND   # the GEMM of
                     # FAMILY reading an OPERAND (a, a_scale, ...) that nothing wrote
    python scripts/sanitize_cases.py --families  # the kernel families this GPU runs

Every array has its own cudaMalloc (no CuPy pool), so memcheck knows its exact bounds.
Every byte our kernels read, and every byte copied back to the host, was written by a host
copy or by our kernels (inputs drawn and quantised by NumPy, outputs poisoned from the
host, results checked on the host against the NumPy reference), never by another
library's kernel: initcheck instrumenting only our kernels then sees every write they
depend on, and reports nothing that is the checker's own.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
GEMM_CASES = [  # name, groups, m, n, k, masked_m
    ("small", 2, 64, 256, 256, [64, 17]),
    # m, n at awkward sizes (n % 128 = 16), masked_m at every tile edge and out of range.
    ("tail", 10, 130, 272, 384, [0, 1, 63, 64, 65, 127, 128, 130, -1, INT32_MAX]),
]
QUANT_CASES = [("per_token", (3, 129, 384), "float32"), ("per_token", (5, 256), "float16"),
               ("per_block", (2, 257, 300), "float32"), ("per_block", (130, 200), "float16")]


def out_variants():
    """(expected_m, out dtype, row padding): f32 and a 16-bit kind, and with the cases'
    m every config the sm90 heuristic picks: 8 claims whole 64 x 128 tiles, 120 (64 on
    the small case) claims 128 x 128 tiles on the small case and walks 64 x 128 tiles
    statically with the split round and turns on the tail case."""
    import numpy as np

    try:
        import ml_dtypes  # CuPy's bfloat16

        half = np.dtype(ml_dtypes.bfloat16)
    except ImportError:
        half = np.dtype(np.float16)
    return [(8, np.dtype(np.float32), 8), (120, half, 0)]


def run_gemm_case(family, inputs, expected_m, out_dtype, row_pad, forced_config=None):
    import contextlib

    import cupy as cp
    import numpy as np

    from cugroupgemm import batch_deepgemm_fp8_nt_groupwise as gemm
    from cugroupgemm import reference
    from cugroupgemm.testing import (
        PoisonedOutput,
        assert_close_to_reference,
        assert_only_valid_rows_written,
        kernel_family,
        sm90_config,
    )

    groups, m, _ = inputs["a"].shape
    poisoned = PoisonedOutput((groups, m, inputs["b"].shape[1]), out_dtype, row_pad=row_pad,
                              host_born=True)
    forcing = sm90_config(forced_config) if forced_config else contextlib.nullcontext()
    with kernel_family(family), forcing:
        gemm(**inputs, expected_m=expected_m, out=poisoned.out)
    cp.cuda.runtime.deviceSynchronize()
    bits = cp.asnumpy(poisoned.bits)
    host = {name: cp.asnumpy(array) for name, array in inputs.items()}
    out = poisoned.region(bits.view(out_dtype)).astype(np.float64)
    want = reference.masked_gemm(host["a"], host["b"], host["a_scale"], host["b_scale"],
                                 host["masked_m"])
    assert_close_to_reference(out, want, host["masked_m"])
    assert_only_valid_rows_written(poisoned, host["masked_m"], bits)


def gemm_cases():
    import dataclasses
    import functools

    from cugroupgemm.device import device_info
    from cugroupgemm.dtypes import OutKind
    from cugroupgemm.families import sm90
    from cugroupgemm.testing import make_gemm_inputs, runnable_families

    info = device_info(0)
    variants = [(family, None, family) for family in runnable_families(info)]
    if sm90.runs_on(info):  # (the default's picks: out_variants; the tail case's 45
        # tiles fill a quarter of one round, so its static walk splits them) the default
        # tile in clusters of two CTAs sharing b, with its pipelines taking turns in whole
        # tiles, and split with its tiles claimed
        pair = sm90.fitted_config(64, 128, info, pipes=2, cluster=2)
        claimed = sm90.fitted_config(64, 128, info, pipes=2, split_tail=True, dynamic=True)
        variants += [("sm90", pair, "sm90-pair"),
                     ("sm90", dataclasses.replace(pair, cluster=1, turns=True), "sm90-turns"),
                     ("sm90", claimed, "sm90-claimed-split")]
    for family, config, label in variants:
        for name, groups, m, n, k, masked in GEMM_CASES:
            inputs = make_gemm_inputs(groups, m, n, k, masked, seed=groups + m, host_born=True)
            for expected_m, out_dtype, row_pad in out_variants():
                expected_m = min(expected_m, m)  # 64 for the small case: still 128 rows
                yield (f"gemm {label} {name} expected_m={expected_m} {out_dtype.name}",
                       functools.partial(run_gemm_case, family, inputs, expected_m, out_dtype,
                                         row_pad, config))


def quantizer_cases():
    import cupy as cp
    import numpy as np

    from cugroupgemm import per_block_cast_to_fp8, per_token_cast_to_fp8
    from cugroupgemm import reference as ref

    for kind, shape, dtype in QUANT_CASES:
        for pow2 in (True, False):
            label = f"quantize {kind} {shape} {dtype} power_of_two={pow2}"

            def run(kind=kind, shape=shape, dtype=dtype, pow2=pow2):
                rng = np.random.default_rng(len(shape) + shape[-1])
                x = (rng.standard_normal(shape) * np.exp2(rng.integers(-8, 8, shape))).astype(dtype)
                quantize = per_token_cast_to_fp8 if kind == "per_token" else per_block_cast_to_fp8
                q, s = quantize(cp.asarray(x), power_of_two_scale=pow2)
                want_q, want_s = getattr(ref, f"{kind}_cast_to_fp8")(x.astype(np.float32), pow2)
                np.testing.assert_array_equal(cp.asnumpy(s), want_s)
                np.testing.assert_array_equal(cp.asnumpy(q), want_q)

            yield label, run


def canary():
    """The portable GEMM storing one row past the end of a buffer (validation bypassed):
    memcheck must report it. Only ever run under compute-sanitizer."""
    import cupy as cp

    from cugroupgemm import dlpack, dtypes
    from cugroupgemm.device import device_info
    from cugroupgemm.dtypes import OutKind
    from cugroupgemm.families import portable
    from cugroupgemm.launch import gemm_params, launch
    from cugroupgemm.problem import Problem
    from cugroupgemm.testing import make_gemm_inputs

    m, n, k = 64, 128, 128
    inputs = make_gemm_inputs(1, m, n, k, [m], seed=1)
    views = {name: dlpack.take(array, name, 1) for name, array in inputs.items()}
    short = cp.zeros((m - 1, n), dtype=cp.float32)  # one row short
    out = dlpack.TensorView(short.data.ptr, (1, m, n), (m * n, n, 1), dtypes.FLOAT32,
                            dlpack.KDL_CUDA, 0, False, short)
    problem = Problem(1, m, n, k, m, OutKind.F32)
    plan = portable.plan(problem, device_info(0))
    launch(plan, 0, cp.cuda.get_current_stream().ptr,
           gemm_params(problem, views["a"], views["b"], views["a_scale"], views["b_scale"],
                       views["masked_m"], out))
    cp.cuda.runtime.deviceSynchronize()


def unwritten_canary(family, operand):
    """The GEMM of ``family`` reading an ``operand`` that nothing wrote: what initcheck
    reports of it. Only ever run under compute-sanitizer."""
    import cupy as cp

    from cugroupgemm import batch_deepgemm_fp8_nt_groupwise as gemm
    from cugroupgemm.testing import kernel_family, make_gemm_inputs

    inputs = make_gemm_inputs(1, 64, 128, 128, [64], seed=1, host_born=True)
    inputs[operand] = cp.empty_like(inputs[operand])  # its own cudaMalloc: never written
    with kernel_family(family):
        gemm(**inputs, expected_m=64, out_dtype="float32")
    cp.cuda.runtime.deviceSynchronize()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--canary", action="store_true")
    parser.add_argument("--unwritten-canary", nargs=2, metavar=("FAMILY", "OPERAND"))
    parser.add_argument("--families", action="store_true")
    args = parser.parse_args()
    import cupy as cp

    # NOTE: the pool would carve arrays out of large chunks, hiding overruns inside them.
    cp.cuda.set_allocator(None)
    if args.canary:
        canary()
        return 0
    if args.families:
        from cugroupgemm.device import device_info
        from cugroupgemm.testing import runnable_families

        print(" ".join(runnable_families(device_info(0))))
        return 0
    if args.unwritten_canary:
        unwritten_canary(*args.unwritten_canary)
        return 0
    failures = 0
    for cases in (quantizer_cases(), gemm_cases()):
        for label, run in cases:
            try:
                run()
                print(f"ok    {label}", flush=True)
            except Exception:  # noqa: BLE001 - every case reports, then the run fails
                failures += 1
                print(f"FAIL  {label}\n{traceback.format_exc()}", flush=True)
    print(f"cases: {'all correct' if not failures else f'{failures} FAILED'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
