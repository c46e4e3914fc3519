"""Shared fixtures: the gpu marker's skip, fake device arrays, and input generators."""

from __future__ import annotations

import ctypes

import pytest

from cugroupgemm import device, dlpack, dtypes, warm_calls

HAS_GPU = device.gpu_count() > 0


@pytest.fixture(autouse=True)
def forget_warm_calls():
    """Each test starts cold: tests replace the library's internals between calls."""
    warm_calls.clear()


def pytest_collection_modifyitems(config, items):
    skips = {"gpu": (HAS_GPU, "needs a CUDA GPU"),
             "multigpu": (device.gpu_count() >= 2, "needs two CUDA GPUs")}
    for item in items:
        for marker, (runnable, reason) in skips.items():
            if marker in item.keywords and not runnable:
                item.add_marker(pytest.mark.skip(reason=reason))


class FakeCudaArray:
    """A DLPack producer that claims a CUDA array at a fake address (never dereferenced).

    Lets validation and intake be tested on a machine without a GPU.
    """

    __module__ = "fakeframework"

    def __init__(self, shape, dtype=dtypes.FLOAT8_E4M3FN, strides=None, ptr=0x7F0000000000,
                 device_id=0, device_type=dlpack.KDL_CUDA, readonly=False):
        self._export = dlpack.Export(ptr, shape, dtype, device_id, keepalive=None,
                                     device_type=device_type, strides=strides)
        self.readonly = readonly
        self.shape = tuple(shape)

    def __dlpack_device__(self):
        return self._export.__dlpack_device__()

    def __dlpack__(self, *, stream=None, max_version=None, **_):
        if not self.readonly:
            return self._export.__dlpack__(stream=stream, max_version=max_version)
        capsule = self._export.__dlpack__(stream=stream, max_version=(1, 1))
        address = dlpack._capsule_get_pointer(capsule, b"dltensor_versioned")
        dlpack.DLManagedTensorVersioned.from_address(address).flags = 1  # DLPACK_FLAG_READ_ONLY
        return capsule


def fake_gemm_args(groups=2, m=64, n=256, k=512, **overrides):
    """Valid fake GEMM arguments; override any of them by name."""
    args = dict(
        a=FakeCudaArray((groups, m, k)),
        b=FakeCudaArray((groups, n, k)),
        a_scale=FakeCudaArray((groups, m, k // 128), dtypes.FLOAT32),
        b_scale=FakeCudaArray((groups, -(-n // 128), k // 128), dtypes.FLOAT32),
        masked_m=FakeCudaArray((groups,), dtypes.INT32),
        expected_m=min(m, 16),
    )
    args.update(overrides)
    return args


import os  # noqa: E402

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX shares the GPU here

from cugroupgemm.testing import (  # noqa: E402, F401 - shared by the test modules
    assert_close_to_reference,
    make_gemm_inputs,
    reference_gpu,
    to_cupy_float64,
)


def capture_torch_graph(step):
    """A torch CUDA graph of ``step()`` (run once on a side stream first, outside the
    capture, as torch advises) and what ``step`` returned inside the capture."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        result = step()
    return graph, result


def refill_torch_inputs(static: dict, inputs: dict) -> None:
    """Copy ``inputs`` (make_gemm_inputs') into the torch tensors a graph captured."""
    from cugroupgemm.bench_peers import torch_gemm_inputs

    for name, tensor in torch_gemm_inputs(inputs).items():
        static[name].copy_(tensor)


class FakeTmaDriver:
    """Stands in for libcuda's tensor-map encoder: records each call, writes 128 bytes."""

    def __init__(self, status=0):
        self.calls = []
        self.status = status

    def cuTensorMapEncodeTiled(self, out, dtype, rank, address, dims, strides, box, elem,
                               interleave, swizzle, l2, oob):
        self.calls.append(dict(out=out.value, dtype=dtype, rank=rank, address=address.value,
                               dims=tuple(dims[i] for i in range(rank)),
                               strides=tuple(strides[i] for i in range(rank - 1)),
                               box=tuple(box[i] for i in range(rank)),
                               elem=tuple(elem[i] for i in range(rank)),
                               swizzle=swizzle, oob=oob))
        assert out.value % 64 == 0
        ctypes.memmove(out.value, bytes(range(128)), 128)
        return self.status

    def cuGetErrorString(self, status, text):
        return 1


@pytest.fixture
def fake_driver(monkeypatch):
    from cugroupgemm import tma

    driver = FakeTmaDriver()
    monkeypatch.setattr(tma, "_driver", lambda: driver)
    tma.clear_cache()
    yield driver
    tma.clear_cache()


def compile_static_asserts(kernel_source: str, target: str, asserts: list[str]) -> None:
    """Compile ``asserts`` (C++ static_assert lines) after including ``kernel_source``
    with NVRTC for ``target``: how a host mirror of a kernel's constants is checked."""
    from cugroupgemm import build, nvrtc

    source = f'#include "{kernel_source}"\n' + "\n".join(asserts) + "\n"
    nvrtc.compile_program(source, "layout_check.cu", build.KernelSpec(kernel_source, "", target)
                          .options(), [])
