"""Step one of every call: the caller's framework, device and stream, and array views."""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass

from . import dlpack, dtypes, frameworks
from .dlpack import KDL_CPU, KDL_CUDA, TensorView, device_name
from .errors import ArgumentValueError


@dataclass(frozen=True)
class CallContext:
    framework: str  # framework of the first array: results are handed back in it
    device_id: int
    stream: int  # raw CUDA stream handle the work is launched on
    framework_stream: bool = False  # stream is the framework's current stream (no stream=)


def call_context(first, argument: str, stream=None) -> CallContext:
    """Framework, device and stream of a call whose first array argument is ``first``.

    The stream is ``stream`` when given, else the current stream of the caller's
    framework (torch: torch's current stream; otherwise CuPy's current stream).
    """
    device_type, device_id = dlpack.dlpack_device_of(first, argument)
    if device_type != KDL_CUDA:
        raise ArgumentValueError(f"{argument}: expected an array on a CUDA device, got one on "
                                 f"{device_name(device_type)}")
    framework = frameworks.framework_of(first)
    if stream is not None:
        return CallContext(framework, device_id, frameworks.stream_handle(stream))
    return CallContext(framework, device_id, frameworks.current_stream(framework, device_id),
                       framework_stream=True)


def take_arrays(arrays: dict[str, object], context: CallContext) -> dict[str, TensorView]:
    """Views of the named arrays, each producer ordered before ``context.stream``.

    NOTE: a torch tensor or CuPy array on the device of a call launched on its own
    framework's current stream is read off its metadata: DLPack's stream handshake would
    order nothing there, and costs a capsule, a stream object and a comparison per array
    (host cost: docs/performance.md, log items 12 and 19).
    """
    stream = frameworks.for_dlpack(context.stream)
    direct = _DIRECT_VIEWS.get(context.framework) if context.framework_stream else None
    return {name: (direct and direct(obj, context.device_id))
            or dlpack.take(obj, name, stream) for name, obj in arrays.items()}


def _direct_torch_view(obj, device_id: int) -> TensorView | None:
    """The view of a plain CUDA tensor on ``device_id``; None for anything DLPack must
    judge (another framework or device, gradients, sparse layouts, conjugate or negative
    bits, a dtype outside dtypes.py), so its errors stay the DLPack path's."""
    torch = sys.modules["torch"]
    if not (isinstance(obj, torch.Tensor) and obj.is_cuda and obj.device.index == device_id
            and obj.layout is torch.strided and not obj.requires_grad
            and not obj.is_conj() and not obj.is_neg()
            and str(obj.dtype).removeprefix("torch.") in _DTYPES_BY_NAME):
        return None
    return torch_tensor_view(obj)


def _direct_cupy_view(obj, device_id: int) -> TensorView | None:
    """The view of a CuPy array in device memory on ``device_id``; None for anything
    DLPack must judge (another framework, device or memory kind such as managed memory,
    byte strides that are not whole elements, a dtype outside dtypes.py or one CuPy does
    not export through DLPack, such as ml_dtypes' kind 'V')."""
    cupy = sys.modules["cupy"]
    if not (isinstance(obj, cupy.ndarray) and obj.__dlpack_device__() == (KDL_CUDA, device_id)
            and obj.dtype.kind != "V"):
        return None
    dtype_name = _numpy_dtype_name(obj.dtype)
    itemsize = obj.itemsize
    if dtype_name not in _DTYPES_BY_NAME or any(stride % itemsize for stride in obj.strides):
        return None
    return view_of(obj.shape, dtype_name, [stride // itemsize for stride in obj.strides],
                   ptr=obj.data.ptr, device_id=device_id, owner=obj)


@functools.cache
def _numpy_dtype_name(dtype) -> str:
    return dtype.name  # NOTE: NumPy computes it in Python on every access (host cost)


_DIRECT_VIEWS = {"torch": _direct_torch_view, "cupy": _direct_cupy_view}


def torch_tensor_view(tensor, located: bool = True) -> TensorView:
    """A torch tensor's view read off its metadata, without DLPack. ``located=False`` for
    a fake tensor (no memory; torch.compile's tracing): the abstract view."""
    dtype_name = str(tensor.dtype).removeprefix("torch.")
    if not located:
        return view_of(tensor.shape, dtype_name, tensor.stride())
    on_gpu = tensor.device.type == "cuda"
    return view_of(tensor.shape, dtype_name, tensor.stride(), ptr=tensor.data_ptr(),
                   device_type=KDL_CUDA if on_gpu else KDL_CPU,
                   device_id=tensor.device.index if on_gpu else 0, owner=tensor)


_DTYPES_BY_NAME = {d.name: d for d in vars(dtypes).values() if isinstance(d, dtypes.DType)}


def view_of(shape, dtype_name: str, strides=None, *, ptr: int = 0,
            device_type: int = KDL_CUDA, device_id: int = 0, owner=None) -> TensorView:
    """A view from what a framework tells of an array, without DLPack (the adapters).

    With the defaults it describes an array known only at trace time (a JAX tracer, a
    torch fake tensor): address 0 passes every alignment rule and the device is CUDA 0,
    so validation checks shapes, strides and dtypes; the real arrays are checked again
    at run time. ``strides`` in elements, compact when not given. An unknown dtype keeps
    its name for the error messages.
    """
    shape = tuple(shape)
    dtype = _DTYPES_BY_NAME.get(dtype_name) or dtypes.DType(dtype_name, -1, 0)
    strides = tuple(strides) if strides is not None else dlpack.compact_strides(shape)
    return TensorView(ptr=ptr, shape=shape, strides=strides, dtype=dtype,
                      device_type=device_type, device_id=device_id, readonly=False,
                      owner=owner)
