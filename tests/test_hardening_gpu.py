"""Hardening on the GPU (issue 5): nothing is written out of bounds, non-finite data goes
only where IEEE sends it, huge outputs, threads, processes, streams, graphs, and errors
raised by the GPU itself. docs/hardening.md says what is tested where.

Outputs are poisoned buffers with guards (cugroupgemm.testing.PoisonedOutput); inputs are
fresh random data (make_gemm_inputs) checked against the float64 reference.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    assert_close_to_reference,
    make_gemm_inputs,
    reference_gpu,
    to_cupy_float64,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cugroupgemm
from cugroupgemm import api, build, dispatch, frameworks, warm_calls
from cugroupgemm import batch_deepgemm_fp8_nt_groupwise as gemm
from cugroupgemm.device import device_info
from cugroupgemm.reference import fp8_e4m3_to_float64
from cugroupgemm.testing import (
    F16_PATH,
    POISON_BITS,
    PoisonedOutput,
    assert_only_valid_rows_written,
    kernel_family,
    runnable_families,
)

pytestmark = pytest.mark.gpu

ROOT = Path(__file__).resolve().parents[1]
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
E4M3_NAN, E4M3_NEG_NAN = 0x7F, 0xFF
OUT_DTYPES = ["bfloat16", "float16", "float32"]
FAMILIES = ["portable", "sm90"]


def skip_unless_runnable(name: str):
    if name not in runnable_families(device_info(0)):
        pytest.skip(f"the {name} kernels do not run on {device_info(0).name}")


@pytest.fixture(params=FAMILIES)
def family(request):
    skip_unless_runnable(request.param)
    with kernel_family(request.param):
        yield request.param


def numpy_dtype(name: str):
    if name == "bfloat16":
        return pytest.importorskip("ml_dtypes").bfloat16
    return np.dtype(name)


def snapshot(inputs: dict):
    """Byte copies of the inputs, to prove a call never writes them."""
    import cupy as cp

    return {name: cp.array(array, order="C").view(cp.uint8) for name, array in inputs.items()}


def assert_unchanged(inputs: dict, before: dict):
    for name, array in snapshot(inputs).items():
        assert bool((array == before[name]).all()), f"{name} was written"


def fresh_build_state(monkeypatch, cache_dir):
    """An empty disk cache and empty in-process caches (restored after the test)."""
    monkeypatch.setenv("CUGROUPGEMM_CACHE_DIR", str(cache_dir))
    monkeypatch.setattr(build, "_memory_cache", {})
    monkeypatch.setattr(build, "_loaded", {})


def count_compiles(monkeypatch) -> list:
    compiled, real = [], build._compile_now
    monkeypatch.setattr(build, "_compile_now", lambda spec: compiled.append(spec) or real(spec))
    return compiled


# ---------------------------------------------------------------------------------------
# Random problems against the reference (hypothesis, few examples, small shapes).

MASKED_EDGES = [INT32_MIN, -1, 0, INT32_MAX]


@st.composite
def problems(draw):
    groups = draw(st.integers(1, 4))
    m = draw(st.integers(1, 200))
    masked = draw(st.lists(st.one_of(st.integers(0, m), st.sampled_from(MASKED_EDGES + [m, m + 1])),
                           min_size=groups, max_size=groups))
    return dict(groups=groups, m=m, n=16 * draw(st.integers(1, 25)),
                k=128 * draw(st.integers(1, 5)), masked=masked,
                expected_m=draw(st.integers(0, m)), out_dtype=draw(st.sampled_from(OUT_DTYPES)),
                given_out=draw(st.booleans()), row_pad=draw(st.sampled_from([0, 8, 24])),
                layout=draw(st.sampled_from(["compact", "padded", "mn_major_scales",
                                             "broadcast_b_scale"])),
                seed=draw(st.integers(0, 2**16)))


def lay_out(inputs: dict, layout: str) -> dict:
    """The same values in another legal layout; padding holds e4m3 NaN or float NaN."""
    import cupy as cp

    inputs = dict(inputs)
    if layout == "padded":  # rows and groups of a, b padded; the padding is NaN
        for name in ("a", "b"):
            g, rows, k = inputs[name].shape
            padded = cp.full((g, rows + 3, k + 32), E4M3_NAN, dtype=cp.uint8)
            padded[:, :rows, :k] = inputs[name]
            inputs[name] = padded[:, :rows, :k]
    elif layout == "mn_major_scales":
        for name in ("a_scale", "b_scale"):
            inputs[name] = cp.ascontiguousarray(inputs[name].transpose(0, 2, 1)).transpose(0, 2, 1)
    elif layout == "broadcast_b_scale":
        inputs["b_scale"] = cp.broadcast_to(inputs["b_scale"][:1], inputs["b_scale"].shape)
    return inputs


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(problem=problems())
def test_random_problems_match_the_reference(family, problem):
    import cupy as cp

    p = problem
    inputs = lay_out(make_gemm_inputs(p["groups"], p["m"], p["n"], p["k"], p["masked"],
                                      seed=p["seed"]), p["layout"])
    before = snapshot(inputs)
    shape = (p["groups"], p["m"], p["n"])
    if p["given_out"]:
        poisoned = PoisonedOutput(shape, numpy_dtype(p["out_dtype"]), row_pad=p["row_pad"])
        assert gemm(**inputs, expected_m=p["expected_m"], out=poisoned.out) is poisoned.out
        out = poisoned.out
    else:
        out = gemm(**inputs, expected_m=p["expected_m"], out_dtype=p["out_dtype"])
        assert out.shape == shape and out.dtype == numpy_dtype(p["out_dtype"])
    cp.cuda.runtime.deviceSynchronize()
    assert_close_to_reference(to_cupy_float64(out), reference_gpu(**inputs), inputs["masked_m"])
    if p["given_out"]:
        assert_only_valid_rows_written(poisoned, inputs["masked_m"])
    assert_unchanged(inputs, before)


# ---------------------------------------------------------------------------------------
# masked_m values on the device.

@pytest.mark.parametrize("out_dtype", OUT_DTYPES)
def test_masked_m_extremes_write_only_valid_rows_and_the_opt_in_check_raises(family, out_dtype,
                                                                            monkeypatch):
    import cupy as cp

    m, n, k = 130, 272, 256
    masked = [INT32_MIN, -1, 0, 1, 63, 64, 65, 127, 128, m - 1, m, m + 1, INT32_MAX]
    inputs = make_gemm_inputs(len(masked), m, n, k, masked, seed=len(out_dtype))
    before = snapshot(inputs)
    for expected_m in (8, 100):  # 64-row and 128-row tiles
        poisoned = PoisonedOutput((len(masked), m, n), numpy_dtype(out_dtype))
        gemm(**inputs, expected_m=expected_m, out=poisoned.out)
        cp.cuda.runtime.deviceSynchronize()
        assert_only_valid_rows_written(poisoned, masked)
        assert_close_to_reference(to_cupy_float64(poisoned.out), reference_gpu(**inputs),
                                  inputs["masked_m"])
    assert_unchanged(inputs, before)

    poisoned = PoisonedOutput((len(masked), m, n), numpy_dtype(out_dtype))
    listing = r"group 0: -2147483648, group 1: -1, group 11: 131, group 12: 2147483647$"
    with pytest.raises(cugroupgemm.MaskedMError,
                       match=r"^masked_m: .*\[0, m=130\], got " + listing):
        gemm(**inputs, expected_m=8, out=poisoned.out, check_masked_m=True)
    monkeypatch.setenv("CUGROUPGEMM_CHECK_MASKED_M", "1")
    with pytest.raises(cugroupgemm.MaskedMError, match=listing):
        gemm(**inputs, expected_m=8, out=poisoned.out)
    cp.cuda.runtime.deviceSynchronize()
    assert_only_valid_rows_written(poisoned, [0] * len(masked))  # raised before any launch


# ---------------------------------------------------------------------------------------
# Non-finite data.

def embed(array, padded_shape, fill):
    """``array`` as a view into a larger array of ``fill`` (same leading corner)."""
    import cupy as cp

    whole = cp.full(padded_shape, fill, dtype=array.dtype)
    corner = tuple(slice(0, extent) for extent in array.shape)
    whole[corner] = array
    return whole[corner]


@pytest.mark.parametrize("family_name", FAMILIES + [F16_PATH])
def test_garbage_past_masked_m_and_in_padding_never_reaches_a_valid_row(family_name):
    import cupy as cp

    skip_unless_runnable(family_name)
    groups, m, n, k = 4, 130, 272, 384
    masked = [130, 65, 0, 1]
    clean = make_gemm_inputs(groups, m, n, k, masked, seed=21)
    kb, nb = k // 128, -(-n // 128)
    dirty = dict(masked_m=clean["masked_m"],
                 a=embed(clean["a"], (groups, m + 16, k + 128), E4M3_NAN),
                 b=embed(clean["b"], (groups, n + 16, k + 128), E4M3_NEG_NAN),
                 a_scale=embed(clean["a_scale"], (groups, m + 8, kb + 1), np.nan),
                 b_scale=embed(clean["b_scale"], (groups, nb + 1, kb + 1), np.inf))
    for g, rows in enumerate(masked):  # rows past the mask: NaN data, NaN/Inf scales
        dirty["a"][g, rows:, ::2] = E4M3_NAN
        dirty["a"][g, rows:, 1::2] = E4M3_NEG_NAN
        dirty["a_scale"][g, rows:, 0] = np.inf
        dirty["a_scale"][g, rows:, 1:] = np.nan
    for expected_m in (8, 100):
        poisoned = PoisonedOutput((groups, m, n), np.float32, row_pad=16)
        with kernel_family(family_name):
            gemm(**dirty, expected_m=expected_m, out=poisoned.out)
        cp.cuda.runtime.deviceSynchronize()
        assert_close_to_reference(to_cupy_float64(poisoned.out), reference_gpu(**clean),
                                  clean["masked_m"])
        assert_only_valid_rows_written(poisoned, masked)


# The sign of an infinite result is checked where |P_kb| exceeds this fraction of
# sum |a b| over the block: fp32 (and Hopper's fp8 wgmma) accumulation may flip it below.
SIGN_MARGIN = 1e-2


def block_partials(inputs, g, rows, cols, kb):
    """Exact float64 sums over k block kb of a[g, r] * b[g, c] (no scales): (rows, cols)."""
    import cupy as cp

    table = cp.asarray(fp8_e4m3_to_float64(np.arange(256, dtype=np.uint8)))
    block = slice(128 * kb, 128 * kb + 128)
    a = table[inputs["a"][g, rows, block]]
    b = table[inputs["b"][g, cols, block]]
    return a @ b.T, cp.abs(a) @ cp.abs(b).T


@pytest.mark.parametrize("out_dtype", OUT_DTYPES)
@pytest.mark.parametrize("family_name", FAMILIES + [F16_PATH])
def test_non_finite_valid_inputs_reach_exactly_the_outputs_ieee_says(family_name, out_dtype):
    """out[g, r, c] = sum_kb a_scale[g, r, kb] b_scale[g, c/128, kb] P_kb(r, c), P_kb the
    fp32 block sum of a[g, r, k] b[g, c, k]. So: a NaN in a[g, r, :] makes row r NaN; a NaN
    in b[g, c, :] makes column c NaN; an infinite scale makes its rows or columns +-Inf
    (the sign of scale * P_kb), and NaN where P_kb = 0 (Inf * 0); nothing else changes."""
    import cupy as cp

    skip_unless_runnable(family_name)
    groups, m, n, k = 4, 96, 272, 384
    masked = [96, 70, 50, 96]
    inputs = make_gemm_inputs(groups, m, n, k, masked, seed=22)
    ref = reference_gpu(**inputs)  # of the clean data
    nan = cp.zeros((groups, m, n), dtype=cp.bool_)  # where the result must be NaN
    inf_sign = cp.zeros((groups, m, n), dtype=cp.float64)  # +-1 where it must be +-Inf

    inputs["a"][0, 5, 200] = E4M3_NAN  # a NaN in a row: the row
    inputs["a"][0, 9, 17] = E4M3_NEG_NAN
    nan[0, [5, 9], :] = True
    inputs["b"][1, 130, 300] = E4M3_NAN  # a NaN in b: the column, in valid rows
    nan[1, :, 130] = True
    inputs["b_scale"][1, 2, 1] = np.nan  # a NaN b scale: its 128-column block (here 16)
    nan[1, :, 256:] = True
    inputs["a_scale"][2, 11, 2] = np.inf  # Inf * 0: a zero k block under an infinite scale
    inputs["a"][2, 11, 256:] = 0
    nan[2, 11, :] = True
    inputs["a_scale"][2, 7, 0] = np.inf  # an infinite a scale: +-Inf along the row
    inputs["b_scale"][3, 0, 1] = -np.inf  # an infinite b scale: +-Inf in its column block
    cols = cp.arange(n)
    partial, size = block_partials(inputs, 2, [7], cols, 0)
    sign = cp.sign(partial[0] * inputs["b_scale"][2, cols // 128, 0])
    inf_sign[2, 7] = cp.where(size[0] * SIGN_MARGIN < cp.abs(partial[0]), sign, 0)
    nan[2, 7] = partial[0] == 0
    partial, size = block_partials(inputs, 3, cp.arange(m), cp.arange(128), 1)
    sign = -cp.sign(partial * inputs["a_scale"][3, :, 1:2])
    inf_sign[3, :, :128] = cp.where(size * SIGN_MARGIN < cp.abs(partial), sign, 0)
    nan[3, :, :128] = partial == 0
    non_finite = nan.copy()
    non_finite[2, 7] = True
    non_finite[3, :, :128] = True

    poisoned = PoisonedOutput((groups, m, n), numpy_dtype(out_dtype))
    with kernel_family(family_name):
        gemm(**inputs, expected_m=64, out=poisoned.out)
    cp.cuda.runtime.deviceSynchronize()
    out = to_cupy_float64(poisoned.out)
    for g, rows in enumerate(masked):
        got, want = out[g, :rows], non_finite[g, :rows]
        wrong = cp.argwhere(cp.isfinite(got) == want)
        assert wrong.size == 0, f"group {g}: finiteness wrong at (row, col) {wrong[:5].tolist()}"
        missed = cp.argwhere(nan[g, :rows] & ~cp.isnan(got))
        assert missed.size == 0, f"group {g}: expected NaN at {missed[:5].tolist()}"
        signed = inf_sign[g, :rows] != 0
        assert bool((cp.isinf(got[signed]) & (cp.sign(got[signed]) == inf_sign[g, :rows][signed]))
                    .all()), f"group {g}: an infinity has the wrong sign or is not one"
    assert_only_valid_rows_written(poisoned, masked)
    finite_out = cp.where(non_finite, 0.0, out)
    assert_close_to_reference(finite_out, cp.where(non_finite, 0.0, ref), inputs["masked_m"])


# ---------------------------------------------------------------------------------------
# Huge tensors: offsets past 2^31 elements (and 2^32 bytes) of the output.

def test_output_past_2_31_elements_is_right_at_its_last_rows(family):
    import cupy as cp

    groups, m, n, k = 65, 4096, 8192, 256  # 65 * 2^25 = 2.18e9 elements, 4.4 GB of bf16
    assert groups * m * n > 2**31
    # Group 32 starts at byte 2^32 of a bf16 output, group 64 at element 2^31.
    full, short = {0, 31, 32, 63, 64}, {33: m - 1}
    masked = [m if g in full else short.get(g, 0) for g in range(groups)]
    inputs = make_gemm_inputs(groups, m, n, k, masked, seed=31)
    poisoned = PoisonedOutput((groups, m, n), numpy_dtype("bfloat16"), back=2**20)
    gemm(**inputs, expected_m=m, out=poisoned.out)
    cp.cuda.runtime.deviceSynchronize()
    for g, first, last in ((0, 0, 4), (31, m - 4, m), (32, 0, 4), (33, m - 5, m - 1),
                           (63, m - 4, m), (64, 0, 4), (64, m - 4, m)):
        rows = slice(first, last)
        ref = reference_gpu(inputs["a"][g:g + 1, rows], inputs["b"][g:g + 1],
                            inputs["a_scale"][g:g + 1, rows], inputs["b_scale"][g:g + 1],
                            cp.asarray([last - first], dtype=cp.int32))
        assert_close_to_reference(to_cupy_float64(poisoned.out[g:g + 1, rows]), ref,
                                  cp.asarray([last - first]))
    assert_only_valid_rows_written(poisoned, masked)


# ---------------------------------------------------------------------------------------
# Concurrency: threads, processes, damaged caches.

THREAD_PROBLEMS = [  # groups, m, n, k, masked_m, expected_m
    (2, 100, 256, 512, [37, 100], 70), (3, 64, 144, 256, [0, 64, 17], 27),
    (4, 257, 400, 384, [256, 1, 129, 257], 161), (5, 8, 128, 640, [3, 8, 0, 5, 7], 5),
]


def test_threads_on_distinct_streams_give_correct_results_and_compile_once(family, tmp_path,
                                                                           monkeypatch):
    import cupy as cp

    threads, calls = 8, 4
    work = [make_gemm_inputs(*p[:5], seed=40 + i) for i, p in
            enumerate(THREAD_PROBLEMS * (threads // len(THREAD_PROBLEMS)))]
    refs = [reference_gpu(**inputs) for inputs in work]
    cp.cuda.runtime.deviceSynchronize()
    fresh_build_state(monkeypatch, tmp_path / "cache")  # the first use happens in the threads
    compiled = count_compiles(monkeypatch)
    barrier = threading.Barrier(threads)
    results, errors = [[] for _ in range(threads)], []

    def run(index):
        try:
            inputs, expected_m = work[index], THREAD_PROBLEMS[index % len(THREAD_PROBLEMS)][5]
            stream = cp.cuda.Stream(non_blocking=True)
            barrier.wait()
            with stream:
                for _ in range(calls):
                    results[index].append(gemm(**inputs, expected_m=expected_m,
                                               out_dtype="float32", stream=stream))
            stream.synchronize()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert not errors, errors
    for inputs, ref, outs in zip(work, refs, results):
        assert len(outs) == calls
        for out in outs:
            assert_close_to_reference(out.astype(cp.float64), ref, inputs["masked_m"])
    assert compiled and max(Counter(compiled).values()) == 1, Counter(compiled)


RACER = """
import json, sys, time
from pathlib import Path
import cupy as cp
from cugroupgemm import batch_deepgemm_fp8_nt_groupwise as gemm, build
from cugroupgemm.testing import assert_close_to_reference, make_gemm_inputs, reference_gpu
compiled, real = [], build._compile_now
build._compile_now = lambda spec: compiled.append(repr(spec)) or real(spec)
inputs = make_gemm_inputs(3, 200, 400, 384, [200, 0, 77], seed=int(sys.argv[2]))
ref = reference_gpu(**inputs)
cp.cuda.runtime.deviceSynchronize()
Path(sys.argv[1], "ready-" + sys.argv[2]).touch()
while not Path(sys.argv[1], "go").exists():
    time.sleep(0.002)
