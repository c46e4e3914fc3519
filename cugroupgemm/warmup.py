"""``python -m cugroupgemm warmup``: compile a deployment's kernels into the disk cache ahead of time.

Each shape is planned exactly as a call would plan it (the same validation, family choice
and heuristics), every distinct kernel instance is compiled into the disk cache
(``CUGROUPGEMM_CACHE_DIR``), and a fresh Python process then loads them all and counts
its compiles, which must be zero: serving processes sharing that cache start warm.

The instance depends on the device's compute capability and shared memory per block,
so planning needs the GPU, or ``--arch`` to plan for a reference GPU of that architecture
(e.g. to fill a cache while building a container image on a machine without a GPU).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import dispatch, dtypes, env, logs, nvrtc, selfcheck, validate
from .bench_shapes import Shape
from .build import KernelSpec, compile_kernel, load_kernel, plain_target, source_fingerprint
from .device import DeviceInfo
from .dlpack import KDL_CUDA, TensorView, compact_strides
from .dtypes import OutKind, out_kind_from_user
from .errors import ArgumentValueError
from .problem import Problem

SPEC_FORMAT = "G,m,n,k,EXPECTED_M[,OUT]"
SPEC_HELP = (f"{SPEC_FORMAT}: groups, rows per group, n, k, the expected_m the caller passes "
             "(a number, a range LO-HI, or * for every value 0..m) and the output dtype "
             "(bf16, f16, f32; default bf16), e.g. 32,1024,4096,7168,*")


def _reference_devices() -> dict[int, DeviceInfo]:
    """One common GPU per architecture, for planning without it.

    Only the compute capability and the shared memory per block change which instances
    the families compile; the SM count changes the grid, not the binary.
    """
    from .families.sm90 import REFERENCE_DEVICE as H100

    mib = 2**20
    return {80: DeviceInfo(-1, "A100 (reference)", (8, 0), 108, 166912, 40 * mib),
            86: DeviceInfo(-1, "RTX 3090 (reference)", (8, 6), 82, 101376, 6 * mib),
            89: DeviceInfo(-1, "L40S (reference)", (8, 9), 142, 101376, 96 * mib),
            90: H100,
            100: DeviceInfo(-1, "B200 (reference)", (10, 0), 148, 232448, 126 * mib),
            120: DeviceInfo(-1, "RTX 5090 (reference)", (12, 0), 170, 101376, 96 * mib)}


def device_for_arch(text: str) -> DeviceInfo:
    """'sm_90a', 'sm90', '90' -> the reference device of that architecture."""
    known = _reference_devices()
    match = re.fullmatch(r"(?:sm_?)?(\d+)a?", text.strip().lower())
    if not match or int(match.group(1)) not in known:
        choices = ", ".join(f"sm_{arch}" for arch in known)
        raise ValueError(f"--arch: expected one of {choices} (an 'a' suffix is allowed), "
                         f"got {text!r}")
    return known[int(match.group(1))]


def _expected_m_values(field: str, m: int, text: str) -> range:
    if field == "*":
        return range(m + 1)
    low, _, high = field.partition("-")
    try:
        values = range(int(low), int(high or low) + 1)
    except ValueError:
        raise ValueError(f"{text!r}: EXPECTED_M must be a number, LO-HI or *, got "
                         f"{field!r}") from None
    if not values:
        raise ValueError(f"{text!r}: the EXPECTED_M range {field!r} is empty")
    return values


def parse_shapes(text: str) -> list[tuple[Shape, OutKind]]:
    """One ``--shapes`` entry -> the (shape, output kind) pairs it names."""
    fields = [f.strip() for f in text.split(",")]
    if len(fields) not in (5, 6):
        raise ValueError(f"{text!r}: expected {SPEC_FORMAT}, got {len(fields)} fields")
    try:
        groups, m, n, k = (int(f) for f in fields[:4])
    except ValueError:
        raise ValueError(f"{text!r}: G, m, n and k must be integers") from None
    out_kind = out_kind_from_user(fields[5], "OUT") if len(fields) == 6 else OutKind.BF16
    return [(Shape("warmup", groups, m, n, k, em), out_kind)
            for em in _expected_m_values(fields[4], m, text)]


def _placeholder(shape: tuple[int, ...], dtype: dtypes.DType) -> TensorView:
    return TensorView(ptr=0, shape=shape, strides=compact_strides(shape), dtype=dtype,
                      device_type=KDL_CUDA, device_id=0, readonly=False)


def problem_for(shape: Shape, out_kind: OutKind) -> Problem:
    """The problem a call of this shape describes, checked by the very rules a call obeys."""
    g, m, n, k = shape.groups, shape.m, shape.n, shape.k
    return validate.check_gemm(
        _placeholder((g, m, k), dtypes.FLOAT8_E4M3FN), _placeholder((g, n, k), dtypes.FLOAT8_E4M3FN),
        _placeholder((g, m, k // 128), dtypes.FLOAT32),
        _placeholder((g, -(-n // 128), k // 128), dtypes.FLOAT32),
        _placeholder((g,), dtypes.INT32), shape.expected_m, validate.SUPPORTED_GRANULARITY,
        None, out_kind)


def plan_for(shape: Shape, out_kind: OutKind, info: DeviceInfo, family=None):
    """(family, launch plan) a call of this shape gets on ``info`` (from ``family`` when
    given, else from dispatch); None for an empty problem, which launches nothing."""
    problem = problem_for(shape, out_kind)
    if problem.is_empty:
        return None
    family = family or dispatch.choose_family(info)
    return family, family.plan(problem, info)


@contextlib.contextmanager
def overriding_env(name: str, value: str):
    """Set one of the library's environment variables for the duration (env.py reads them
    on every call)."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            del os.environ[name]
        else:
            os.environ[name] = previous


