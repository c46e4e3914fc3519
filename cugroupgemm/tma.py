"""TMA descriptors (CUtensorMap) made on the host with ``cuTensorMapEncodeTiled``.

Why ctypes on ``libcuda.so.1`` and not ``cuda.bindings``: the encode is one C function
with plain integer and array arguments, the driver library is present wherever a kernel
can run at all, and ctypes needs no extra dependency (``cuda.bindings`` would be one more
wheel that must match the driver). The library is loaded lazily, on the first encode, so
importing this module on a machine without a GPU costs nothing.

Descriptors are cached per (address, dims, strides, box, swizzle): a warm call with the
same tensors does no encode, only a dictionary look-up. The cache is bounded (LRU).
"""

from __future__ import annotations

import ctypes
import functools
import threading
from collections import OrderedDict

from . import driver
from .errors import ArgumentValueError

# Enumerators of cuda.h (CUtensorMapDataType, ...Interleave, ...Swizzle, ...L2promotion,
# ...FloatOOBfill); stable ABI values.
DATA_TYPE_UINT8 = 0
INTERLEAVE_NONE = 0
SWIZZLE_NONE, SWIZZLE_32B, SWIZZLE_64B, SWIZZLE_128B = 0, 1, 2, 3
L2_PROMOTION_256B = 3
OOB_FILL_ZEROS = 0  # CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE: out-of-bounds elements read as 0

MAX_DIM = 2**32  # globalDim[i] <= 2^32
MAX_STRIDE = 2**40  # globalStrides[i] < 2^40 bytes
STRIDE_ALIGN = 16  # globalStrides[i] % 16 == 0, and the base address too
MAX_BOX = 256  # boxDim[i] <= 256
CACHE_SIZE = 4096

TENSOR_MAP_BYTES = 128
TENSOR_MAP_ALIGN = 64


class TensorMap(ctypes.Structure):
    """The 128 opaque bytes of a CUtensorMap: a by-value kernel parameter (TmaMap)."""

    _fields_ = [("opaque", ctypes.c_uint64 * 16)]


@functools.cache
def _driver() -> ctypes.CDLL:
    lib = driver.libcuda()
    encode = lib.cuTensorMapEncodeTiled
    encode.restype = ctypes.c_int
    encode.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p,
                       ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_uint64),
                       ctypes.POINTER(ctypes.c_uint32), ctypes.POINTER(ctypes.c_uint32),
                       ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.cuGetErrorString.restype = ctypes.c_int
    lib.cuGetErrorString.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
    return lib


def _error_text(lib, status: int) -> str:
    text = ctypes.c_char_p()
    if lib.cuGetErrorString(status, ctypes.byref(text)) == 0 and text.value:
        return f"{text.value.decode()} (CUresult {status})"
    return f"CUresult {status}"


def check_tiled(argument: str, address: int, dims, strides, box):
    """Raise ArgumentValueError (naming ``argument``) where TMA cannot describe the tensor.

    ``dims``/``box`` innermost first, in elements of one byte; ``strides`` in bytes for
    dims[1:].
    """
    if address % STRIDE_ALIGN:
        raise ArgumentValueError(f"{argument}: the TMA kernel needs a {STRIDE_ALIGN}-byte "
                                 f"aligned address, got 0x{address:x}")
    for d in dims:
        if not 0 < d <= MAX_DIM:
            raise ArgumentValueError(f"{argument}: the TMA kernel needs every dimension in "
                                     f"[1, 2^32], got {tuple(reversed(dims))}")
    for s in strides:
        if s % STRIDE_ALIGN or s >= MAX_STRIDE:
            raise ArgumentValueError(
                f"{argument}: the TMA kernel needs byte strides that are multiples of "
                f"{STRIDE_ALIGN} and below 2^40, got {tuple(reversed(strides))}")
    if any(not 0 < b <= MAX_BOX for b in box):
        raise ArgumentValueError(f"{argument}: TMA box {tuple(box)} out of range (1..256)")


_cache: OrderedDict[tuple, TensorMap] = OrderedDict()
_lock = threading.Lock()


def encode_tiled_u8(argument: str, address: int, dims: tuple[int, ...],
                    strides: tuple[int, ...], box: tuple[int, ...],
                    swizzle: int = SWIZZLE_128B) -> TensorMap:
    """A tiled tensor map over bytes (fp8 data), cached.

    ``dims`` and ``box`` innermost first; ``strides`` are the byte strides of dims[1:]
    (the innermost dimension is contiguous). Out-of-bounds box elements read as zero.
    """
    key = (address, dims, strides, box, swizzle)
    with _lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
            return found
    check_tiled(argument, address, dims, strides, box)
    rank = len(dims)
    lib = _driver()
    # Encode into a 64-byte aligned scratch (cuda.h declares CUtensorMap alignas(64)),
    # then copy the bytes into the parameter object.
    scratch = ctypes.create_string_buffer(TENSOR_MAP_BYTES + TENSOR_MAP_ALIGN)
    aligned = -(-ctypes.addressof(scratch) // TENSOR_MAP_ALIGN) * TENSOR_MAP_ALIGN
    status = lib.cuTensorMapEncodeTiled(
        ctypes.c_void_p(aligned), DATA_TYPE_UINT8, rank, ctypes.c_void_p(address),
        (ctypes.c_uint64 * rank)(*dims), (ctypes.c_uint64 * (rank - 1))(*strides),
        (ctypes.c_uint32 * rank)(*box), (ctypes.c_uint32 * rank)(*([1] * rank)),
        INTERLEAVE_NONE, swizzle, L2_PROMOTION_256B, OOB_FILL_ZEROS)
    if status != 0:
        raise ArgumentValueError(
            f"{argument}: cuTensorMapEncodeTiled refused dims {dims}, byte strides {strides}, "
            f"box {box} at 0x{address:x}: {_error_text(lib, status)}")
    tensor_map = TensorMap.from_buffer_copy(ctypes.string_at(aligned, TENSOR_MAP_BYTES))
    with _lock:
        _cache[key] = tensor_map
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return tensor_map


def clear_cache():
    with _lock:
        _cache.clear()
