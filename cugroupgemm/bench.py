"""``python -m cugroupgemm bench``: GPU time of the GEMM beside its peers, against ceilings
measured in the same run.

For each shape: inputs are drawn once (rotated so b is not served from L2), then ours,
our portable kernel and every peer found installed are timed by the same timer
(bench_timing), and each peer's result is compared with ours. FLOPs and bytes count valid
rows only (bench_shapes). The table, JSON and plot come from bench_report; the peers live
in bench_peers.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.util
import sys
from dataclasses import dataclass

from . import bench_peers, bench_report, logs
from .bench_peers import Case, Prepared
from .bench_report import Measurement, Report, Row
from .bench_shapes import Shape, draw_masked_m, work
from .bench_timing import copy_bandwidth_gbps, rotation_sets, time_calls
from .dtypes import OutKind, out_kind_from_user
from .errors import CuGroupGemmError

PORTABLE = "portable"


@dataclass(frozen=True)
class BenchOptions:
    shapes: list[Shape]
    repeats: int = 50
    peers: tuple[str, ...] | None = None  # None: every peer found installed
    portable: bool = True  # also time our portable kernel when another family is chosen
    out_dtype: str | None = None  # None: bf16 when ml_dtypes is installed, else f16
    json_path: str | None = None
    plot_path: str | None = None


def default_out_kind() -> OutKind:
    # NOTE: a bf16 CuPy array needs ml_dtypes; f16 moves the same bytes.
    return OutKind.BF16 if importlib.util.find_spec("ml_dtypes") else OutKind.F16


def make_case(shape: Shape) -> Case:
    from .testing import make_gemm_inputs

    masked_m = draw_masked_m(shape)
    sets = rotation_sets(shape.groups * (shape.m + shape.n) * shape.k)
    return Case(shape, masked_m, [make_gemm_inputs(shape.groups, shape.m, shape.n, shape.k,
                                                   masked_m, seed=s) for s in range(sets)])


def prepare_ours(case: Case, out_kind: OutKind) -> Prepared:
    """Our GEMM as a CuPy user calls it (the output allocated by the library)."""
    import cupy as cp
    import numpy as np

    from . import batch_deepgemm_fp8_nt_groupwise

    results = {}

    def call(i):
        results[i] = batch_deepgemm_fp8_nt_groupwise(
            **case.inputs[i], expected_m=case.shape.expected_m, out_dtype=out_kind.dtype.name)

    def valid_rows(g):
        return cp.asnumpy(results[0][g, :int(case.masked_m[g])]).astype(np.float32)

    return Prepared(call, valid_rows)


def _checked_groups(masked_m) -> list[int]:
    """The groups a contender's result is compared on: the first and last non-empty ones."""
    active = [g for g, rows in enumerate(masked_m) if rows > 0]
    return sorted({active[0], active[-1]}) if active else []


def diff_against(ours: Prepared, other: Prepared, case: Case) -> float | None:
    import numpy as np

    from .reference import calc_diff

    groups = _checked_groups(case.masked_m)
    if not groups:
        return None
    return calc_diff(np.concatenate([other.valid_rows(g).ravel() for g in groups]),
                     np.concatenate([ours.valid_rows(g).ravel() for g in groups]))


def measure(prepare, case: Case, repeats: int, ours: Prepared | None = None):
    """(Measurement, Prepared or None): a failure becomes an 'n/a' cell, not the end of the run."""
    try:
        prepared = prepare(case)
        timing = time_calls(prepared.call, len(case.inputs), repeats)
        diff = diff_against(ours, prepared, case) if ours is not None else None
    except Exception as exc:  # noqa: BLE001 - a peer that cannot run this shape is a gap
        return Measurement(error=f"{type(exc).__name__}: {exc}".splitlines()[0][:200]), None
    return Measurement(timing.microseconds, diff=diff, host_bound=timing.host_bound), prepared


def _fp8_ceiling(repeats: int) -> float | None:
    """TFLOP/s of a dense FP8 matmul; None without torch or an FP8 matmul on this GPU."""
    if bench_peers.torch_missing():
        return None
    size = bench_peers.FP8_CEILING_SIZE
    try:
        timing = time_calls(bench_peers.fp8_matmul_call(size), 1, repeats)
    except RuntimeError:  # torch's FP8 matmul needs compute capability 8.9 or newer
        return None
    return 2 * size**3 / timing.microseconds / 1e6


def run_benchmark(options: BenchOptions) -> int:
    from .device import device_info, gpu_count
    from .warmup import overriding_env, plan_for

    if gpu_count() == 0:
        print("bench needs a GPU; none is visible", file=sys.stderr)
        return 2
    if options.plot_path and bench_report.plot_available():
        print(bench_report.plot_available(), file=sys.stderr)
        return 2
    import cupy as cp

    info = device_info(cp.cuda.Device().id)
    out_kind = out_kind_from_user(options.out_dtype) if options.out_dtype else default_out_kind()
    try:  # every shape is checked by the library's rules before any work starts
        plans = [plan_for(shape, out_kind, info) for shape in options.shapes]
    except (ValueError, CuGroupGemmError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    chosen = next((family.name for family, _ in filter(None, plans)), PORTABLE)
    contenders: dict[str, str | None] = {}
    legend = {peer.name: peer.what for peer in bench_peers.PEERS}
    if options.portable and chosen != PORTABLE:
        contenders[PORTABLE] = None
        legend[PORTABLE] = "cugroupgemm's portable kernel (mma.sync), CUGROUPGEMM_KERNEL=portable"
    contenders.update(bench_peers.find_peers(options.peers))
    timed = bench_report.timed(contenders)

    progress = logs.Progress(2 + len(options.shapes) * (1 + len(timed)))
    progress.step("copy bandwidth")
    copy_gbps = copy_bandwidth_gbps()
    progress.step("FP8 matmul ceiling")
    report = Report(device=f"{info.name} ({info.sm_count} SMs)", copy_gbps=copy_gbps,
                    fp8_tflops=_fp8_ceiling(options.repeats), contenders=contenders,
                    legend=legend, environment=_environment(out_kind, options))
    peers = {peer.name: peer for peer in bench_peers.PEERS}
    ours_prepare = lambda c: prepare_ours(c, out_kind)  # noqa: E731
    for shape, planned in zip(options.shapes, plans):
        progress.step(f"{shape}: cugroupgemm")
        case = make_case(shape)
        ours_measurement, ours = measure(ours_prepare, case, options.repeats)
        others = {}
        for name in timed:
            progress.step(f"{shape}: {name}")
            forced = (overriding_env("CUGROUPGEMM_KERNEL", PORTABLE) if name == PORTABLE
                      else contextlib.nullcontext())
            with forced:
                others[name], _ = measure(peers[name].prepare if name in peers else ours_prepare,
                                          case, options.repeats, ours)
        family, kernel = (planned[0].name, planned[1].spec.expression) if planned else ("-", "-")
        report.rows.append(Row(shape, family, kernel,
                               work(shape, case.masked_m, out_kind.dtype.itemsize),
                               ours_measurement, others))
        del case, ours  # free this shape's inputs before the next one is drawn
    progress.close()
    print(bench_report.format_table(report))
    if options.json_path:
        bench_report.write_json(report, options.json_path)
        print(f"wrote {options.json_path}")
    if options.plot_path:
        bench_report.write_plot(report, options.plot_path)
        print(f"wrote {options.plot_path}")
    return 0


def _environment(out_kind: OutKind, options: BenchOptions) -> dict:
    return {"versions": bench_report.versions(), "out_dtype": out_kind.dtype.name,
            "repeats": options.repeats,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