@dataclass(frozen=True)
class Kernel:
    """One distinct instance to warm, and how many of the planned shapes use it."""

    family: str  # the family, or what else needs it: "quantize", "self-check"
    spec: KernelSpec
    shapes: int


def _self_check_specs(family, info: DeviceInfo) -> list[tuple[str, KernelSpec]]:
    """The instances the first-use self-check builds (selfcheck.PROBES through ``family``
    and the portable kernel), when ``family`` is not validated on ``info``'s architecture."""
    if family.name == selfcheck.FALLBACK or info.arch in family.validated_archs:
        return []
    fallback = dispatch.families()[selfcheck.FALLBACK]
    problems = [Problem(p.groups, p.m, p.n, p.k, p.expected_m, p.out_kind)
                for p in selfcheck.PROBES]
    return [("self-check", checked.plan(problem, info).spec)
            for problem in problems for checked in (family, fallback)]


def plan_kernels(shapes: list[tuple[Shape, OutKind]], info: DeviceInfo,
                 quantizers: bool) -> list[Kernel]:
    """Every distinct instance the shapes need on ``info``, in order.

    A family never validated on this architecture is used once its first-use self-check
    passes (selfcheck.py), else the portable kernel is: both sets of instances are
    warmed, and the check's own, so no outcome of the check compiles anything.
    """
    from . import quantize

    with overriding_env("CUGROUPGEMM_SELFCHECK", "0"):  # plan; the check is not run here
        family = dispatch.choose_family(info)
    checked = env.self_check() and not env.forced_family()  # as a call would decide
    extra = _self_check_specs(family, info) if checked else []
    planners = [(family, family.name)]
    if extra:
        planners.append((dispatch.families()[selfcheck.FALLBACK],
                         f"{selfcheck.FALLBACK} (fallback)"))
    found: dict[KernelSpec, list] = {}
    for shape, out_kind in shapes:
        for planner, name in planners:
            try:
                planned = plan_for(shape, out_kind, info, planner)
            except ArgumentValueError as exc:
                raise ArgumentValueError(f"{shape}: {exc}") from None
            if planned is not None:
                found.setdefault(planned[1].spec, [name, 0])[1] += 1
    if quantizers:
        extra += [("quantize", spec) for spec in quantize.check_specs(plain_target(info))]
    for name, spec in extra:
        found.setdefault(spec, [name, 0])
    return [Kernel(name, spec, count) for spec, (name, count) in found.items()]


@dataclass(frozen=True)
class Warmed:
    kernel: Kernel
    cold_seconds: float | None  # NVRTC time; None when the disk cache already had it
    fresh_seconds: float | None = None  # a fresh process: read from disk (+ load on the GPU)
    fresh_compiles: int | None = None


def compile_kernels(kernels: list[Kernel], progress: logs.Progress) -> list[Warmed]:
    warmed = []
    for kernel in kernels:
        progress.step(f"{kernel.spec.expression} for {kernel.spec.target}")
        with logs.KernelEvents() as events:
            compile_kernel(kernel.spec)
        compiled = [e.seconds for e in events.events if e.event == logs.COMPILE]
        warmed.append(Warmed(kernel, compiled[0] if compiled else None))
    progress.close()
    return warmed


def _fresh_process_environment() -> dict:
    # The child must import this very copy of cugroupgemm (same sources, same cache key).
    package_root = str(Path(__file__).resolve().parent.parent)
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_root, environment.get("PYTHONPATH")) if p)
    return environment


