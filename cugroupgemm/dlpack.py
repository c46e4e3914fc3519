"""DLPack both ways, with ctypes: capsules in (any producer), capsules out (over CuPy memory).

NOTE: ``cupy.from_dlpack`` rejects float8 (DLPack code 10, measured on CuPy 14.2) and
CuPy cannot export fp8 either, so the library reads and writes the DLTensor structs
itself. Nothing here imports a framework or touches the GPU.
"""

from __future__ import annotations

import ctypes
import math
import threading
from dataclasses import dataclass
from typing import Callable

from . import dtypes
from .errors import ArgumentTypeError, describe

# DLDeviceType values (dlpack.h).
KDL_CPU, KDL_CUDA, KDL_CUDA_HOST, KDL_CUDA_MANAGED = 1, 2, 3, 13
_DEVICE_NAMES = {1: "CPU", 2: "CUDA", 3: "CUDA host", 4: "OpenCL", 7: "Vulkan", 8: "Metal",
                 10: "ROCm", 13: "CUDA managed", 14: "oneAPI"}
DLPACK_VERSION = (1, 1)
_FLAG_READ_ONLY = 1


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p),
                ("deleter", ctypes.c_void_p)]


class DLPackVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class DLManagedTensorVersioned(ctypes.Structure):
    _fields_ = [("version", DLPackVersion), ("manager_ctx", ctypes.c_void_p),
                ("deleter", ctypes.c_void_p), ("flags", ctypes.c_uint64),
                ("dl_tensor", DLTensor)]


_DELETER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_CAPSULE_DESTRUCTOR = ctypes.CFUNCTYPE(None, ctypes.c_void_p)

_LEGACY, _USED_LEGACY = b"dltensor", b"used_dltensor"
_VERSIONED, _USED_VERSIONED = b"dltensor_versioned", b"used_dltensor_versioned"


def _capi(name, restype, *argtypes):
    # NOTE: a private prototype per use: ctypes.pythonapi functions are shared
    # objects, and setting argtypes on them would change them for other libraries.
    func = ctypes.PYFUNCTYPE(restype, *argtypes)((name, ctypes.pythonapi))
    return func


_capsule_is_valid = _capi("PyCapsule_IsValid", ctypes.c_int, ctypes.py_object, ctypes.c_char_p)
_capsule_get_pointer = _capi("PyCapsule_GetPointer", ctypes.c_void_p, ctypes.py_object,
                             ctypes.c_char_p)
_capsule_set_name = _capi("PyCapsule_SetName", ctypes.c_int, ctypes.py_object, ctypes.c_char_p)
_capsule_new = _capi("PyCapsule_New", ctypes.py_object, ctypes.c_void_p, ctypes.c_char_p,
                     _CAPSULE_DESTRUCTOR)
# The destructor gets a capsule whose reference count is zero: raw pointers only.
_raw_is_valid = _capi("PyCapsule_IsValid", ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p)
_raw_get_pointer = _capi("PyCapsule_GetPointer", ctypes.c_void_p, ctypes.c_void_p,
                         ctypes.c_char_p)


@dataclass(frozen=True, eq=False)
class TensorView:
    """What the core knows of an array: where it is, its layout, and who keeps it alive.

    ``strides`` are in elements, as in DLPack; ``ptr`` already includes the byte offset.
    """

    ptr: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    dtype: dtypes.DType
    device_type: int
    device_id: int
    readonly: bool
    owner: object = None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def is_contiguous(self) -> bool:
        return self.strides == compact_strides(self.shape) or self.numel <= 1


def compact_strides(shape) -> tuple[int, ...]:
    """Row-major strides in elements for ``shape``."""
    strides, step = [], 1
    for extent in reversed(shape):
        strides.append(step)
        step *= max(extent, 1)
    return tuple(reversed(strides))


def device_name(device_type: int) -> str:
    return _DEVICE_NAMES.get(device_type, f"device type {device_type}")


class _ConsumedTensor:
    """Owns a consumed DLManagedTensor(Versioned) and calls its deleter exactly once."""

    def __init__(self, address: int, deleter: int, producer):
        self._address = address
        self._deleter = deleter
        self._producer = producer  # NOTE: some producers free the memory with the object

    def __del__(self):
        if self._deleter:
            _DELETER(self._deleter)(self._address)
            self._deleter = 0


def view_from_capsule(capsule, producer=None) -> TensorView:
    """Consume a DLPack capsule (versioned or legacy) and return a view that owns it."""
    if _capsule_is_valid(capsule, _VERSIONED):
        address = _capsule_get_pointer(capsule, _VERSIONED)
        managed = DLManagedTensorVersioned.from_address(address)
        if managed.version.major > DLPACK_VERSION[0]:
            raise ArgumentTypeError(
                f"DLPack capsule: expected major version <= {DLPACK_VERSION[0]}, "
                f"got {managed.version.major}")
        readonly = bool(managed.flags & _FLAG_READ_ONLY)
        _capsule_set_name(capsule, _USED_VERSIONED)
    elif _capsule_is_valid(capsule, _LEGACY):
        address = _capsule_get_pointer(capsule, _LEGACY)
        managed = DLManagedTensor.from_address(address)
        readonly = False
        _capsule_set_name(capsule, _USED_LEGACY)
    else:
        raise ArgumentTypeError(f"expected an unused DLPack capsule, got {describe(capsule)}")
    owner = _ConsumedTensor(address, managed.deleter or 0, producer)
    tensor = managed.dl_tensor
    ndim = tensor.ndim
    shape = tuple(tensor.shape[i] for i in range(ndim))
    strides = (tuple(tensor.strides[i] for i in range(ndim)) if tensor.strides
               else compact_strides(shape))
    dtype = dtypes.from_dlpack_code(tensor.dtype.code, tensor.dtype.bits, tensor.dtype.lanes)
    return TensorView(ptr=(tensor.data or 0) + tensor.byte_offset, shape=shape, strides=strides,
                      dtype=dtype, device_type=tensor.device.device_type,
                      device_id=tensor.device.device_id, readonly=readonly, owner=owner)


