"""First-use self-check of kernel families never validated on the running GPU's architecture.

A family lists the architectures it has been run and checked on (``validated_archs``).
On any other one, the first time a process would use the family, ``trusted`` runs a few
small random problems through it and through the portable kernel in a child process and
compares the two. The verdict holds for the rest of the process. On disagreement (or a
crash, or no answer within ``TIMEOUT_S``) it warns once (a ``SelfCheckWarning`` and a
log record) and dispatch falls back to the next family that runs, the portable one.

NOTE: why a child process: a kernel never run on its hardware is as likely to hang (a
barrier protocol bug) or to leave a sticky CUDA error (a bad descriptor) as to compute a
wrong result, and either would take the caller's CUDA context down with it. The child
has its own context, so the caller's is untouched whatever happens, and the check never
runs inside the caller's CUDA graph capture.

``CUGROUPGEMM_SELFCHECK=0`` skips it (unvalidated families are trusted);
``CUGROUPGEMM_KERNEL`` forces a family without checking it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import env
from .dtypes import OutKind

log = logging.getLogger("cugroupgemm")

FALLBACK = "portable"  # the reference every other family is compared with
TIMEOUT_S = 300  # NVRTC builds of both families included (first use, empty disk cache)
VERDICT_PREFIX = "cugroupgemm self-check: "
TOLERANCE = 1e-2  # |got - want| <= TOLERANCE * (1 + |want|): bf16 rounding, not a bug


class SelfCheckWarning(RuntimeWarning):
    """A kernel family disagreed with the portable kernel and is not used."""


# ---- in the caller's process -----------------------------------------------------------

_verdicts: dict[tuple[str, tuple[int, int]], bool] = {}  # (family, compute capability)
_lock = threading.Lock()


def trusted(family, info) -> bool:
    """Whether dispatch may use ``family`` on ``info``: validated there, the fallback
    itself, the check switched off, or its self-check passed (run once per process)."""
    if family.name == FALLBACK or info.arch in family.validated_archs:
        return True
    key = (family.name, info.cc)
    verdict = _verdicts.get(key)
    if verdict is not None:
        return verdict
    if not env.self_check():
        return True
    with _lock:
        if key not in _verdicts:
            log.info("cugroupgemm: self-checking the %s kernel family on %s (sm_%d); it has "
                     "not been validated there", family.name, info.name, info.arch)
            failure = _run_child(family.name, info.device_id)
            if failure is not None:
                _report(family.name, info, failure)
            _verdicts[key] = failure is None
        return _verdicts[key]


def _child_command(family_name: str, device_id: int) -> list[str]:
    code = "import sys; from cugroupgemm.selfcheck import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, family_name, str(device_id)]


def _run_child(family_name: str, device_id: int) -> str | None:
    """None if the child reports a pass, else what went wrong."""
    # The child imports this very package, wherever the caller found it.
    package_parent = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH")) if p)
    try:
        done = subprocess.run(_child_command(family_name, device_id), capture_output=True,
                              text=True, timeout=TIMEOUT_S, env={**os.environ, "PYTHONPATH": path})
    except subprocess.TimeoutExpired:
        return f"no answer within {TIMEOUT_S} s (a hung kernel?)"
    except OSError as exc:
        return f"the check could not start: {exc}"
    lines = done.stdout.strip().splitlines()
    if lines and lines[-1].startswith(VERDICT_PREFIX):
        verdict = lines[-1][len(VERDICT_PREFIX):]
        return None if verdict == "passed" else verdict.removeprefix("failed: ")
    tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
    return f"the check exited with status {done.returncode} and no verdict: {tail}"


def _report(family_name: str, info, failure: str):
    message = (f"cugroupgemm: the {family_name} kernel family has never been validated on "
               f"{info.name} (sm_{info.arch}) and its self-check failed: {failure}. This "
               f"process uses the portable kernel instead; please report this. "
               f"CUGROUPGEMM_KERNEL={family_name} forces the family anyway.")
    log.warning(message)
    warnings.warn(message, SelfCheckWarning, stacklevel=2)


# ---- in the child process --------------------------------------------------------------

@dataclass(frozen=True)
class Probe:
    groups: int
    m: int
    n: int
    k: int
    masked_m: tuple[int, ...]
    expected_m: int
    out_kind: OutKind


# Small problems whose expected_m values reach every tile shape the heuristics pick
# (tests/test_selfcheck.py holds them to that), and the paths where an unseen kernel goes
# wrong: stage rings that wrap, partial m and n tiles, empty and one-row groups, rows at
# tile edges, several tiles per CTA, every output kind.
PROBES = (
    # Decode: 16 k blocks wrap every stage ring; m and n not multiples of 128 (a 16-column
    # n tail).
    Probe(5, 96, 272, 2048, (0, 1, 17, 95, 96), 8, OutKind.F32),
    Probe(4, 130, 400, 1280, (130, 97, 64, 1), 80, OutKind.F16),
    Probe(3, 300, 272, 640, (300, 193, 160), 160, OutKind.BF16),
    # Enough n tiles for a 128-row tile per group and n tile to cover 132 SMs (sm90's
    # wide tile): a group's rows in both halves of such a tile, in its first half only,
    # and past one tile.
    Probe(2, 72, 8464, 256, (72, 40), 56, OutKind.BF16),
    Probe(2, 150, 8464, 256, (150, 97), 96, OutKind.BF16),
    # Prefill: about 330 live 128 x 128 tiles, more than two per CTA on 148 SMs.
    Probe(8, 257, 3840, 256, (257, 256, 129, 128, 127, 65, 1, 0), 200, OutKind.BF16),
)
POISON = {OutKind.BF16: 0x7E57, OutKind.F16: 0x7E57, OutKind.F32: 0x7E577E57}
_BITS = {OutKind.BF16: np.uint16, OutKind.F16: np.uint16, OutKind.F32: np.uint32}


def make_inputs(probe: Probe, seed: int) -> dict[str, np.ndarray]:
    """Host inputs whose products and 128-wide sums are exact in fp32 (e4m3 integers in
    [-8, 8]), with distinct non-power-of-two scales 1 + i/1024: any difference from the
    portable kernel beyond output rounding is a bug, not accumulation order."""
    from .reference import float32_to_fp8_e4m3

    rng = np.random.default_rng(seed)
    k_blocks, n_blocks = probe.k // 128, -(-probe.n // 128)

    def codes(shape):
        return float32_to_fp8_e4m3(rng.integers(-8, 9, size=shape).astype(np.float32))

    def scales(shape):
        return (1 + rng.integers(0, 1024, size=shape) / 1024).astype(np.float32)

    return dict(a=codes((probe.groups, probe.m, probe.k)),
                b=codes((probe.groups, probe.n, probe.k)),
                a_scale=scales((probe.groups, probe.m, k_blocks)),
                b_scale=scales((probe.groups, n_blocks, k_blocks)),
                masked_m=np.asarray(probe.masked_m, dtype=np.int32))


def decode(bits: np.ndarray, kind: OutKind) -> np.ndarray:
    """Output bits as float64."""
    if kind == OutKind.BF16:
        return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return bits.view(np.float16 if kind == OutKind.F16 else np.float32).astype(np.float64)


def disagreement(got_bits: np.ndarray, want_bits: np.ndarray, masked_m,
                 kind: OutKind) -> str | None:
    """The first way ``got`` (the family under test) differs from ``want`` (portable),
    both poisoned before the launch; None if it does not."""
    got, want = decode(got_bits, kind), decode(want_bits, kind)
    for g, rows in enumerate(np.clip(np.asarray(masked_m), 0, got.shape[1])):
        for name, values in (("the family", got[g, :rows]),
                             ("the portable kernel", want[g, :rows])):
            if not np.isfinite(values).all():
                r, c = np.argwhere(~np.isfinite(values))[0]
                return f"group {g} row {r} column {c}: {name} gave {float(values[r, c])}"
        wrong = np.abs(got[g, :rows] - want[g, :rows]) > TOLERANCE * (1 + np.abs(want[g, :rows]))
        if wrong.any():
            r, c = np.argwhere(wrong)[0]
            return (f"group {g} row {r} column {c}: {float(got[g, r, c])} where the portable "
                    f"kernel gives {float(want[g, r, c])} ({int(wrong.sum())} elements of the "
                    f"group differ)")
        written = got_bits[g, rows:] != POISON[kind]
        if written.any():
            r, c = np.argwhere(written)[0]
            return f"group {g} row {rows + r} column {c}: written, but masked_m[{g}] = {rows}"
    return None


def probe(family, device_id: int) -> str | None:
    """Run every probe through ``family`` (twice) and the portable kernel on one GPU;
    None if they agree, else the first disagreement."""
    import cupy

    from .device import device_info
    from .dispatch import families

    portable = families()[FALLBACK]
    info = device_info(device_id)
    with cupy.cuda.Device(device_id):
        for index, spec in enumerate(PROBES):
            inputs = {name: cupy.asarray(x) for name, x in make_inputs(spec, seed=index).items()}
            want = _run(portable, info, spec, inputs)
            got = _run(family, info, spec, inputs)
            failure = disagreement(got, want, spec.masked_m, spec.out_kind)
            if failure is None and not np.array_equal(got, _run(family, info, spec, inputs)):
                failure = "two runs on the same inputs differ (a race?)"
            if failure is not None:
                return f"probe {index} ({spec}): {failure}"
    return None


def _run(family, info, spec: Probe, inputs: dict) -> np.ndarray:
    """One launch of ``family`` into a poisoned output; the output's bits on the host.

    Copies, launch and read-back all go on CuPy's current stream, in order."""
    import cupy

    from . import dlpack, dtypes
    from .api import launch_gemm
    from .problem import Problem

    problem = Problem(spec.groups, spec.m, spec.n, spec.k, spec.expected_m, spec.out_kind)
    out = cupy.full((spec.groups, spec.m, spec.n), POISON[spec.out_kind],
                    dtype=_BITS[spec.out_kind])
    kinds = dict(a=dtypes.FLOAT8_E4M3FN, b=dtypes.FLOAT8_E4M3FN, a_scale=dtypes.FLOAT32,
                 b_scale=dtypes.FLOAT32, masked_m=dtypes.INT32, out=spec.out_kind.dtype)
    views = {name: dlpack.TensorView(array.data.ptr, array.shape,
                                     tuple(s // array.itemsize for s in array.strides),
                                     kinds[name], dlpack.KDL_CUDA, info.device_id, False, array)
             for name, array in {**inputs, "out": out}.items()}
    launch_gemm(views, problem, info.device_id, cupy.cuda.get_current_stream().ptr, family)
    return out.get()  # waits for the launch


def main(argv: list[str]) -> int:
    """The child: ``main([family name, device id])`` prints one verdict line."""
    from .dispatch import families

    family_name, device_id = argv
    try:
        failure = probe(families()[family_name], int(device_id))
    except Exception as exc:  # noqa: BLE001 - a build or launch error is a failed check
        failure = f"{type(exc).__name__}: {exc}"
    verdict = "passed" if failure is None else "failed: " + " ".join(failure.split())
    print(VERDICT_PREFIX + verdict, flush=True)
    return 0
