"""Compile and cache machinery, on a tiny kernel of the test's own (no GPU needed)."""

import json
import os
import stat

import pytest

from cugroupgemm import build, nvrtc
from cugroupgemm.errors import KernelCompileError

TINY = """
#include "common/tiny.cuh"
template <int SCALE> __global__ void tiny(float* out) { out[threadIdx.x] = SCALE * helper(); }
"""


@pytest.fixture
def tiny_kernels(tmp_path, monkeypatch):
    """A private kernels_cu/ with one kernel and one header, and a private cache dir."""
    sources = tmp_path / "kernels_cu"
    (sources / "common").mkdir(parents=True)
    (sources / "tiny.cu").write_text(TINY)
    (sources / "common" / "tiny.cuh").write_text("__device__ float helper() { return 2.f; }\n")
    monkeypatch.setattr(build, "KERNEL_DIR", sources)
    monkeypatch.setenv("CUGROUPGEMM_CACHE_DIR", str(tmp_path / "cache"))
    build.source_fingerprint.cache_clear()
    build._memory_cache.clear()
    yield sources
    build.source_fingerprint.cache_clear()
    build._memory_cache.clear()


SPEC = build.KernelSpec("tiny.cu", "tiny<3>", "sm_80")


def test_compiles_a_template_instance_to_a_cubin_without_a_gpu(tiny_kernels):
    binary = build.compile_kernel(SPEC)
    assert binary.cubin[:4] == b"\x7fELF"
    assert binary.lowered_name == "_Z4tinyILi3EEvPf"
    assert "Used" in binary.log  # ptxas -v report is always captured


def test_cubin_is_whole(tiny_kernels):
    # NOTE: CuPy 14.2's getCUBIN returned one byte short; ours must be the ELF's full size.
    cubin = build.compile_kernel(SPEC).cubin
    section_headers = int.from_bytes(cubin[0x28:0x30], "little")
    count, size = int.from_bytes(cubin[0x3C:0x3E], "little"), int.from_bytes(cubin[0x3A:0x3C],
                                                                               "little")
    assert len(cubin) >= section_headers + count * size


def test_disk_cache_is_reused_across_processes(tiny_kernels, tmp_path, monkeypatch):
    first = build.compile_kernel(SPEC)
    build._memory_cache.clear()
    monkeypatch.setattr(build, "_compile_now", lambda spec: pytest.fail("recompiled"))
    assert build.compile_kernel(SPEC) == first


def test_header_change_changes_the_key(tiny_kernels):
    before = build.cache_key(SPEC)
    (tiny_kernels / "common" / "tiny.cuh").write_text("__device__ float helper() { return 3.f; }\n")
    build.source_fingerprint.cache_clear()
    assert build.cache_key(SPEC) != before


def test_key_covers_target_and_template_arguments(tiny_kernels):
    keys = {build.cache_key(SPEC), build.cache_key(build.KernelSpec("tiny.cu", "tiny<4>", "sm_80")),
            build.cache_key(build.KernelSpec("tiny.cu", "tiny<3>", "sm_90a"))}
    assert len(keys) == 3


def test_key_does_not_depend_on_where_the_sources_live(tiny_kernels, tmp_path, monkeypatch):
    before = build.cache_key(SPEC)
    moved = tmp_path / "elsewhere" / "kernels_cu"
    moved.parent.mkdir()
    tiny_kernels.rename(moved)
    monkeypatch.setattr(build, "KERNEL_DIR", moved)
    build.source_fingerprint.cache_clear()
    assert f"-I{moved}" in SPEC.options() and build.cache_key(SPEC) == before


