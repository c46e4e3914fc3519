"""The caller's framework: recognised from an array's type, used through sys.modules.

No framework is ever imported here: an array of a framework exists only if the caller
imported that framework, so ``sys.modules`` has it. Each adapter answers three things:
the caller's current stream, how to allocate an output it will own, and nothing else.
"""

from __future__ import annotations

import contextlib
import math
import sys

from . import dlpack, dtypes
from .dlpack import TensorView
from .errors import ArgumentTypeError, OutputAllocationError, describe


def framework_of(obj) -> str:
    """'torch', 'jax', 'cupy' or another module name, from the type of ``obj``."""
    root = type(obj).__module__.split(".", 1)[0]
    return "jax" if root == "jaxlib" else root


def stream_handle(stream) -> int:
    """A raw CUDA stream handle from an int, a torch/CuPy stream or a __cuda_stream__ object."""
    if isinstance(stream, int) and not isinstance(stream, bool):
        return stream
    if hasattr(stream, "__cuda_stream__"):
        return int(stream.__cuda_stream__()[1])
    for attribute in ("cuda_stream", "ptr"):  # torch.cuda.Stream, cupy.cuda.Stream
        if hasattr(stream, attribute):
            return int(getattr(stream, attribute))
    raise ArgumentTypeError(f"stream: expected an int handle, a torch or CuPy stream, or an "
                            f"object with __cuda_stream__, got {describe(stream)}")


def current_stream(framework: str, device_id: int) -> int:
    """The stream the caller's framework would run the next operation on."""
    if framework == "torch":
        torch = sys.modules["torch"]
        # The raw handle, without building a Stream object (torch's compiled code reads it
        # this way; a warm call's host cost, docs/performance.md).
        raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
        return int(raw(device_id) if raw else torch.cuda.current_stream(device_id).cuda_stream)
    import cupy

    return int(cupy.cuda.get_current_stream(device_id).ptr)


class _StreamHandle:
    """A raw stream handle in the CUDA stream protocol (for CuPy's Stream.from_external)."""

    def __init__(self, handle: int):
        self.handle = handle

    def __cuda_stream__(self):
        return (0, self.handle)


def cupy_stream(handle: int, device_id: int = -1):
    """A CuPy stream object on the raw ``handle``, which stays its owner's (nothing here
    destroys it); use it inside ``cupy.cuda.Device`` of the stream's device. CuPy 14
    deprecates ExternalStream for Stream.from_external, which takes no device; a CuPy
    without from_external gets ExternalStream with ``device_id`` (-1: not known)."""
    import cupy

    from_external = getattr(cupy.cuda.Stream, "from_external", None)
    if from_external is None:
        return cupy.cuda.ExternalStream(handle, device_id)
    return from_external(_StreamHandle(handle))


def for_dlpack(handle: int) -> int:
    # DLPack reserves 0; the legacy default stream is spelled 1 there.
    return 1 if handle == 0 else handle


def _cupy_dtype(dtype: dtypes.DType):
    import numpy

    if dtype == dtypes.BFLOAT16:
        try:
            import ml_dtypes  # CuPy's own bfloat16 support rests on it
        except ImportError:
            raise ArgumentTypeError(
                "out_dtype: a bfloat16 CuPy result needs the 'ml_dtypes' package; install "
                "it or ask for float16/float32") from None
        return ml_dtypes.bfloat16
    if dtype == dtypes.FLOAT8_E4M3FN:
        return numpy.uint8  # NOTE: CuPy has no fp8 dtype: e4m3 bits in uint8
    return numpy.dtype(dtype.name)


def allocate(framework: str, shape: tuple[int, ...], dtype: dtypes.DType, device_id: int,
             stream: int):
    """A new contiguous device array for the caller's framework: (its view, the array to
    pass to ``deliver`` once the work that writes it is queued on ``stream``).

    The memory is taken on ``stream``, the launch stream: a stream-ordered allocator
    (torch's, CuPy's pool) then never hands it to other work on another stream while the
    GEMM queued there may still write it.
    """
    try:
        return _allocate(framework, shape, dtype, device_id, stream)
    except Exception as exc:
        if not (isinstance(exc, MemoryError) or "OutOfMemory" in type(exc).__name__):
            raise
        nbytes = math.prod(shape) * dtype.itemsize
        raise OutputAllocationError(
            f"out: could not allocate the output {tuple(shape)} of {dtype.name} ({nbytes} "
            f"bytes) on GPU {device_id}: {exc}") from exc


def _allocate(framework, shape, dtype, device_id, stream):
    if framework == "torch":
        torch = sys.modules["torch"]
        device = torch.device("cuda", device_id)
        on_stream = (contextlib.nullcontext() if current_stream("torch", device_id) == stream
                     else torch.cuda.stream(torch.cuda.ExternalStream(stream, device=device)))
        with on_stream:
            tensor = torch.empty(shape, dtype=getattr(torch, dtype.name), device=device)
        return _view_of(tensor.data_ptr(), shape, dtype, device_id, tensor), tensor
    import cupy

    on_stream = (contextlib.nullcontext() if current_stream("cupy", device_id) == stream
                 else cupy_stream(stream, device_id))
    with cupy.cuda.Device(device_id), on_stream:
        if framework == "cupy":
            array = cupy.empty(shape, dtype=_cupy_dtype(dtype))
        else:  # raw bytes; the capsule says what they are
            array = cupy.empty(max(1, math.prod(shape)) * dtype.itemsize, dtype=cupy.uint8)
    view = _view_of(array.data.ptr, shape, dtype, device_id, array)
    if framework == "cupy":
        return view, array
    # Handed over by deliver: its consumer's stream is ordered after ours when it takes
    # the capsule, which must come after the launch that writes it.
    ordering = _order_after(stream, device_id)
    return view, dlpack.Export(view.ptr, shape, dtype, device_id, keepalive=array,
                               before_export=ordering)


def deliver(framework: str, allocated):
    """The caller's array for ``allocate``'s result, the work that writes it queued:
    torch tensors and CuPy arrays as they are; for another framework (JAX) the memory is
    imported now, its stream made to wait for ours (importing it at allocation would
    order it before the launch only)."""
    if isinstance(allocated, dlpack.Export):
        return _from_dlpack(framework, allocated)
    return allocated


def _view_of(ptr, shape, dtype, device_id, owner) -> TensorView:
    return TensorView(ptr=ptr, shape=tuple(shape), strides=dlpack.compact_strides(shape),
                      dtype=dtype, device_type=dlpack.KDL_CUDA, device_id=device_id,
                      readonly=False, owner=owner)


def _order_after(producer_stream: int, device_id: int):
    """A before-export hook: the consumer's stream waits for work queued on ours."""

    def order(consumer_stream):
        if consumer_stream is None or consumer_stream == -1:
            return
        consumer = 0 if consumer_stream == 1 else int(consumer_stream)
        if consumer == producer_stream:
            return
        import cupy

        with cupy.cuda.Device(device_id):
            event = cupy.cuda.Event(block=False, disable_timing=True)
            cupy.cuda.runtime.eventRecord(event.ptr, producer_stream)
            cupy.cuda.runtime.streamWaitEvent(consumer, event.ptr, 0)

    return order


def _from_dlpack(framework: str, export: dlpack.Export):
    module = sys.modules.get(framework)
    if framework == "jax" and module is not None:
        return module.dlpack.from_dlpack(export)
    if module is not None and hasattr(module, "from_dlpack"):
        return module.from_dlpack(export)
    return export  # any DLPack consumer can take it
