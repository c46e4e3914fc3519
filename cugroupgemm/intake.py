"""Step one of every call: the caller's framework, device and stream, and array views."""

from __future__ import annotations

from dataclasses import dataclass

from . import dlpack, dtypes, frameworks
from .dlpack import KDL_CUDA, TensorView, device_name
from .errors import ArgumentValueError


@dataclass(frozen=True)
class CallContext:
    framework: str  # framework of the first array: results are handed back in it
    device_id: int
    stream: int  # raw CUDA stream handle the work is launched on


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
    handle = (frameworks.stream_handle(stream) if stream is not None
              else frameworks.current_stream(framework, device_id))
    return CallContext(framework, device_id, handle)


def take_arrays(arrays: dict[str, object], context: CallContext) -> dict[str, TensorView]:
    """Views of the named arrays, each producer ordered before ``context.stream``."""
    stream = frameworks.for_dlpack(context.stream)
    return {name: dlpack.take(obj, name, stream) for name, obj in arrays.items()}


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
