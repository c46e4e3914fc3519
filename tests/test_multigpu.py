"""Device follows the data: a call runs on the GPU that holds its arrays (issue 8).

Needs two GPUs (skipped otherwise). Inputs live on GPU 1 while the caller's current
device is 0: the result must be right, on GPU 1, GPU 0 untouched, and the caller's
current device left as it was.
"""

import threading

import pytest
from conftest import (
    assert_close_to_reference,
    make_gemm_inputs,
    reference_gpu,
    to_cupy_float64,
)

from cugroupgemm import batch_deepgemm_fp8_nt_groupwise as gemm
from cugroupgemm.bench_peers import torch_gemm_inputs

pytestmark = pytest.mark.multigpu

SHAPE = {"groups": 4, "m": 96, "n": 384, "k": 512}
MASKED = [96, 40, 0, 65]


def inputs_on(device_id, seed=0):
    import cupy as cp

    with cp.cuda.Device(device_id):
        return make_gemm_inputs(SHAPE["groups"], SHAPE["m"], SHAPE["n"], SHAPE["k"], MASKED,
                                seed=seed)


def check_on(device_id, out, inputs):
    import cupy as cp

    with cp.cuda.Device(device_id):
        cp.cuda.runtime.deviceSynchronize()
        assert_close_to_reference(to_cupy_float64(out), reference_gpu(**inputs),
                                  inputs["masked_m"])


def test_cupy_inputs_on_gpu_1_run_there_while_gpu_0_is_current():
    import cupy as cp

    inputs = inputs_on(1)
    with cp.cuda.Device(0):
        out = gemm(**inputs, expected_m=50, out_dtype="float32")
        assert cp.cuda.Device().id == 0
    assert out.device.id == 1
    check_on(1, out, inputs)


def test_torch_inputs_on_gpu_1_touch_nothing_on_gpu_0():
    import torch

    inputs = inputs_on(1)
    tensors = torch_gemm_inputs(inputs)
    torch.cuda.set_device(0)
    allocated_on_0 = torch.cuda.memory_allocated(0)
    out = gemm(**tensors, expected_m=50, out_dtype=torch.float32)
    assert out.device == torch.device("cuda", 1)
    assert torch.cuda.current_device() == 0
    assert torch.cuda.memory_allocated(0) == allocated_on_0
    torch.cuda.synchronize(1)
    check_on(1, out, inputs)


def test_jax_inputs_on_the_second_device_come_back_there():
    jax = pytest.importorskip("jax")
    import cupy as cp

    inputs = inputs_on(1)
    second = jax.devices("gpu")[1]
    arrays = {name: jax.device_put(cp.asnumpy(array), second) for name, array in inputs.items()}
    arrays["a"], arrays["b"] = (arrays[name].view(jax.numpy.float8_e4m3fn) for name in "ab")
    out = gemm(**arrays, expected_m=50, out_dtype="float32")
    assert out.devices() == {second}
    check_on(1, _cupy_on(1, out), inputs)


def _cupy_on(device_id, jax_array):
    import cupy as cp
    import numpy as np

    with cp.cuda.Device(device_id):
        return cp.asarray(np.asarray(jax_array))


def test_arrays_on_different_gpus_raise_naming_each_argument():
    inputs = inputs_on(0)
    inputs["b"] = inputs_on(1)["b"]
    with pytest.raises(ValueError, match=r"one CUDA device; got a on cuda:0, b on cuda:1"):
        gemm(**inputs, expected_m=50)


def test_two_threads_each_driving_a_gpu_are_both_right():
    per_device = {d: inputs_on(d, seed=d + 1) for d in (0, 1)}
    results, errors = {}, []

    def run(device_id):
        try:
            for _ in range(5):
                results[device_id] = gemm(**per_device[device_id], expected_m=50,
                                          out_dtype="float32")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(d,)) for d in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for device_id, out in results.items():
        check_on(device_id, out, per_device[device_id])
