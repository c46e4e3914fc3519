"""On the GPU: after ``warmup``, a fresh process's first GEMM call compiles nothing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cugroupgemm.warmup import cache_summary

ROOT = Path(__file__).resolve().parents[1]
SHAPE = "3,96,256,512,40"  # G, m, n, k, expected_m

# A fresh process's first call, counting the build events it causes. The inputs are raw
# e4m3 bits and unit scales made by CuPy, so no quantizer kernel of ours is involved.
FIRST_CALL = """
import json, time, cupy as cp
from cugroupgemm import batch_deepgemm_fp8_nt_groupwise, logs
g, m, n, k, em = (int(v) for v in "{shape}".split(","))
a = cp.random.randint(0, 0x70, (g, m, k), dtype=cp.uint8)
b = cp.random.randint(0, 0x70, (g, n, k), dtype=cp.uint8)
a_scale = cp.ones((g, m, k // 128), cp.float32)
b_scale = cp.ones((g, n // 128, k // 128), cp.float32)
masked_m = cp.array([m, em, 0][:g], cp.int32)
cp.cuda.runtime.deviceSynchronize()
with logs.KernelEvents() as events:
    start = time.perf_counter()
    batch_deepgemm_fp8_nt_groupwise(a, b, a_scale, b_scale, masked_m, em, out_dtype="float32")
    cp.cuda.runtime.deviceSynchronize()
    seconds = time.perf_counter() - start
print(json.dumps({{"compiles": events.count(logs.COMPILE),
                  "disk_hits": events.count(logs.DISK_HIT), "loads": events.count(logs.LOAD),
                  "seconds": seconds}}))
"""


def run(arguments, cache):
    environment = {**os.environ, "CUGROUPGEMM_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, *arguments], cwd=ROOT, env=environment,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def first_call(cache) -> dict:
    return json.loads(run(["-c", FIRST_CALL.format(shape=SHAPE)], cache).splitlines()[-1])


@pytest.mark.gpu
def test_first_call_after_warmup_compiles_nothing(tmp_path):
    cold = first_call(tmp_path / "cold")  # the control: an empty cache does compile
    assert cold["compiles"] >= 1

    report = run(["-m", "cugroupgemm", "warmup", "--shapes", SHAPE + ",f32",
                  "--no-quantizers"], tmp_path / "warm")
    assert "fresh process: 0 compiles" in report
    entries = cache_summary(tmp_path / "warm")[0]
    warm = first_call(tmp_path / "warm")
    print(f"first call: cold cache {cold['seconds'] * 1e3:.1f} ms "
          f"({cold['compiles']} compiles), after warmup {warm['seconds'] * 1e3:.1f} ms")
    assert warm["compiles"] == 0
    assert warm["disk_hits"] >= 1 and warm["loads"] >= 1  # it did come from the cache
    # Every compile writes a cache entry: none appeared, so no process compiled, the
    # first-use self-check's child process (if the family needs one) included.
    assert cache_summary(tmp_path / "warm")[0] == entries


@pytest.mark.gpu
def test_warmup_on_the_gpu_plans_for_it(tmp_path):
    report = run(["-m", "cugroupgemm", "warmup", "--preset", "quick", "--json",
                  str(tmp_path / "w.json")], tmp_path / "cache")
    data = json.loads((tmp_path / "w.json").read_text())
    assert data["kernels"] and all(k["fresh_compiles"] == 0 for k in data["kernels"])
    assert "loaded on GPU 0" in report
