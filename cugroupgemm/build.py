"""Kernel source + compile-time arguments + target -> cubin (cached on disk) -> function.

Generic: knows nothing of any kernel. ``compile_kernel`` needs no GPU (CI uses it);
``load_kernel`` loads the cubin through ``cupy.RawModule`` on one device and keeps it
for the life of the process. Each compile, disk-cache hit and module load is logged on
the "cugroupgemm" logger with its time (cugroupgemm/logs.py).
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from . import capture, env, logs, nvrtc
from .errors import KernelCompileError, UnsupportedDeviceError

log = logging.getLogger(logs.LOGGER_NAME)

_PACKAGE_DIR = Path(__file__).resolve().parent
# Installed wheels carry the sources inside the package; a source checkout has them beside it.
KERNEL_DIR = next((p for p in (_PACKAGE_DIR / "kernels_cu", _PACKAGE_DIR.parent / "kernels_cu")
                   if p.is_dir()), _PACKAGE_DIR / "kernels_cu")


@dataclass(frozen=True)
class KernelSpec:
    """Everything that decides a kernel's binary, apart from the sources and NVRTC."""

    source: str  # file name under kernels_cu/
    expression: str  # template instance, e.g. "portable_fp8_masked_gemm<64, 128, 4, 0, true>"
    target: str  # exact target, e.g. "sm_90a"

    def options(self) -> list[str]:
        # -default-device: the kernels hold no host code, and NVRTC 13.0 (unlike 13.5)
        # takes a generic lambda's call operator for a host function.
        return ["--std=c++17", f"-arch={self.target}", f"-I{KERNEL_DIR}", "-DNDEBUG",
                "-default-device", "--ptxas-options=-v"]