def dlpack_device_of(obj, argument: str) -> tuple[int, int]:
    """``obj.__dlpack_device__()``, or a TypeError naming the argument."""
    get_device = getattr(obj, "__dlpack_device__", None)
    if get_device is None or not hasattr(obj, "__dlpack__"):
        raise ArgumentTypeError(
            f"{argument}: expected an array that supports DLPack (torch, JAX, CuPy), "
            f"got {type(obj).__module__}.{type(obj).__qualname__}")
    device_type, device_id = get_device()
    return int(device_type), int(device_id)


def take(obj, argument: str, stream: int | None) -> TensorView:
    """Take ``obj`` through DLPack, asking the producer to order its work before ``stream``.

    ``stream`` is a raw CUDA stream handle as DLPack's consumer handshake wants it
    (1 = legacy default stream; never 0), or None when the array is not on a GPU.
    """
    device_type, _ = dlpack_device_of(obj, argument)
    if device_type not in (KDL_CUDA, KDL_CUDA_MANAGED):
        stream = None  # DLPack allows a stream only for GPU producers
    try:
        capsule = obj.__dlpack__(stream=stream, max_version=DLPACK_VERSION)
    except TypeError:  # producers older than DLPack 1.0 know no max_version
        capsule = obj.__dlpack__(stream=stream)
    return view_from_capsule(capsule, producer=obj)


# ---------------------------------------------------------------------------------------
# The way back: capsules over memory the library owns.

_live_exports: dict[int, tuple] = {}
_live_lock = threading.Lock()


@_DELETER
def _delete_export(address):
    with _live_lock:
        _live_exports.pop(address, None)


@_CAPSULE_DESTRUCTOR
def _destroy_capsule(capsule):
    # NOTE: DLPack says an unconsumed capsule's destructor calls the deleter; a consumed
    # one was renamed "used_..." by its consumer, which then owns the deleter call.
    for name in (_VERSIONED, _LEGACY):
        if _raw_is_valid(capsule, name):
            _delete_export(_raw_get_pointer(capsule, name))


class Export:
    """A DLPack producer over memory kept alive by ``keepalive`` (strides in elements).

    ``before_export(consumer_stream)`` is called when a consumer asks for the capsule,
    so the library can order its pending work before the consumer's stream.
    """

    def __init__(self, ptr: int, shape, dtype: dtypes.DType, device_id: int, keepalive,
                 before_export: Callable[[int | None], None] | None = None,
                 device_type: int = KDL_CUDA, strides=None):
        self.ptr, self.shape, self.dtype = ptr, tuple(shape), dtype
        self.strides = tuple(strides) if strides is not None else compact_strides(shape)
        self.device_type, self.device_id, self._keepalive = device_type, device_id, keepalive
        self._before_export = before_export

    def __dlpack_device__(self):
        return (self.device_type, self.device_id)

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        if dl_device is not None and tuple(dl_device) != self.__dlpack_device__():
            raise BufferError(f"cugroupgemm output lives on {device_name(self.device_type)} "
                              f"device {self.device_id}; a copy to {dl_device} is not supported")
        if copy:
            raise BufferError("cugroupgemm outputs are exported without copying (copy=True)")
        if self._before_export is not None:
            self._before_export(stream)
        versioned = max_version is not None and tuple(max_version)[0] >= 1
        return self._capsule(versioned)

    def _capsule(self, versioned: bool):
        ndim = len(self.shape)
        shape = (ctypes.c_int64 * max(ndim, 1))(*self.shape)
        strides = (ctypes.c_int64 * max(ndim, 1))(*self.strides)
        managed = DLManagedTensorVersioned() if versioned else DLManagedTensor()
        tensor = managed.dl_tensor
        tensor.data = self.ptr
        tensor.device = DLDevice(self.device_type, self.device_id)
        tensor.ndim = ndim
        tensor.dtype = DLDataType(self.dtype.code, self.dtype.bits, 1)
        tensor.shape = ctypes.cast(shape, ctypes.POINTER(ctypes.c_int64))
        tensor.strides = ctypes.cast(strides, ctypes.POINTER(ctypes.c_int64))
        tensor.byte_offset = 0
        managed.deleter = ctypes.cast(_delete_export, ctypes.c_void_p).value
        if versioned:
            managed.version = DLPackVersion(*DLPACK_VERSION)
            managed.flags = 0
        address = ctypes.addressof(managed)
        with _live_lock:
            _live_exports[address] = (managed, shape, strides, self._keepalive)
        return _capsule_new(address, _VERSIONED if versioned else _LEGACY, _destroy_capsule)


def live_export_count() -> int:
    """How many exported capsules still hold their memory (for leak tests)."""
    with _live_lock:
        return len(_live_exports)
