"""Framework recognition and stream handles, without importing any framework (CuPy only
where a CuPy stream object is made)."""

import subprocess
import sys

import pytest
from conftest import FakeCudaArray

from cugroupgemm import frameworks, intake
from cugroupgemm.errors import ArgumentTypeError, ArgumentValueError


class CudaStreamProtocol:
    def __cuda_stream__(self):
        return (0, 1234)


class TorchLikeStream:
    cuda_stream = 99


class CupyLikeStream:
    ptr = 77


@pytest.mark.parametrize("stream, handle", [(5, 5), (CudaStreamProtocol(), 1234),
                                            (TorchLikeStream(), 99), (CupyLikeStream(), 77)])
def test_stream_handles(stream, handle):
    assert frameworks.stream_handle(stream) == handle


@pytest.mark.parametrize("bad", [True, "stream", 1.5])
def test_bad_stream_is_a_type_error(bad):
    with pytest.raises(ArgumentTypeError, match=r"^stream: expected an int handle"):
        frameworks.stream_handle(bad)


def test_dlpack_stream_never_zero():
    assert frameworks.for_dlpack(0) == 1 and frameworks.for_dlpack(42) == 42


def test_framework_is_the_module_of_the_array_type():
    assert frameworks.framework_of(FakeCudaArray((1,))) == "fakeframework"

    class JaxlibArray:
        __module__ = "jaxlib.xla_extension"

    assert frameworks.framework_of(JaxlibArray()) == "jax"


def test_call_context_with_explicit_stream_touches_no_gpu():
    context = intake.call_context(FakeCudaArray((2, 2), device_id=3), "a", stream=17)
    assert (context.framework, context.device_id, context.stream) == ("fakeframework", 3, 17)


def test_call_context_refuses_cpu_arrays():
    import numpy as np

    with pytest.raises(ArgumentValueError, match=r"^x: expected an array on a CUDA device, got "
                                                 r"one on CPU"):
        intake.call_context(np.zeros(3), "x")


def test_importing_cugroupgemm_imports_no_framework():
    code = ("import sys, cugroupgemm, cugroupgemm.bench, cugroupgemm.testing; "
            "print(sorted(m for m in ('torch', 'jax', 'jaxlib') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"


def test_a_cupy_stream_wraps_a_raw_handle_without_a_deprecation_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert frameworks.cupy_stream(1234, 0).ptr == 1234


def test_a_cupy_without_from_external_gets_an_external_stream_on_the_device(monkeypatch):
    import types

    class Stream:  # CuPy before 14: no Stream.from_external
        pass

    def external_stream(handle, device_id):
        return ("ExternalStream", handle, device_id)

    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(Stream=Stream,
                                                            ExternalStream=external_stream))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    assert frameworks.cupy_stream(1234, 3) == ("ExternalStream", 1234, 3)


def test_deliver_hands_an_export_over_and_orders_the_consumer_then(monkeypatch):
    """JAX imports an output with DLPack, which orders JAX's stream after ours at that
    moment (the export's hook): deliver does it, so after the launch."""
    import types

    from cugroupgemm import dlpack, dtypes

    asked = []
    export = dlpack.Export(0x7F0000000000, (2, 3), dtypes.FLOAT32, 0, keepalive=None,
                           before_export=asked.append)
    fake_jax = types.SimpleNamespace(dlpack=types.SimpleNamespace(
        from_dlpack=lambda producer: producer.__dlpack__(stream=7) and producer))
    monkeypatch.setitem(sys.modules, "jax", fake_jax)
    assert asked == []
    assert frameworks.deliver("jax", export) is export and asked == [7]
    tensor = object()
    assert frameworks.deliver("torch", tensor) is tensor  # allocated on the stream as is


def test_the_output_is_delivered_after_the_launch(monkeypatch):
    from conftest import fake_gemm_args

    from cugroupgemm import api

    steps = []
    monkeypatch.setattr(api.frameworks, "allocate",
                        lambda *args: (steps.append("allocate") or "view", "allocated"))
    monkeypatch.setattr(api, "launch_gemm", lambda *args: steps.append("launch"))
    monkeypatch.setattr(api.frameworks, "deliver",
                        lambda framework, result: steps.append(("deliver", result)) or "out")
    assert api.batch_deepgemm_fp8_nt_groupwise(**fake_gemm_args(), stream=0) == "out"
    assert steps == ["allocate", "launch", ("deliver", "allocated")]
