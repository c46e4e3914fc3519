"""``python -m cugroupgemm.bench_adapters``: what a call costs inside ``jax.jit`` and under
``torch.compile`` / CUDA graphs, against the eager call.

One small problem (a few microseconds of GPU work) is called many times back to back and
the device synchronised once at the end: the wall time per call is then the host cost of
the path (framework dispatch, the adapter, our launch) wherever it exceeds the GPU time.
Each path runs when its framework is installed and sees the GPU; "floor" rows time a
trivial operation through the same framework machinery, for scale.
"""

from __future__ import annotations

import argparse
import datetime
import time

WARMUP_CALLS = 20


def time_per_call(call, calls: int) -> float:
    """Microseconds per call of ``call()``, over ``calls`` calls after a warm-up."""
    import cupy

    for _ in range(WARMUP_CALLS):
        call()
    cupy.cuda.runtime.deviceSynchronize()
    start = time.perf_counter()
    for _ in range(calls):
        call()
    cupy.cuda.runtime.deviceSynchronize()
    return (time.perf_counter() - start) / calls * 1e6


def jax_gemm_inputs(inputs: dict) -> dict:
    """The GEMM's CuPy inputs (e4m3 as uint8) as JAX arrays on the same memory, a and b
    as float8_e4m3fn (these paths' and the GPU tests')."""
    import jax
    import jax.numpy as jnp

    arrays = {name: jax.dlpack.from_dlpack(array) for name, array in inputs.items()}
    for name in ("a", "b"):
        arrays[name] = jax.lax.bitcast_convert_type(arrays[name], jnp.float8_e4m3fn)
    return arrays


def jax_paths(inputs, expected_m: int):
    """(name, call) for the JAX paths, the eager one first; [] without JAX on a GPU."""
    try:
        import jax
    except ImportError:
        return []
    if jax.default_backend() != "gpu":
        return []
    from . import jax_ops
    from .api import batch_deepgemm_fp8_nt_groupwise as eager_gemm

    arrays = jax_gemm_inputs(inputs)

    def jitted(command_buffer_compatible):
        return jax.jit(lambda x: jax_ops.batch_deepgemm_fp8_nt_groupwise(
            **x, expected_m=expected_m, command_buffer_compatible=command_buffer_compatible))

    floor = jax.jit(lambda x: x["a_scale"] * 2)
    with_buffers, without_buffers = jitted(True), jitted(False)
    return [("jax eager (DLPack)", lambda: eager_gemm(**arrays, expected_m=expected_m)),
            ("jax.jit, command_buffer_compatible=True", lambda: with_buffers(arrays)),
            ("jax.jit, command_buffer_compatible=False", lambda: without_buffers(arrays)),
            ("jax.jit floor (a_scale * 2)", lambda: floor(arrays))]


def torch_paths(inputs, expected_m: int):
    """(name, call) for the torch paths, the eager one first; [] without torch on a GPU."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    from . import torch_ops
    from .api import batch_deepgemm_fp8_nt_groupwise as eager_gemm
    from .bench_peers import torch_gemm_inputs

    tensors = torch_gemm_inputs(inputs)
    groups, m, _ = tensors["a"].shape
    out = torch.empty((groups, m, tensors["b"].shape[1]), dtype=torch.bfloat16, device="cuda")

    def op_out():
        torch_ops.batch_deepgemm_fp8_nt_groupwise(**tensors, expected_m=expected_m, out=out)

    def op_new():
        return torch_ops.batch_deepgemm_fp8_nt_groupwise(**tensors, expected_m=expected_m)

    compiled_out = torch.compile(op_out, fullgraph=True)
    compiled_new = torch.compile(op_new, fullgraph=True)
    floor = torch.compile(lambda s: s * 2, fullgraph=True)
    return [("torch eager (DLPack), out=", lambda: eager_gemm(**tensors, expected_m=expected_m,
                                                              out=out)),
            ("torch custom op, out=", op_out),
            ("torch custom op, new output (zero fill)", op_new),
            ("torch.compile(fullgraph=True), out=", compiled_out),
            ("torch.compile(fullgraph=True), new output", compiled_new),
            ("CUDA graph replay, out=", _graphed(op_out).replay),
            ("torch.compile floor (a_scale * 2)", lambda: floor(tensors["a_scale"]))]


def _graphed(call):
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        call()  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        call()
    return graph


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--m", type=int, default=64)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--k", type=int, default=512)
    parser.add_argument("--calls", type=int, default=1000)
    options = parser.parse_args(argv)

    import cupy

    from .device import device_info, gpu_count
    from .testing import make_gemm_inputs

    if gpu_count() == 0:
        print("cugroupgemm.bench_adapters: needs a CUDA GPU")
        return 1

    masked = [options.m // 2] * options.groups
    inputs = make_gemm_inputs(options.groups, options.m, options.n, options.k, masked)
    expected_m = max(1, options.m // 2)
    info = device_info(cupy.cuda.Device().id)
    print(f"# {info.name}, {datetime.date.today()}: G={options.groups} m={options.m} "
          f"n={options.n} k={options.k}, masked_m={options.m // 2}, bf16 out, "
          f"{options.calls} calls per path, wall time per call")
    print(f"{'path':<46}{'us/call':>9}{'vs eager':>10}")
    for paths in (jax_paths(inputs, expected_m), torch_paths(inputs, expected_m)):
        times = [time_per_call(call, options.calls) for _, call in paths]
        for index, ((name, _), micros) in enumerate(zip(paths, times)):
            added = f"{micros - times[0]:+9.1f}" if index else ""
            print(f"{name:<46}{micros:9.1f}{added:>10}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