def load_in_fresh_process(warmed: list[Warmed], device_id: int | None) -> list[Warmed]:
    """Load every kernel in a new interpreter (on ``device_id``, or only from disk when
    None) and record its time and compile count there."""
    request = {"device": device_id,
               "kernels": [[w.kernel.spec.source, w.kernel.spec.expression, w.kernel.spec.target]
                           for w in warmed]}
    done = subprocess.run([sys.executable, "-m", "cugroupgemm.warmup"], input=json.dumps(request),
                          capture_output=True, text=True, env=_fresh_process_environment(),
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the fresh process failed:\n{done.stderr.strip()}")
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    return [Warmed(w.kernel, w.cold_seconds, seconds, compiles)
            for w, (seconds, compiles) in zip(warmed, answers)]


def _fresh_process_main():
    """The child's side: load each kernel named on stdin, print [seconds, compiles] each."""
    request = json.loads(sys.stdin.read())
    nvrtc.version()  # once per process, not per kernel: load NVRTC, hash the sources
    source_fingerprint()
    answers = []
    for source, expression, target in request["kernels"]:
        spec = KernelSpec(source, expression, target)
        with logs.KernelEvents() as events:
            start = time.perf_counter()
            if request["device"] is None:
                compile_kernel(spec)
            else:
                load_kernel(spec, request["device"])
            answers.append([time.perf_counter() - start, events.count(logs.COMPILE)])
    print(json.dumps(answers))


def cache_summary(directory: Path | None = None) -> tuple[int, int]:
    """(entries, bytes) of the disk cache."""
    directory = directory or env.cache_dir()
    if not directory.is_dir():
        return 0, 0
    files = [p for p in directory.iterdir() if p.suffix in (".cubin", ".json")]
    return sum(p.suffix == ".cubin" for p in files), sum(p.stat().st_size for p in files)


def format_warmed(warmed: list[Warmed]) -> str:
    header = ("family", "target", "shapes", "cold compile", "fresh process", "kernel")
    lines = [header]
    for w in warmed:
        cold = "cached" if w.cold_seconds is None else f"{w.cold_seconds:.2f} s"
        fresh = ("-" if w.fresh_seconds is None else f"{w.fresh_seconds * 1e3:.1f} ms"
                 + (f" ({w.fresh_compiles} compiles!)" if w.fresh_compiles else ""))
        lines.append((w.kernel.family, w.kernel.spec.target, str(w.kernel.shapes or "-"), cold,
                      fresh, w.kernel.spec.expression))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join(" ".join(c.ljust(w) if i < 2 else c.rjust(w)
                              for i, (c, w) in enumerate(zip(line, widths))) + "  " + line[-1]
                     for line in lines)


def warmed_json(warmed: list[Warmed], info: DeviceInfo) -> dict:
    return {"device": info.name, "arch": info.arch, "cache_dir": str(env.cache_dir()),
            "kernels": [{"family": w.kernel.family, "target": w.kernel.spec.target,
                         "kernel": w.kernel.spec.expression, "shapes": w.kernel.shapes,
                         "cold_seconds": w.cold_seconds, "fresh_seconds": w.fresh_seconds,
                         "fresh_compiles": w.fresh_compiles} for w in warmed]}


def run_warmup(shapes: list[tuple[Shape, OutKind]], info: DeviceInfo, load_on: int | None,
               quantizers: bool = True, json_path: str | None = None) -> int:
    """Plan, compile, check from a fresh process, report. 1 if that process compiled."""
    kernels = plan_kernels(shapes, info, quantizers)
    print(f"warming {len(kernels)} kernels for {len(shapes)} shapes on {info.name}: "
          f"sm_{info.arch}, {info.smem_per_block_optin} B shared memory per block; cache "
          f"{env.cache_dir()}", flush=True)
    warmed = compile_kernels(kernels, logs.Progress(len(kernels)))
    print("loading them in a fresh process...", flush=True)
    warmed = load_in_fresh_process(warmed, load_on)
    print(format_warmed(warmed))
    compiles = sum(w.fresh_compiles or 0 for w in warmed)
    entries, size = cache_summary()
    print(f"fresh process: {compiles} compiles for {len(warmed)} kernels"
          f"{'' if load_on is None else f' (loaded on GPU {load_on})'}; cache: {entries} "
          f"entries, {size / 2**20:.1f} MiB")
    if json_path:
        with open(json_path, "w") as handle:
            json.dump(warmed_json(warmed, info), handle, indent=1)
    return 1 if compiles else 0


if __name__ == "__main__":
    _fresh_process_main()
