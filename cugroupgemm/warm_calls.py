"""Warm calls: an eager call that repeats a validated one skips the host work.

A call's key holds everything its validation, plan and kernel arguments depend on: each
array's address, shape, strides, dtype and device; expected_m, the scale granularity and
the output dtype (with their types); and the kernel family the dispatcher picks now (so
CUGROUPGEMM_KERNEL, a failed self-check or a replaced family never meet a stale plan). A
call whose key was launched before reuses that launch (plan, loaded kernel, params,
tensor maps): only the output allocation and the launch remain (docs/performance.md).

Only torch tensors and CuPy arrays on their framework's current stream take this path
(those intake.py reads without DLPack); anything else goes the whole way.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from . import dispatch, frameworks
from .device import device_info
from .dtypes import DType
from .errors import CuGroupGemmError
from .launch import GemmParams, KernelLaunch
from .problem import Problem

MAX_ENTRIES = 256  # the oldest is dropped past this (a key per distinct set of buffers)
_FAMILY = 1  # index of the family's id in a key


@dataclass(frozen=True)
class _Entry:
    family: object  # held so that its id, which is in the key, is never reused
    launch: KernelLaunch
    out_shape: tuple[int, ...] | None  # the output to allocate; None when out= is given
    out_dtype: DType  # that output's dtype


_entries: dict[tuple, _Entry] = {}


def key_of(arrays: tuple, expected_m, granularity, out_dtype) -> tuple | None:
    """The key of a call on ``arrays`` (a, b, a_scale, b_scale, masked_m, out or None);
    None when it cannot take this path."""
    framework = frameworks.framework_of(arrays[0])
    read = _READERS.get(framework)
    if read is None or type(granularity) is not tuple:
        return None
    described = read(arrays)
    if described is None:
        return None
    device_id = described[-1]  # a's device (validation puts every array there)
    try:
        family = dispatch.choose_family(device_info(device_id))
    except CuGroupGemmError:  # the full path raises it, with its context
        return None
    return (framework, id(family), type(expected_m), expected_m, tuple(map(type, granularity)),
            granularity, type(out_dtype), out_dtype, described)


def replay(key: tuple | None, out):
    """The result of repeating the launch remembered under ``key``, launched on the
    framework's current stream; None when there is none."""
    try:
        entry = _entries.get(key) if key is not None else None
    except TypeError:  # an unhashable argument: the full path says what is wrong with it
        return None
    if entry is None:
        return None
    framework, device_id = key[0], entry.launch.device_id
    stream = frameworks.current_stream(framework, device_id)
    if entry.out_shape is None:
        entry.launch.run(stream)
        return out
    # As a first call allocates it (on the launch stream; an out-of-memory error names out).
    view, result = frameworks.allocate(framework, entry.out_shape, entry.out_dtype, device_id,
                                       stream)
    params = GemmParams.from_buffer_copy(entry.launch.arguments[0])
    params.out = view.ptr
    entry.launch.run(stream, params)
    return frameworks.deliver(framework, result)


def remember(key: tuple | None, launched: tuple | None, problem: Problem,
             allocated: bool) -> None:
    """Keep ``launched`` (api.launch_gemm's family and launch) for the calls that repeat
    ``key``; ``allocated``: whether the call allocated its output (no out=). Nothing to
    keep without a key (a call that cannot take this path) or a launch (an empty
    problem)."""
    if key is None or launched is None:
        return
    family, launch = launched
    if id(family) != key[_FAMILY]:
        return  # the family changed within the call: the key describes another launch
    shape = (problem.num_groups, problem.m, problem.n) if allocated else None
    entry = _Entry(family, launch, shape, problem.out_kind.dtype)
    try:
        _entries[key] = entry
        if len(_entries) > MAX_ENTRIES:
            del _entries[next(iter(_entries))]
    except (TypeError, KeyError, RuntimeError):  # unhashable; another thread's eviction
        pass


def clear() -> None:
    """Forget every remembered launch (tests that replace the library's internals)."""
    _entries.clear()


def _torch_arrays(arrays) -> tuple | None:
    tensor_type = sys.modules["torch"].Tensor
    described = []
    for tensor in arrays:
        if tensor is None:
            described.append(None)
            continue
        # Only plain CUDA tensors, as intake reads them. NOTE: a sparse tensor has no
        # data_ptr (below), and a negative-bit view exists only for complex dtypes, which
        # validation rejects; under unified addressing an address names its device.
        if type(tensor) is not tensor_type or not tensor.is_cuda or tensor.requires_grad:
            return None
        try:
            address = tensor.data_ptr()
        except RuntimeError:
            return None
        described.append((address, tensor.shape, tensor.stride(), tensor.dtype))
    described.append(arrays[0].get_device())  # a's device, for the launch
    return tuple(described)


def _cupy_arrays(arrays) -> tuple | None:
    cupy = sys.modules["cupy"]
    described = []
    for array in arrays:
        if array is None:
            described.append(None)
            continue
        if type(array) is not cupy.ndarray:
            return None
        # __dlpack_device__ tells device memory (kDLCUDA) from managed memory.
        described.append((array.data.ptr, array.shape, array.strides, array.dtype,
                          array.__dlpack_device__()))
    described.append(described[0][-1][1])  # a's device id
    return tuple(described)


_READERS = {"torch": _torch_arrays, "cupy": _cupy_arrays}
