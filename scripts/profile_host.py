"""Where the host time of a warm eager call goes: cProfile over many calls of a tiny
problem (a few microseconds of GPU work), torch tensors or CuPy arrays with ``out=``, on a
GPU.

    python scripts/profile_host.py [--calls N] [--framework torch|cupy]

Prints the wall time per call, then the functions by own time and by cumulative time.
"""

import argparse
import cProfile
import pstats
import time

from cugroupgemm import batch_deepgemm_fp8_nt_groupwise as gemm
from cugroupgemm.bench_peers import torch_gemm_inputs
from cugroupgemm.testing import make_gemm_inputs


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--framework", choices=("torch", "cupy"), default="torch")
    args = parser.parse_args()
    import cupy

    inputs = make_gemm_inputs(4, 64, 256, 512, [32] * 4, seed=0)
    if args.framework == "torch":
        import torch

        arrays = torch_gemm_inputs(inputs)
        out = torch.empty((4, 64, 256), dtype=torch.bfloat16, device="cuda")
    else:
        arrays = dict(inputs)
        out = cupy.empty((4, 64, 256), dtype=cupy.float32)

    def calls(n):
        for _ in range(n):
            gemm(**arrays, expected_m=32, out=out)
        cupy.cuda.runtime.deviceSynchronize()

    calls(50)
    start, cpu_start = time.perf_counter(), time.process_time()
    calls(args.calls)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    print(f"{args.framework}: {wall / args.calls * 1e6:.1f} us per call (wall), "
          f"{cpu / args.calls * 1e6:.1f} us of CPU time, no profiler")
    profiler = cProfile.Profile()
    profiler.enable()
    calls(args.calls)
    profiler.disable()
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(30)


if __name__ == "__main__":
    main()