out = gemm(**inputs, expected_m=90, out_dtype="float32")
cp.cuda.runtime.deviceSynchronize()
assert_close_to_reference(out.astype(cp.float64), ref, inputs["masked_m"])
print(json.dumps(compiled))
"""


def test_two_processes_sharing_a_fresh_cache_compile_each_kernel_once(family, tmp_path):
    import time

    env = {**os.environ, "CUGROUPGEMM_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(ROOT), "CUGROUPGEMM_KERNEL": os.environ["CUGROUPGEMM_KERNEL"]}
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path), str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
             for i in range(2)]
    deadline = time.monotonic() + 300
    while len(list(tmp_path.glob("ready-*"))) < 2 and time.monotonic() < deadline:
        if any(proc.poll() is not None for proc in procs):
            break
        time.sleep(0.01)
    (tmp_path / "go").touch()  # both reach the GEMM's first compile together
    outputs = [proc.communicate(timeout=300) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    compiled = Counter(spec for out, _ in outputs for spec in json.loads(out))
    gemm_source = dispatch.families()[family].source
    assert any(gemm_source in spec for spec in compiled), compiled
    assert max(compiled.values()) == 1, compiled


def test_unusable_cache_dir_compiles_in_memory_with_a_warning(family, tmp_path, monkeypatch):
    import cupy as cp

    inputs = make_gemm_inputs(2, 64, 256, 256, [64, 9], seed=43)
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # a directory below a file: unusable even for root
    fresh_build_state(monkeypatch, blocker / "cache")
    with pytest.warns(UserWarning, match=r"cache directory .*a_file/cache is unusable"):
        out = gemm(**inputs, expected_m=64, out_dtype="float32")
    cp.cuda.runtime.deviceSynchronize()
    assert_close_to_reference(out.astype(cp.float64), reference_gpu(**inputs), inputs["masked_m"])


def test_corrupt_cache_entries_are_rebuilt_end_to_end(family, tmp_path, monkeypatch, caplog):
    import cupy as cp

    inputs = make_gemm_inputs(2, 64, 256, 256, [64, 9], seed=44)
    ref = reference_gpu(**inputs)
    fresh_build_state(monkeypatch, tmp_path / "cache")
    gemm(**inputs, expected_m=64, out_dtype="float32")
    cubins = sorted((tmp_path / "cache").glob("*.cubin"))
    assert cubins
    for cubin in cubins:  # half of each file lost, as after a disk fault
        cubin.write_bytes(cubin.read_bytes()[: cubin.stat().st_size // 2])
    monkeypatch.setattr(build, "_memory_cache", {})  # as in a fresh process: nothing
    monkeypatch.setattr(build, "_loaded", {})  # compiled, loaded or warm
    warm_calls.clear()
    out = gemm(**inputs, expected_m=64, out_dtype="float32")
    cp.cuda.runtime.deviceSynchronize()
    assert "corrupt" in caplog.text
    assert_close_to_reference(out.astype(cp.float64), ref, inputs["masked_m"])


# ---------------------------------------------------------------------------------------
# Streams and graphs.

LATE_COPY = r"""
extern "C" __global__ void late_copy(const unsigned char* src, unsigned char* dst,
                                     long long n, long long spin_cycles) {
  const long long start = clock64();
  while (clock64() - start < spin_cycles) {}
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x)
    dst[i] = src[i];
}
"""
SPIN_CYCLES = 400_000_000  # about 0.2 s at H100/H200 clocks


def launch_late_copy(src, dst, stream_handle: int, spin_cycles: int = SPIN_CYCLES):
    """On ``stream_handle``: spin, then copy the bytes of ``src`` (CuPy) into ``dst``."""
    import cupy as cp

    kernel = cp.RawKernel(LATE_COPY, "late_copy")
    with frameworks.cupy_stream(stream_handle):
        kernel((64,), (256,), (src, dst, cp.int64(src.size), cp.int64(spin_cycles)))


def test_result_is_ordered_after_a_slow_producer_on_a_torch_side_stream(family):
    import cupy as cp
    import torch

    inputs = make_gemm_inputs(2, 256, 512, 1024, [256, 200], seed=45)
    ref = reference_gpu(**inputs)
    tensors = {name: torch.from_dlpack(array) for name, array in inputs.items()}
    gemm(**tensors, expected_m=228)  # warm: no compile inside the timed window below
    a_late = torch.full_like(tensors["a"], E4M3_NAN)  # NaN until the producer lands
    a_late_bytes = cp.from_dlpack(a_late)
    torch.cuda.synchronize()
    producer, consumer = torch.cuda.Stream(), torch.cuda.Stream()
    with torch.cuda.stream(producer):
        launch_late_copy(inputs["a"], a_late_bytes, producer.cuda_stream)
        # The call runs on `consumer`; DLPack's handshake must order it after `producer`.
        out = gemm(**{**tensors, "a": a_late}, expected_m=228, stream=consumer)
        assert not producer.query(), "the producer finished before the call: no test"
    consumer.synchronize()
    assert_close_to_reference(to_cupy_float64(out), ref, inputs["masked_m"])


def test_a_wrapped_stream_stays_its_owners():
    """frameworks.cupy_stream lends CuPy a torch stream; dropping the wrapper must not
    destroy it (a CuPy Stream destroys the streams it owns)."""
    import gc
    import weakref

    import cupy as cp
    import torch

    owner = torch.cuda.Stream()
    wrapper = frameworks.cupy_stream(owner.cuda_stream, torch.cuda.current_device())
    with wrapper:
        assert cp.cuda.get_current_stream().ptr == owner.cuda_stream
        doubled = cp.arange(1024, dtype=cp.float32) * 2
    collected = weakref.ref(wrapper)
    del doubled, wrapper
    gc.collect()
    assert collected() is None, "the wrapper is still alive: its end was not tested"
    with torch.cuda.stream(owner):
        total = (torch.ones(1024, device="cuda") * 2).sum()
    owner.synchronize()
    assert total.item() == 2048.0


@pytest.mark.parametrize("framework", ["cupy", "torch"])
def test_output_memory_is_not_reused_while_the_launch_stream_still_writes_it(framework):
    """An output the library allocates is freed by the caller at once: memory the caller
    allocates next (on its own stream) must not be written by the still-queued GEMM."""
    import cupy as cp

    inputs = make_gemm_inputs(2, 128, 256, 256, [128, 128], seed=46)
    shape = (2, 128, 256)
    gemm(**inputs, expected_m=128, out_dtype="float32")  # warm: no compile below
    cp.cuda.runtime.deviceSynchronize()
    if framework == "cupy":
        launch, caller = cp.cuda.Stream(non_blocking=True), cp.cuda.Stream(non_blocking=True)
        with caller:
            launch_late_copy(inputs["a"][:0], inputs["a"][:0], launch.ptr)  # spin only
            out = gemm(**inputs, expected_m=128, out_dtype="float32", stream=launch)
            freed = out.data.ptr
            del out
            after = cp.full(shape, 7.0, dtype=cp.float32)
            reused = after.data.ptr == freed
            caller.synchronize()
        launch.synchronize()
    else:
        import torch

        tensors = {name: torch.from_dlpack(array) for name, array in inputs.items()}
        torch.cuda.synchronize()
        launch, caller = torch.cuda.Stream(), torch.cuda.Stream()
        with torch.cuda.stream(caller):
            launch_late_copy(inputs["a"][:0], inputs["a"][:0], launch.cuda_stream)
            out = gemm(**tensors, expected_m=128, out_dtype=torch.float32, stream=launch)
            freed = out.data_ptr()
            del out
            after = torch.full(shape, 7.0, dtype=torch.float32, device="cuda")
            reused = after.data_ptr() == freed
            caller.synchronize()
        launch.synchronize()
        after = cp.from_dlpack(after)
    assert bool((after == 7).all()), (f"memory allocated after the call was overwritten by it "
                                      f"(the caller got the output's block back: {reused})")


def test_cuda_graph_replays_with_new_data_and_new_masked_m(family):
    import cupy as cp
    import torch

    groups, m, n, k = 4, 130, 272, 512
    first = make_gemm_inputs(groups, m, n, k, [130, 1, 64, 0], seed=50)
    static = {name: torch.from_dlpack(array).clone() for name, array in first.items()}
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up: compile, load, describe the buffers
        gemm(**static, expected_m=64)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = gemm(**static, expected_m=64)
    poison = POISON_BITS[2]
    for seed, masked in ((51, [0, 130, 65, 7]), (52, [INT32_MAX, -4, 129, 128]),
                         (53, [130] * 4)):
        fresh = make_gemm_inputs(groups, m, n, k, masked, seed=seed)
        cp.cuda.runtime.deviceSynchronize()
        for name, array in fresh.items():
            static[name].copy_(torch.from_dlpack(array))
        out.view(torch.int16).fill_(poison)
        graph.replay()
        torch.cuda.synchronize()
        assert_close_to_reference(to_cupy_float64(out), reference_gpu(**fresh), fresh["masked_m"])
        bits = out.view(torch.int16)
        for g, rows in enumerate(np.clip(masked, 0, m)):
            assert bool((bits[g, rows:] == poison).all()), f"group {g}: rows past {rows} written"
            assert not bool((bits[g, :rows] == poison).any()), f"group {g}: valid rows unwritten"


# ---------------------------------------------------------------------------------------
# Errors from the GPU itself; the library stays usable after each.

def assert_still_usable():
    import cupy as cp

    inputs = make_gemm_inputs(2, 64, 256, 256, [64, 30], seed=60)
    out = gemm(**inputs, expected_m=40, out_dtype="float32")
    cp.cuda.runtime.deviceSynchronize()
    assert_close_to_reference(out.astype(cp.float64), reference_gpu(**inputs), inputs["masked_m"])


@pytest.mark.parametrize("framework", ["cupy", "torch"])
def test_output_that_cannot_be_allocated_is_a_clear_error_naming_out(framework):
    import cupy as cp

    groups, m, n, k = 1024, 2**20, 2**20, 128  # 2^50 float32 outputs: 4 PiB
    # Inputs that pass validation for free: every row is one row (zero strides).
    inputs = dict(a=cp.broadcast_to(cp.zeros((1, 1, k), cp.uint8), (groups, m, k)),
                  b=cp.broadcast_to(cp.zeros((1, 1, k), cp.uint8), (groups, n, k)),
                  a_scale=cp.broadcast_to(cp.ones((1, 1, 1), cp.float32), (groups, m, 1)),
                  b_scale=cp.broadcast_to(cp.ones((1, 1, 1), cp.float32),
                                          (groups, n // 128, 1)),
                  masked_m=cp.zeros(groups, cp.int32))
    if framework == "torch":
        import torch

        inputs = {name: torch.from_dlpack(array) for name, array in inputs.items()}
    with pytest.raises((MemoryError, cugroupgemm.CuGroupGemmError)) as info:
        gemm(**inputs, expected_m=0, out_dtype="float32")
    assert "out" in str(info.value) and "(1024, 1048576, 1048576)" in str(info.value), (
        f"the error does not name the output and its shape: {info.value!r}")
    assert_still_usable()


def test_kernel_that_fails_to_compile_names_the_source_and_the_nvrtc_log(family, tmp_path,
                                                                       monkeypatch):
    import shutil

    inputs = make_gemm_inputs(2, 64, 256, 256, [64, 9], seed=61)
    source = dispatch.families()[family].source
    broken = tmp_path / "kernels_cu"
    shutil.copytree(build.KERNEL_DIR, broken)
    with open(broken / source, "a") as handle:
        handle.write('\nstatic_assert(sizeof(int) == 3, "broken on purpose by the test");\n')
    with monkeypatch.context() as patch:
        patch.setattr(build, "KERNEL_DIR", broken)
        fresh_build_state(patch, tmp_path / "cache")
        build.source_fingerprint.cache_clear()
        try:
            with pytest.raises(cugroupgemm.KernelCompileError,
                               match=rf"(?s)NVRTC could not compile {source}.*-arch=sm_\d+a?.*"
                                     rf"broken on purpose by the test"):
                gemm(**inputs, expected_m=64)
        finally:
            build.source_fingerprint.cache_clear()
    assert_still_usable()


def test_unsupported_gpu_is_a_clear_error_and_launches_nothing(monkeypatch):
    import cupy as cp

    volta = dataclasses.replace(device_info(0), name="Tesla V100 (pretend)", cc=(7, 0))
    inputs = make_gemm_inputs(2, 64, 256, 256, [64, 9], seed=62)
    poisoned = PoisonedOutput((2, 64, 256), np.float32)
    with monkeypatch.context() as patch:
        patch.setattr(api, "device_info", lambda device_id: volta)
        patch.delenv("CUGROUPGEMM_KERNEL", raising=False)
        with pytest.raises(cugroupgemm.UnsupportedDeviceError,
                           match=r"compute capability 8\.0 or newer; Tesla V100 \(pretend\) "
                                 r"\(device 0\) has 7\.0"):
            gemm(**inputs, expected_m=64, out=poisoned.out)
        for name in FAMILIES:
            patch.setenv("CUGROUPGEMM_KERNEL", name)
            with pytest.raises(cugroupgemm.UnsupportedDeviceError,
                               match=rf"the {name} family cannot run on Tesla V100 \(pretend\)"):
                gemm(**inputs, expected_m=64, out=poisoned.out)
    cp.cuda.runtime.deviceSynchronize()
    assert_only_valid_rows_written(poisoned, [0, 0])
    assert_still_usable()
