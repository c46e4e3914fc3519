"""NVRTC through ctypes: CUDA C++ source to a cubin for a named target, no GPU needed.

NOTE: the library calls NVRTC itself rather than through ``cupy.RawModule(code=...)``
because CuPy appends ``-arch=sm_<cc>`` without the ``a`` suffix that wgmma/tcgen05
need, and CuPy 14.2's ``getCUBIN`` returned the cubin one byte short (DESIGN.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import KernelCompileError

_SUCCESS = 0


@dataclass(frozen=True)
class CompileResult:
    cubin: bytes
    lowered_names: dict[str, str]
    log: str


def _candidate_paths():
    try:
        from cuda import pathfinder  # shipped with cupy-cuda13x

        yield pathfinder.load_nvidia_dynamic_lib("nvrtc").abs_path
    except Exception:  # noqa: BLE001 - any failure means: look elsewhere
        pass
    for root in (os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if root:
            yield from (str(p) for p in sorted(Path(root, "lib64").glob("libnvrtc.so*")))
    found = ctypes.util.find_library("nvrtc")
    if found:
        yield found


@functools.cache
def _lib() -> ctypes.CDLL:
    errors = []
    for path in _candidate_paths():
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            errors.append(f"{path}: {exc}")
            continue
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        return lib
    raise KernelCompileError(
        "NVRTC was not found: install the 'nvidia-cuda-nvrtc' wheel (a dependency of "
        "cugroupgemm) or set CUDA_PATH to a CUDA toolkit; tried: " + "; ".join(errors))


def _check(status: int, what: str):
    if status != _SUCCESS:
        message = _lib().nvrtcGetErrorString(status).decode()
        raise KernelCompileError(f"NVRTC {what} failed: {message}")


def version() -> tuple[int, int]:
    major, minor = ctypes.c_int(), ctypes.c_int()
    _check(_lib().nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
    return major.value, minor.value


@functools.cache
def supported_archs() -> tuple[int, ...]:
    """The SM numbers this NVRTC can compile for (e.g. 80, 89, 90, 100)."""
    count = ctypes.c_int()
    _check(_lib().nvrtcGetNumSupportedArchs(ctypes.byref(count)), "nvrtcGetNumSupportedArchs")
    archs = (ctypes.c_int * count.value)()
    _check(_lib().nvrtcGetSupportedArchs(archs), "nvrtcGetSupportedArchs")
    return tuple(archs)


def compile_program(source: str, filename: str, options: list[str],
                    name_expressions: list[str]) -> CompileResult:
    """Compile ``source`` to a cubin; the options must name a real target (``-arch=sm_XY``)."""
    lib = _lib()
    program = ctypes.c_void_p()
    _check(lib.nvrtcCreateProgram(ctypes.byref(program), source.encode(), filename.encode(),
                                  0, None, None), "nvrtcCreateProgram")
    try:
        for expression in name_expressions:
            _check(lib.nvrtcAddNameExpression(program, expression.encode()),
                   f"nvrtcAddNameExpression({expression})")
        encoded = [option.encode() for option in options]
        status = lib.nvrtcCompileProgram(program, len(encoded),
                                         (ctypes.c_char_p * len(encoded))(*encoded))
        log = _program_log(program)
        if status != _SUCCESS:
            message = lib.nvrtcGetErrorString(status).decode()
            raise KernelCompileError(
                f"NVRTC could not compile {filename} ({message}) with options "
                f"{' '.join(options)} for {', '.join(name_expressions)}:\n{log}")
        lowered = {}
        for expression in name_expressions:
            name = ctypes.c_char_p()
            _check(lib.nvrtcGetLoweredName(program, expression.encode(), ctypes.byref(name)),
                   f"nvrtcGetLoweredName({expression})")
            lowered[expression] = name.value.decode()
        size = ctypes.c_size_t()
        _check(lib.nvrtcGetCUBINSize(program, ctypes.byref(size)), "nvrtcGetCUBINSize")
        cubin = ctypes.create_string_buffer(size.value)
        _check(lib.nvrtcGetCUBIN(program, cubin), "nvrtcGetCUBIN")
        return CompileResult(cubin=cubin.raw, lowered_names=lowered, log=log)
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(program))


def _program_log(program) -> str:
    lib = _lib()
    size = ctypes.c_size_t()
    _check(lib.nvrtcGetProgramLogSize(program, ctypes.byref(size)), "nvrtcGetProgramLogSize")
    buffer = ctypes.create_string_buffer(size.value)
    _check(lib.nvrtcGetProgramLog(program, buffer), "nvrtcGetProgramLog")
    return buffer.value.decode(errors="replace")