def plain_target(info) -> str:
    """The newest real target NVRTC knows whose cubin runs on ``info`` (same major).

    For kernels that need no arch-specific ("a") features: sm_90 on an H100.
    """
    usable = [a for a in nvrtc.supported_archs() if a // 10 == info.arch // 10 and a <= info.arch]
    if not usable:
        raise UnsupportedDeviceError(
            f"this NVRTC ({'.'.join(map(str, nvrtc.version()))}) cannot compile for "
            f"{info.name} (sm_{info.arch}); it supports sm_{nvrtc.supported_archs()}")
    return f"sm_{max(usable)}"


@dataclass(frozen=True)
class Binary:
    cubin: bytes
    lowered_name: str
    log: str


@functools.cache
def source_fingerprint() -> str:
    """A hash of every file under kernels_cu/ (NVRTC's includes are not in any other key)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in KERNEL_DIR.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(KERNEL_DIR)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def cache_key(spec: KernelSpec) -> str:
    from . import __version__

    # Not the include path: the sources' fingerprint covers what it holds, wherever it is.
    options = [option for option in spec.options() if not option.startswith("-I")]
    fields = {"spec": asdict(spec), "options": options,
              "nvrtc": nvrtc.version(), "sources": source_fingerprint(), "version": __version__}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


def _compile_now(spec: KernelSpec) -> Binary:
    path = KERNEL_DIR / spec.source
    source = path.read_text()
    log.debug("compiling %s for %s with %s", spec.expression, spec.target,
              " ".join(spec.options()))
    start = time.perf_counter()
    try:
        result = nvrtc.compile_program(source, spec.source, spec.options(), [spec.expression])
    except KernelCompileError as exc:
        if env.dump_source_on_error():
            numbered = "\n".join(f"{i + 1:5d}  {line}" for i, line in enumerate(source.splitlines()))
            raise KernelCompileError(f"{exc}\n--- {spec.source} ---\n{numbered}") from None
        raise
    seconds = time.perf_counter() - start
    log.info("compiled %s for %s in %.2f s", spec.expression, spec.target, seconds,
             extra=logs.kernel_event(logs.COMPILE, spec, seconds))
    return Binary(result.cubin, result.lowered_names[spec.expression], result.log)


_memory_cache: dict[KernelSpec, Binary] = {}
_memory_lock = threading.Lock()
_warned_cache_dirs: set[str] = set()


def compile_kernel(spec: KernelSpec) -> Binary:
    """The cubin for ``spec``: from memory, else from the disk cache, else from NVRTC."""
    with _memory_lock:
        if spec in _memory_cache:
            return _memory_cache[spec]
        binary = _compile_through_disk_cache(spec)
        _memory_cache[spec] = binary
        return binary


def _compile_through_disk_cache(spec: KernelSpec) -> Binary:
    directory = env.cache_dir()
    key = cache_key(spec)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock_file = open(directory / f"{key}.lock", "a")  # noqa: SIM115 - held below
    except OSError as exc:
        _warn_cache_unusable(directory, exc)
        return _compile_now(spec)
    with lock_file:
        # NOTE: one process compiles while the others wait here, then read its result.
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        start = time.perf_counter()
        cached = _read_entry(directory, key)
        if cached is not None:
            seconds = time.perf_counter() - start
            log.debug("disk cache hit for %s (%s) in %s: %s, read in %.1f ms", spec.expression,
                      spec.target, directory, key, seconds * 1e3,
                      extra=logs.kernel_event(logs.DISK_HIT, spec, seconds))
            return cached
        log.debug("disk cache miss for %s (%s) in %s: %s", spec.expression, spec.target,
                  directory, key)
        binary = _compile_now(spec)
        try:
            _write_entry(directory, key, binary)
        except OSError as exc:
            _warn_cache_unusable(directory, exc)
        return binary


def _read_entry(directory: Path, key: str) -> Binary | None:
    meta_path, cubin_path = directory / f"{key}.json", directory / f"{key}.cubin"
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        cubin = cubin_path.read_bytes()
        if hashlib.sha256(cubin).hexdigest() != meta["cubin_sha256"]:
            raise ValueError("cubin does not match its checksum")
        return Binary(cubin, meta["lowered_name"], meta["log"])
    except (OSError, ValueError, KeyError, TypeError) as exc:  # TypeError: JSON not an object
        log.warning("cugroupgemm cache entry %s is corrupt (%s); rebuilding it", key, exc)
        return None


def _write_entry(directory: Path, key: str, binary: Binary):
    meta = {"lowered_name": binary.lowered_name, "log": binary.log,
            "cubin_sha256": hashlib.sha256(binary.cubin).hexdigest()}
    # Atomic: a reader sees the old entry or the whole new one, cubin before metadata.
    for suffix, payload in ((".cubin", binary.cubin), (".json", json.dumps(meta).encode())):
        with tempfile.NamedTemporaryFile(dir=directory, delete=False, suffix=".tmp") as handle:
            handle.write(payload)
        os.replace(handle.name, directory / f"{key}{suffix}")


def _warn_cache_unusable(directory: Path, exc: OSError):
    if str(directory) not in _warned_cache_dirs:
        _warned_cache_dirs.add(str(directory))
        warnings.warn(f"cugroupgemm: cache directory {directory} is unusable ({exc}); "
                      "compiling in memory (set CUGROUPGEMM_CACHE_DIR to fix)", stacklevel=3)


@dataclass
class LoadedKernel:
    """A kernel ready to launch on one device."""

    spec: KernelSpec
    device_id: int
    function: object  # cupy RawKernel: keeps the module loaded
    handle: int  # CUfunction
    dynamic_smem_limit: int = 48 * 1024

    def allow_dynamic_smem(self, nbytes: int):
        if nbytes > self.dynamic_smem_limit:
            with capture.relaxed_capture_mode():  # the first call may come while capturing
                self.function.max_dynamic_shared_size_bytes = nbytes
            self.dynamic_smem_limit = nbytes


_loaded: dict[tuple[KernelSpec, int], LoadedKernel] = {}
_load_lock = threading.Lock()


def load_kernel(spec: KernelSpec, device_id: int) -> LoadedKernel:
    """Compile (if needed) and load ``spec`` on ``device_id``; cached per process."""
    key = (spec, device_id)
    loaded = _loaded.get(key)
    if loaded is not None:
        return loaded
    with _load_lock:
        if key not in _loaded:
            _loaded[key] = _load_now(spec, device_id)
        return _loaded[key]


def _load_now(spec: KernelSpec, device_id: int) -> LoadedKernel:
    import cupy

    binary = compile_kernel(spec)
    start = time.perf_counter()
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as handle:
        handle.write(binary.cubin)
    try:
        # NOTE: torch CUDA graphs and XLA command buffers record by stream capture, so a
        # kernel's first call can come while this thread captures; the driver refuses to
        # load a module then unless the thread is in relaxed capture mode.
        with cupy.cuda.Device(device_id), capture.relaxed_capture_mode():
            function = cupy.RawModule(path=handle.name).get_function(binary.lowered_name)
            pointer = function.kernel.ptr  # forces the load on this device
    finally:
        os.unlink(handle.name)
    seconds = time.perf_counter() - start
    log.debug("loaded %s (%s) on device %d in %.1f ms", spec.expression, spec.target, device_id,
              seconds * 1e3, extra=logs.kernel_event(logs.LOAD, spec, seconds))
    return LoadedKernel(spec, device_id, function, pointer)
