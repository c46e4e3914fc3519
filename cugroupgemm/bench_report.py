"""The benchmark's results and how they are shown: the table, the JSON file, the roofline plot.

Pure data in, text or files out: nothing here touches a GPU, so it is tested on fake rows.
Rates are derived from the stored microseconds and the shape's work (valid rows only).
"""

from __future__ import annotations

import json
import math
import platform
import sys
from dataclasses import asdict, dataclass, field

from .bench_shapes import Shape, Work

DIFF_LIMIT = 1e-3  # DESIGN.md's calc_diff bar: a peer above it is flagged, not trusted


@dataclass(frozen=True)
class Measurement:
    """One contender on one shape: a time, or why there is none."""

    microseconds: float | None = None
    error: str | None = None
    diff: float | None = None  # calc_diff against ours on the checked groups
    host_bound: bool = False  # the GPU waited for the host: the time includes launch gaps

    @property
    def suspect(self) -> bool:
        return self.diff is not None and not self.diff < DIFF_LIMIT  # NaN is suspect too


@dataclass(frozen=True)
class Row:
    shape: Shape
    family: str  # our kernel family on this device
    kernel: str  # its template instance (tile shape, stages, ...)
    work: Work
    ours: Measurement
    others: dict[str, Measurement] = field(default_factory=dict)  # by contender name


@dataclass
class Report:
    device: str
    copy_gbps: float
    fp8_tflops: float | None  # None when no FP8 matmul could be measured (no torch)
    contenders: dict[str, str | None]  # the others: name -> None if timed, else why skipped
    legend: dict[str, str]  # contender name -> what it is
    rows: list[Row] = field(default_factory=list)
    environment: dict = field(default_factory=dict)  # versions, date, options

    @property
    def timed(self) -> list[str]:
        return timed(self.contenders)


def timed(contenders: dict[str, str | None]) -> list[str]:
    """The contenders that run (those with no reason to skip them)."""
    return [name for name, skipped in contenders.items() if skipped is None]


OPTIONAL_PACKAGES = ("torch", "jax", "jaxlib", "ml_dtypes", "matplotlib", "deep_gemm")


def versions() -> dict[str, str | None]:
    """Versions of what a result depends on; optional packages read from their metadata
    (importing torch or jax just to print a version would take seconds)."""
    from importlib import metadata

    import cupy
    import numpy

    from . import __version__, nvrtc

    found: dict[str, str | None] = {
        "cugroupgemm": __version__, "python": platform.python_version(),
        "cupy": cupy.__version__, "numpy": numpy.__version__,
        "nvrtc": ".".join(map(str, nvrtc.version()))}
    for name, read in (("cuda driver", cupy.cuda.runtime.driverGetVersion),
                       ("cuda runtime", cupy.cuda.runtime.runtimeGetVersion)):
        try:
            number = read()  # e.g. 13000; 0 when no driver is installed
        except Exception:  # noqa: BLE001 - no CUDA library on this machine
            number = 0
        found[name] = f"{number // 1000}.{number % 1000 // 10}" if number else None
    for name in OPTIONAL_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            # Run from a source tree (DeepGEMM as scripts/build_deepgemm.sh builds it) it
            # has no metadata, but the peers' check has imported it.
            found[name] = getattr(sys.modules.get(name), "__version__", None)
    return found


def tflops(work: Work, microseconds: float) -> float:
    return work.flops / microseconds / 1e6


def gbps(work: Work, microseconds: float) -> float:
    return work.bytes / microseconds / 1e3


def _ratio_cell(ours: Measurement, other: Measurement | None) -> str:
    if other is None or other.microseconds is None or ours.microseconds is None:
        return "n/a"
    marks = ("!" if other.suspect else "") + ("*" if other.host_bound else "")
    return f"{other.microseconds / ours.microseconds:.2f}x{marks}"


def format_table(report: Report) -> str:
    """The end-of-run table: our time and rates, ratios to ceilings and to each contender."""
    ratio_names = report.timed
    header = (["shape", "G", "m", "em", "n", "k", "family", "us", "TFLOP/s", "GB/s", "bw/copy"]
              + (["TF/fp8"] if report.fp8_tflops else []) + [f"vs {n}" for n in ratio_names])
    lines = []
    for row in report.rows:
        s, ours = row.shape, row.ours
        cells = [s.label, s.groups, s.m, s.expected_m, s.n, s.k, row.family]
        if ours.microseconds is None:
            cells += ["failed"] + [""] * (3 + bool(report.fp8_tflops))
        else:
            us = ours.microseconds
            cells += [f"{us:.1f}{'*' if ours.host_bound else ''}", f"{tflops(row.work, us):.0f}",
                      f"{gbps(row.work, us):.0f}", f"{gbps(row.work, us) / report.copy_gbps:.2f}"]
            if report.fp8_tflops:
                cells.append(f"{tflops(row.work, us) / report.fp8_tflops:.2f}")
        cells += [_ratio_cell(ours, row.others.get(name)) for name in ratio_names]
        lines.append([str(c) for c in cells])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    text = [" ".join(h.rjust(w) if i > 0 else h.ljust(w) for i, (h, w) in
                     enumerate(zip(header, widths)))]
    text += [" ".join(c.rjust(w) if i > 0 else c.ljust(w) for i, (c, w) in
                      enumerate(zip(line, widths))) for line in lines]
    return "\n".join(text + _notes(report))


