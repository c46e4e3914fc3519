"""Command line: ``python -m cugroupgemm {info,check,demo,bench,warmup}``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .bench_shapes import DEFAULT_PRESET, PRESETS, custom_shapes, int_list

CUSTOM_FLAGS = ("groups", "m", "n", "k", "expected_m")


def cmd_info(_args) -> int:
    from . import build, device, dispatch, env, nvrtc
    from .bench_report import OPTIONAL_PACKAGES, versions
    from .errors import UnsupportedDeviceError
    from .warmup import cache_summary

    found = versions()
    print(f"cugroupgemm {found['cugroupgemm']} (python {found['python']})")
    print("versions: " + ", ".join(f"{name} {found[name] or 'none'}" for name in
                                   ("cupy", "numpy", "nvrtc", "cuda driver", "cuda runtime")))
    print("optional: " + ", ".join(f"{name} {found[name] or '-'}" for name in OPTIONAL_PACKAGES))
    print(f"NVRTC targets: sm_{', sm_'.join(map(str, nvrtc.supported_archs()))}")
    print(f"kernel sources: {build.KERNEL_DIR} (fingerprint {build.source_fingerprint()[:12]})")
    entries, size = cache_summary()
    print(f"cache: {env.cache_dir()}: {entries} kernels, {size / 2**20:.1f} MiB")
    for family in dispatch.families().values():
        print(f"family {family.name}: compiled in CI for {', '.join(family.check_targets)}")
    count = device.gpu_count()
    if count == 0:
        print("GPU: none visible (compile checks still work: python -m cugroupgemm check)")
    for device_id in range(count):
        info = device.device_info(device_id)
        runnable = [f.name for f in dispatch.families().values() if f.runs_on(info)]
        try:
            chosen = dispatch.choose_family(info).name
        except UnsupportedDeviceError as exc:
            chosen = f"none: {exc}"
        print(f"GPU {device_id}: {info.name}, sm_{info.arch}, {info.sm_count} SMs, "
              f"{info.smem_per_block_optin // 1024} KiB shared memory per block; families "
              f"that run here: {', '.join(runnable) or 'none'} (chosen: {chosen})")
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


def bench_options(args, parser: argparse.ArgumentParser):
    """BenchOptions from parsed ``bench`` arguments (``parser.error`` on a bad combination)."""
    from .bench import BenchOptions
    from .bench_peers import PEERS

    given = [flag for flag in CUSTOM_FLAGS if getattr(args, flag) is not None]
    if given and args.preset:
        parser.error("give either --preset or custom shape flags, not both")
    if given and len(given) < len(CUSTOM_FLAGS):
        missing = [f"--{flag.replace('_', '-')}" for flag in CUSTOM_FLAGS if flag not in given]
        parser.error(f"custom shapes need every one of --groups --m --n --k --expected-m; "
                     f"missing {' '.join(missing)}")
    if given:
        shapes = custom_shapes(*(getattr(args, flag) for flag in CUSTOM_FLAGS))
    else:
        shapes = PRESETS[args.preset or ("quick" if args.quick else DEFAULT_PRESET)]
    peers = None
    if args.peers is not None:
        peers = tuple(name for name in args.peers.split(",") if name)
        unknown = set(peers) - {peer.name for peer in PEERS}
        if unknown:
            parser.error(f"--peers: unknown {', '.join(sorted(unknown))}; known: "
                         f"{', '.join(peer.name for peer in PEERS)}")
    return BenchOptions(shapes=shapes, repeats=args.repeats or (20 if args.quick else 50),
                        peers=peers, portable=not args.no_portable, out_dtype=args.out_dtype,
                        json_path=args.json, plot_path=args.plot)


def cmd_bench(args) -> int:
    from .bench import run_benchmark

    return run_benchmark(bench_options(args, args.parser))


def warmup_request(args, parser: argparse.ArgumentParser):
    """(shapes with output kinds, device info, GPU to load on or None) from ``warmup`` args."""
    from . import device
    from .dtypes import out_kind_from_user
    from .warmup import device_for_arch, parse_shapes

    if not args.shapes and not args.preset:
        parser.error("give --shapes and/or --preset")
    shapes = [pair for text in args.shapes or [] for pair in parse_shapes(text)]
    out_kind = out_kind_from_user(args.out_dtype, "--out-dtype")
    shapes += [(shape, out_kind) for shape in PRESETS.get(args.preset, [])]
    if args.arch:
        return shapes, device_for_arch(args.arch), None
    if device.gpu_count() == 0:
        parser.error("no GPU visible: pass --arch (e.g. --arch sm_90a) to plan for a GPU of "
                     "that architecture without one")
    return shapes, device.device_info(args.device), args.device


def cmd_warmup(args) -> int:
    from .errors import CuGroupGemmError
    from .warmup import run_warmup

    try:
        shapes, info, load_on = warmup_request(args, args.parser)
        return run_warmup(shapes, info, load_on, quantizers=not args.no_quantizers,
                          json_path=args.json)
    except (ValueError, CuGroupGemmError) as exc:
        print(f"warmup: {exc}", file=sys.stderr)
        return 2


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return int_list(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    from .warmup import SPEC_HELP

    parser = argparse.ArgumentParser(prog="python -m cugroupgemm", description=__doc__)
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log compiles (-v) and cache hits, loads, options (-vv) to stderr")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="versions, GPUs, kernel families, cache").set_defaults(
        run=cmd_info)
    check = commands.add_parser("check", help="compile every kernel for every target it "
                                "claims (no GPU needed) and check resources and SASS")
    check.add_argument("--dump", metavar="DIR", help="write each kernel's SASS into DIR")
    check.set_defaults(run=cmd_check)
    commands.add_parser("demo", help="run the README example against the reference (compile "
                        "checks without a GPU)").set_defaults(run=cmd_demo)

    bench = commands.add_parser(
        "bench", help="time the GEMM beside its peers on benchmark shapes",
        description="Time the GEMM, our portable kernel and every peer found installed "
        "(torch._scaled_mm looped per group, bf16 torch.bmm, DeepGEMM) on the same inputs; "
        "ratios to the copy bandwidth and FP8 matmul rate measured in the same run.")
    shapes = bench.add_argument_group("shapes (a preset, or every combination of the "
                                      "custom flags; each takes a comma list)")
    shapes.add_argument("--preset", choices=sorted(PRESETS),
                        help=f"named shapes (default {DEFAULT_PRESET}: issue 3's prefill and "
                        "decode shapes)")
    for flag in CUSTOM_FLAGS:
        shapes.add_argument(f"--{flag.replace('_', '-')}", type=_int_list, metavar="N[,N...]")
    bench.add_argument("--quick", action="store_true",
                       help="the quick preset (unless shapes are given) and 20 repeats")
    bench.add_argument("--repeats", type=int, help="timed calls per measurement (default 50)")
    bench.add_argument("--peers", metavar="NAME[,NAME...]",
                       help="peers to time (default: all found: cublas-looped, bf16-bmm, "
                       "deepgemm); an empty string times none")
    bench.add_argument("--no-portable", action="store_true",
                       help="do not time our portable kernel beside the chosen family")
    bench.add_argument("--out-dtype", choices=("bf16", "f16", "f32"),
                       help="our output dtype (default bf16, or f16 without ml_dtypes)")
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    bench.add_argument("--plot", metavar="FILE.png",
                       help="also draw a roofline plot (needs matplotlib: cugroupgemm[plot])")
    bench.set_defaults(run=cmd_bench, parser=bench)

    warmup = commands.add_parser(
        "warmup", help="compile the kernels of given shapes into the disk cache ahead of time",
        description="Plan each shape as a call would, compile every kernel it needs into "
        "the disk cache (CUGROUPGEMM_CACHE_DIR), then check that a fresh process loads them "
        "with no compile. A family not yet validated on the GPU's architecture brings its "
        "portable fallback and its first-use self-check's kernels along. Times: cold = "
        "NVRTC compile here ('cached' if the cache already had it); fresh process = reading "
        "it back (and loading it on the GPU).")
    warmup.add_argument("--shapes", nargs="+", action="extend", metavar="SPEC", help=SPEC_HELP)
    warmup.add_argument("--preset", choices=sorted(PRESETS), help="add a preset's shapes")
    warmup.add_argument("--out-dtype", default="bf16", choices=("bf16", "f16", "f32"),
                        help="output dtype of the preset's shapes (default bf16)")
    warmup.add_argument("--arch", metavar="sm_XY",
                        help="plan for a reference GPU of this architecture instead of the "
                        "visible one (no GPU needed), e.g. sm_90a")
    warmup.add_argument("--device", type=int, default=0, help="GPU to plan for (default 0)")
    warmup.add_argument("--no-quantizers", action="store_true",
                        help="skip the fp8 quantizers' kernels (warmed by default)")
    warmup.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    warmup.set_defaults(run=cmd_warmup, parser=warmup)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.verbose:
        from .logs import configure_cli

        configure_cli(args.verbose)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
