"""Time sm90 tile configs on the benchmark's shapes, or measure accuracy per promote_k.

    python scripts/tune_sm90.py [--quick] [--once]
    python scripts/tune_sm90.py --accuracy   (and the FP8 peers', where they can run)

--once launches each (shape, config) once with no timing, for a profiler:
    ncu --clock-control none --kernel-name regex:sm90_fp8 --section SpeedOfLight \
        python scripts/tune_sm90.py --quick --once

Each config is forced through the dispatcher; times are CUDA-event medians (the
benchmark's timer) on the benchmark's rotated inputs, drawn once per shape. Prints one
line per (shape, config); the fastest is marked *, the heuristic's choice "default".
"""

import argparse
import contextlib

from cugroupgemm import bench, bench_shapes
from cugroupgemm.bench_timing import time_calls
from cugroupgemm.device import device_info
from cugroupgemm.dtypes import OutKind
from cugroupgemm.families import sm90
from cugroupgemm.testing import kernel_family, sm90_config

CANDIDATES = [  # block_m, block_n, promote_k, pipes[, CTAs per cluster sharing b[, turns
    # [, split_tail[, dynamic]]]]
    (64, 128, 64, 1), (64, 128, 64, 2), (128, 128, 64, 1), (128, 128, 128, 1),
    (64, 128, 128, 2), (64, 128, 64, 2, 2), (64, 128, 64, 1, 2), (64, 128, 64, 2, 1, True),
    (64, 128, 64, 2, 2, True), (64, 128, 64, 2, 1, False, True), (128, 128, 64, 1, 1, False, True),
    (64, 128, 64, 2, 1, False, False, True), (64, 128, 64, 2, 1, False, True, True),
    (128, 128, 64, 1, 1, False, True, True),
]


@contextlib.contextmanager
def forced(config):
    """The sm90 family with ``config``, chosen whatever the dispatcher would pick."""
    with kernel_family("sm90"), sm90_config(config):
        yield


def config_of(candidate, info):
    """(block_m, block_n, promote_k, pipes[, cluster[, turns[, split_tail[, dynamic]]]]) -> the
    config, stages from ``info``."""
    block_m, block_n, promote_k, pipes, *rest = candidate
    options = {name: kind(value) for (name, kind), value in
               zip((("cluster", int), ("turns", bool), ("split_tail", bool),
                    ("dynamic", bool)), rest)}
    return sm90.fitted_config(block_m, block_n, info, OutKind.F16, promote_k=promote_k,
                              pipes=pipes, **options)


def launch_config(case, candidate, info) -> None:
    """Our GEMM on ``case`` (f16 out) with ``candidate``'s config forced, launched once and
    waited for (for a profiler)."""
    import cupy as cp

    with forced(config_of(candidate, info)):
        bench.prepare_ours(case, OutKind.F16).call(0)
    cp.cuda.runtime.deviceSynchronize()


def launch_once(shapes, info):
    for shape in shapes:
        case = bench.make_case(shape)
        for candidate in CANDIDATES:
            launch_config(case, candidate, info)
            print(f"launched {shape.label} G{shape.groups} em{shape.expected_m} {candidate}",
                  flush=True)


def time_config(case, candidate, info) -> float:
    """Median µs of our GEMM on ``case`` (f16 out) with ``candidate``'s config forced."""
    with forced(config_of(candidate, info)):
        prepared = bench.prepare_ours(case, OutKind.F16)
        return time_calls(prepared.call, len(case.inputs), 30).microseconds


def tune(shapes, info):
    for shape in shapes:
        case = bench.make_case(shape)
        work = bench_shapes.work(shape, case.masked_m, 2)
        default = sm90.choose_config(sm90.Problem(shape.groups, shape.m, shape.n, shape.k,
                                                  shape.expected_m, OutKind.F16), info)
        rows = [(time_config(case, candidate, info), candidate) for candidate in CANDIDATES]
        best = min(us for us, _ in rows)
        for us, candidate in rows:
            mark = "*" if us == best else " "
            chosen = "default" if config_of(candidate, info) == default else ""
            print(f"{shape.label:8s} G{shape.groups:<3d} em{shape.expected_m:<5d} n{shape.n:<5d} "
                  f"k{shape.k:<5d} {str(candidate):34s} {us:8.1f} us "
                  f"{work.flops / us / 1e6:7.1f} TF {work.bytes / us / 1e3:6.0f} GB/s {mark} {chosen}",
                  flush=True)


def accuracy(info):
    """Error against the float64 reference per promote_k (fp32 out), then in bf16 out our
    default beside the FP8 peers that can run here (DeepGEMM writes bf16 only)."""
    import cupy as cp
    import numpy as np

    from cugroupgemm import batch_deepgemm_fp8_nt_groupwise, bench_peers
    from cugroupgemm.testing import make_gemm_inputs, reference_gpu

    groups, m, n, k = 8, 1024, 4096, 7168
    inputs = make_gemm_inputs(groups, m, n, k, [m] * groups, seed=1)
    ref = reference_gpu(**inputs)

    def report(label, out):
        err = out.astype(cp.float64) - ref
        excess = float((cp.abs(err) - 3e-2 * (1 + cp.abs(ref))).max())
        bias = float((err * cp.sign(ref)).mean())
        print(f"accuracy G{groups} m{m} n{n} k{k} {label:26s} std(err) "
              f"{float(err.std()):.2e} max|err| {float(cp.abs(err).max()):.3e} "
              f"max excess over 3e-2(1+|ref|) {excess:+.3e} bias toward 0 {bias:+.2e}", flush=True)

    for candidate in [(128, 128, 128, 1), (128, 128, 64, 1), (64, 128, 64, 2),
                      (64, 128, 128, 2)]:
        with forced(config_of(candidate, info)):
            report(str(candidate), batch_deepgemm_fp8_nt_groupwise(
                **inputs, expected_m=m, out_dtype="float32"))
    report("default, bf16 out", batch_deepgemm_fp8_nt_groupwise(**inputs, expected_m=m))
    shape = bench_shapes.Shape("accuracy", groups, m, n, k, m)
    case = bench_peers.Case(shape, cp.asnumpy(inputs["masked_m"]), [inputs])
    for name, missing in bench_peers.find_peers(["deepgemm", "cublas-looped"]).items():
        if missing:
            print(f"accuracy: {name} skipped ({missing})")
            continue
        prepared = next(peer for peer in bench_peers.PEERS if peer.name == name).prepare(case)
        prepared.call(0)
        report(f"{name}, bf16 out", cp.asarray(np.stack([prepared.valid_rows(g)
                                                         for g in range(groups)])))


def main():
    import cupy as cp

    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--accuracy", action="store_true")
    parser.add_argument("--once", action="store_true", help="launch once each, no timing")
    args = parser.parse_args()
    info = device_info(cp.cuda.Device().id)
    shapes = bench_shapes.QUICK if args.quick else bench_shapes.HOPPER
    if args.once:
        launch_once(shapes, info)
        return
    if args.accuracy:
        accuracy(info)
        return
    tune(shapes, info)


if __name__ == "__main__":
    main()
