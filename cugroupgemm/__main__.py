"""Command line: ``python -m cugroupgemm {info,check,demo,bench}``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_info(_args) -> int:
    from . import __version__, build, device, dispatch, env, nvrtc

    print(f"cugroupgemm {__version__}")
    print(f"NVRTC {'.'.join(map(str, nvrtc.version()))}, targets sm_"
          f"{', sm_'.join(map(str, nvrtc.supported_archs()))}")
    print(f"kernel sources {build.KERNEL_DIR} (fingerprint {build.source_fingerprint()[:12]})")
    print(f"cache directory {env.cache_dir()}")
    count = device.gpu_count()
    if count == 0:
        print("GPU: none visible (compile checks still work: python -m cugroupgemm check)")
    for device_id in range(count):
        info = device.device_info(device_id)
        runnable = [f.name for f in dispatch.families().values() if f.runs_on(info)]
        chosen = dispatch.choose_family(info).name
        print(f"GPU {device_id}: {info.name}, sm_{info.arch}, {info.sm_count} SMs, "
              f"families that run here: {', '.join(runnable)} (chosen: {chosen})")
    return 0


def cmd_check(args) -> int:
    from . import dispatch, kernel_report, quantize

    jobs = []
    for family in dispatch.families().values():
        for target in family.check_targets:
            jobs += [(family.name, target, spec, pattern)
                     for spec, pattern in family.check_specs(target)]
    for target in ("sm_80", "sm_89", "sm_90a", "sm_100a"):
        jobs += [("quantize", target, spec, "") for spec in quantize.check_specs(target)]
    if args.dump:
        Path(args.dump).mkdir(parents=True, exist_ok=True)
    if kernel_report.disassembler() is None:
        print("note: no nvdisasm/cuobjdump found; SASS checks skipped")
    failures = 0
    for index, (family, target, spec, pattern) in enumerate(jobs, 1):
        check = kernel_report.check_kernel(spec, pattern)
        problems = []
        if check.resources.spill_store_bytes or check.resources.spill_load_bytes:
            problems.append("spills")
        if pattern and check.tensor_core_ok is False:
            problems.append(f"no tensor-core instruction matching {pattern!r}")
        if check.local_memory_ops:
            problems.append(f"{check.local_memory_ops} local-memory ops")
        failures += bool(problems)
        status = "FAIL " + "; ".join(problems) if problems else "ok"
        print(f"[{index:2d}/{len(jobs)}] {family:8s} {target:7s} {spec.expression:55s} "
              f"{check.resources}  {status}", flush=True)
        if args.dump and check.sass is not None:
            name = spec.expression.replace(" ", "").replace("<", "_").replace(">", "")
            Path(args.dump, f"{family}-{target}-{name.replace(',', '_')}.sass").write_text(
                check.sass)
    print(f"{len(jobs) - failures} passed, {failures} failed")
    return 1 if failures else 0


def cmd_demo(args) -> int:
    from . import device

    if device.gpu_count() == 0:
        print("No GPU visible: running the compile checks instead (python -m cugroupgemm "
              "check).")
        return cmd_check(argparse.Namespace(dump=None))
    from .demo import run_demo

    return run_demo()


def cmd_bench(args) -> int:
    from .bench import run_benchmark

    return run_benchmark(quick=args.quick, json_path=args.json)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cugroupgemm", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="versions, GPUs, kernel families, cache").set_defaults(
        run=cmd_info)
    check = commands.add_parser("check", help="compile every kernel for every target it "
                                "claims (no GPU needed) and check resources and SASS")
    check.add_argument("--dump", metavar="DIR", help="write each kernel's SASS into DIR")
    check.set_defaults(run=cmd_check)
    commands.add_parser("demo", help="run the README example against the reference (compile "
                        "checks without a GPU)").set_defaults(run=cmd_demo)
    bench = commands.add_parser("bench", help="time the GEMM on the benchmark shapes")
    bench.add_argument("--quick", action="store_true", help="a few shapes, fewer repeats")
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    bench.set_defaults(run=cmd_bench)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