def test_corrupt_cache_entry_is_rebuilt(tiny_kernels, tmp_path, caplog):
    build.compile_kernel(SPEC)
    build._memory_cache.clear()
    key = build.cache_key(SPEC)
    (tmp_path / "cache" / f"{key}.cubin").write_bytes(b"garbage")
    binary = build.compile_kernel(SPEC)
    assert binary.cubin[:4] == b"\x7fELF"
    assert "corrupt" in caplog.text
    meta = json.loads((tmp_path / "cache" / f"{key}.json").read_text())
    assert len(meta["cubin_sha256"]) == 64


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_cache_dir_falls_back_to_memory_with_a_warning(tiny_kernels, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(stat.S_IRUSR | stat.S_IXUSR)
    with pytest.warns(UserWarning, match="unusable"):
        assert build.compile_kernel(SPEC).cubin[:4] == b"\x7fELF"


def test_cache_path_that_is_a_file_falls_back_to_memory_with_a_warning(tiny_kernels, tmp_path,
                                                                      monkeypatch):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    monkeypatch.setenv("CUGROUPGEMM_CACHE_DIR", str(blocker / "cache"))
    with pytest.warns(UserWarning, match="unusable"):
        assert build.compile_kernel(SPEC).cubin[:4] == b"\x7fELF"


def test_compile_error_names_kernel_options_and_log(tiny_kernels, monkeypatch):
    (tiny_kernels / "tiny.cu").write_text(TINY + "\nthis is not C++;\n")
    build.source_fingerprint.cache_clear()
    monkeypatch.setenv("CUGROUPGEMM_DUMP_SOURCE", "1")
    with pytest.raises(KernelCompileError, match=r"tiny\.cu.*-arch=sm_80.*tiny<3>") as info:
        build.compile_kernel(SPEC)
    assert "error" in str(info.value)
    assert "    5  this is not C++;" in str(info.value)  # numbered source on request


def test_nvrtc_knows_every_target_we_claim():
    assert {80, 89, 90, 100} <= set(nvrtc.supported_archs())
    assert nvrtc.version() >= (12, 8)


# ---- concurrency and damaged caches (issue 5) ----

RACER = """
import json, sys, time
from pathlib import Path
from cugroupgemm import build
build.KERNEL_DIR = Path(sys.argv[1])
compiled, real = [], build._compile_now
build._compile_now = lambda spec: compiled.append(spec.expression) or real(spec)
Path(sys.argv[2], f"ready-{sys.argv[3]}").touch()
while not Path(sys.argv[2], "go").exists():
    time.sleep(0.002)
binary = build.compile_kernel(build.KernelSpec("tiny.cu", "tiny<3>", "sm_80"))
sha = __import__("hashlib").sha256(binary.cubin).hexdigest()
print(json.dumps({"compiled": compiled, "sha": sha}))
"""


def test_processes_sharing_a_fresh_cache_compile_once(tiny_kernels, tmp_path):
    import subprocess
    import sys
    import time
    from pathlib import Path

    racers = 3
    env = {**os.environ, "CUGROUPGEMM_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(tiny_kernels), str(tmp_path),
                               str(i)], stdout=subprocess.PIPE, env=env, text=True)
             for i in range(racers)]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < racers and time.monotonic() < deadline:
        time.sleep(0.01)
    (tmp_path / "go").touch()  # all racers reach compile_kernel together
    reports = [json.loads(proc.communicate(timeout=120)[0]) for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * racers
    assert sum(len(r["compiled"]) for r in reports) == 1, reports
    assert len({r["sha"] for r in reports}) == 1


def test_threads_compile_each_kernel_once(tiny_kernels, monkeypatch):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    compiled, real = [], build._compile_now
    monkeypatch.setattr(build, "_compile_now", lambda spec: compiled.append(spec) or real(spec))
    barrier = threading.Barrier(8)

    def first_use(_):
        barrier.wait()
        return build.compile_kernel(SPEC)

    with ThreadPoolExecutor(8) as pool:
        binaries = list(pool.map(first_use, range(8)))
    assert compiled == [SPEC]
    assert all(binary is binaries[0] for binary in binaries)


@pytest.mark.parametrize("meta", [b"{not json", b"\xff\xfe", b'{"log": ""}', b"", b"[]",
                                  b"null"])
def test_corrupt_cache_metadata_is_rebuilt(tiny_kernels, tmp_path, caplog, meta):
    build.compile_kernel(SPEC)
    build._memory_cache.clear()
    key = build.cache_key(SPEC)
    (tmp_path / "cache" / f"{key}.json").write_bytes(meta)
    assert build.compile_kernel(SPEC).cubin[:4] == b"\x7fELF"
    assert "corrupt" in caplog.text
    assert json.loads((tmp_path / "cache" / f"{key}.json").read_text())["cubin_sha256"]