def _notes(report: Report) -> list[str]:
    fp8 = (f"FP8 matmul {report.fp8_tflops:.0f} TFLOP/s" if report.fp8_tflops
           else "FP8 matmul not measured (needs torch and an FP8 GPU), TF/fp8 column skipped")
    notes = ["", f"{report.device}: ceilings measured in this run: copy {report.copy_gbps:.0f} "
             f"GB/s (read + write), {fp8}.",
             "us: median GPU time; TFLOP/s and GB/s count valid rows only; "
             "'vs X' = X's time / ours (above 1: cugroupgemm is faster)."]
    notes += [f"  {name}: {report.legend.get(name, '')}" for name in report.timed]
    notes += [f"  skipped {name}: {why}" for name, why in report.contenders.items() if why]
    if any(m.suspect for row in report.rows for m in row.others.values()):
        notes.append(f"  !: that result differs from ours (calc_diff >= {DIFF_LIMIT:g}); "
                     "its time is not comparable")
    if any(m.host_bound for row in report.rows for m in (row.ours, *row.others.values())):
        notes.append("  *: the host could not queue calls ahead of the GPU; the time "
                     "includes launch gaps")
    notes += [f"  n/a {row.shape} {name}: {m.error}" for row in report.rows
              for name, m in (("ours", row.ours), *row.others.items()) if m.error]
    return notes


def _measurement_json(m: Measurement, work: Work, copy_gbps: float) -> dict:
    data = asdict(m)
    if m.microseconds is not None:
        data.update(tflops=tflops(work, m.microseconds), gbps=gbps(work, m.microseconds),
                    copy_ratio=gbps(work, m.microseconds) / copy_gbps)
    if m.diff is not None and math.isnan(m.diff):
        data["diff"] = "nan"  # JSON has no NaN
    return data


def to_json(report: Report) -> dict:
    rows = []
    for row in report.rows:
        entry = {**asdict(row.shape), "family": row.family, "kernel": row.kernel,
                 "flops": row.work.flops, "bytes": row.work.bytes,
                 **_measurement_json(row.ours, row.work, report.copy_gbps)}
        entry["others"] = {name: {**_measurement_json(m, row.work, report.copy_gbps),
                                  **({"speedup": m.microseconds / row.ours.microseconds}
                                     if m.microseconds and row.ours.microseconds else {})}
                           for name, m in row.others.items()}
        rows.append(entry)
    return {"device": report.device, "environment": report.environment,
            "ceilings": {"copy_gbps": report.copy_gbps, "fp8_tflops": report.fp8_tflops},
            "contenders": {name: {"skipped": why, "what": report.legend.get(name)}
                           for name, why in report.contenders.items()},
            "rows": rows}


def write_json(report: Report, path: str):
    with open(path, "w") as handle:
        json.dump(to_json(report), handle, indent=1)
        handle.write("\n")


def plot_available() -> str | None:
    """None when matplotlib is importable, else the install hint."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "--plot needs matplotlib: pip install 'cugroupgemm[plot]'"
    return None


def write_plot(report: Report, path: str):
    """A roofline: achieved TFLOP/s against FLOPs per byte moved, under the measured ceilings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5.5))
    series = {"cugroupgemm": [(row.work, row.ours) for row in report.rows]}
    for name in report.timed:
        series[name] = [(row.work, row.others[name]) for row in report.rows if name in row.others]
    intensities = []
    for (name, points), marker in zip(series.items(), "osD^v<>p"):
        xy = [(w.flops / w.bytes, tflops(w, m.microseconds)) for w, m in points
              if m.microseconds and w.bytes]
        intensities += [x for x, _ in xy]
        if xy:
            axes.scatter(*zip(*xy), marker=marker, label=name, alpha=0.8)
    if intensities:
        low, high = min(intensities) / 2, max(intensities) * 2
        xs = [low * (high / low) ** (i / 200) for i in range(201)]
        ceiling = report.fp8_tflops or math.inf
        roof = [min(report.copy_gbps * x / 1e3, ceiling) for x in xs]  # GB/s * FLOP/B = GFLOP/s
        label = f"roof: copy {report.copy_gbps:.0f} GB/s" + (
            f", FP8 matmul {report.fp8_tflops:.0f} TFLOP/s" if report.fp8_tflops else "")
        axes.plot(xs, roof, "k--", lw=1, label=label)
    axes.set(xscale="log", yscale="log", xlabel="arithmetic intensity (FLOP per byte moved)",
             ylabel="TFLOP/s (valid rows)", title=f"masked grouped FP8 GEMM on {report.device}")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
