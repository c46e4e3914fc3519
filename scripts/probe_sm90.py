"""Time variants of the sm90 kernel with parts taken out, to see which part bounds it
(docs/performance.md, log item 22). A variant is a named text edit of a copy of
kernels_cu/ (the repository's sources are never touched); edits join with '+'.

    python scripts/probe_sm90.py VARIANTS [--configs 64x128x64x2,...] [--shapes 0,10,14]
                                          [--expected-m 48,96] [--trees DIR,DIR]
                                          [--rounds 2] [--once]

VARIANTS, comma-separated: base (no edit) and
  loads_only      consumers hand each stage back unread (the load path alone)
  consumers_only  producers arrive without loading (the consumers alone)
  no_scales       the scale warp arrives without copying
  b_only          a is not loaded
  promote_once    the fp32 promotion only in a tile's last k block
  no_wgmma        no wgmma (the promotion and barriers alone)
  no_barriers     no producer; consumers neither wait nor hand back
  unhooked        the promotion adds the accumulators to themselves instead of the
                  wgmma results, and the wgmma wait moves after it: the same work, free
                  to run under the warpgroup's own wgmma (does the dependency hold the
                  overlap back, or the SM's issue slots and registers?). On today's
                  kernel it spills (the slices in flight and the sums, 192 registers,
                  live together in the consumers' 224; log item 48): its times are not
                  the kernel's work any more
  no_epilogue     the output stores guarded by a condition that never holds (p.m < 0,
                  which ptxas cannot prove: the accumulators are still computed)
  nonuniform_k    the consumer's k loop bounded by k_blocks read through a shuffle, which
                  ptxas cannot prove warp-uniform: the loop's control moves from the
                  uniform datapath (UIADD3, ULOP3) to the vector one (log item 38)
  timeline        each consumer warpgroup records, per tile (its first 8), the GPU's clock
                  (ns) when it took the tile, ended its k loop and ended its epilogue, and
                  prints them 3 ms after its first tile (the grid done) with its CTA,
                  pipeline, warpgroup, group, n0 and 4 m0 + half (with --once: item 43).
                  Its printf makes ptxas serialise every wgmma (C7510), and its k loops
                  are not unrolled (unrolled, it spills): read where the time goes, not
                  rates
  tile_pairs      the scheduler before log item 21: tile t on pipeline t % 2 of CTA
                  (t / 2) % grid (an A/B of item 21's rounds; not with turns, whose last
                  hand-overs assume rounds: it could hang)
  no_scale_warp   the scale warp returns at once and the full barriers wait for the TMA
                  alone (the consumers read stale scales): what the scale warp costs
                  (log item 46)
  scale_pad       the scale warp's k loop 48 dependent inline-asm multiply-adds longer
                  (43 SASS instructions): what a producer warp's instructions cost
e.g. "base,loads_only,consumers_only,consumers_only+promote_once". Shapes are indices into
bench_shapes.HOPPER (default: prefill G1, decode em64, em256 at n 4096); configs are
block_m x block_n x promote_k x pipes [x cluster [x turns [x split_tail [x dynamic]]]] (0 or 1
for the last three; default: 64x128x64x2, whole tiles). Every edit checks
that the text it replaces is there, so a kernel change that moves it fails loudly rather
than timing the unedited kernel. --trees times each variant on each of several
kernels_cu/ copies in the same run (say, another branch's, exported with
`git archive BRANCH kernels_cu | tar x -C DIR`): an A/B of two kernels on one machine,
each line naming its tree by the folder that holds it (or "worktree"). --rounds N times it
all N times, the trees taking turns: the machine's speed drifts within a call, so only
alternated rounds compare (log item 38).
--once launches each (variant, shape, config) once, untimed, for a profiler (log item 42 b):
    ncu --clock-control none --kernel-name regex:sm90_fp8 --metrics ... \
        python scripts/probe_sm90.py base --once --shapes 12 --configs 64x128x64x2x1x1x1
The kernels' results are not checked: timing only.
"""

import argparse
import dataclasses
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import tune_sm90  # the timing of a forced config and the candidates' format

SOURCE = "sm90_fp8_masked_gemm.cu"
ARRIVE = "sm90::mbar_arrive(&full[stage]);"
_TMA = (r"sm90::mbar_arrive_expect_tx\(&full\[stage\], L::STAGE_BYTES\);.*?"
        r"\(1u << CLUSTER\) - 1\);\s*\}")
_SCALES = (r"for \(int t = lane; t < BLOCK_M; t \+= 32\) \{.*?"
           r"cp_async_mbar_arrive_noinc\(&full\[stage\]\);")
_A_LOAD = (r"sm90::mbar_arrive_expect_tx\(&full\[stage\], L::STAGE_BYTES\);\s*"
           r"sm90::tma_load_3d\(smem \+ L::A_OFFSET.*?tile\.group\);")


def _plain(text):
    """``text`` as a pattern whose whitespace matches any run of whitespace (so an edit
    survives a change of indentation)."""
    return r"\s+".join(re.escape(word) for word in text.split())


SCHEDULER = "common/scheduler.cuh"
_SCALE_WARP_TEXT = "} else {  // the scales, asynchronously, so the warp runs ahead as TMA does"
_SCALE_WARP = _plain(_SCALE_WARP_TEXT)
_READ_CLOCK = 'asm volatile("mov.u64 %0, %%globaltimer;" : "=l"({0}));\n'  # ns, GPU-wide
_NOW = "unsigned long long {0}; " + _READ_CLOCK

EDITS = {  # name: [(regex, replacement)] on SOURCE, or [(file, regex, replacement)]
    "loads_only": [(_plain("const bool has_rows = m0 + consumer * WG_ROWS < tile.rows_valid;"),
                    "const bool has_rows = false;")],
    "consumers_only": [(_SCALES, ARRIVE), (_TMA, ARRIVE)],
    "no_scales": [(_SCALES, ARRIVE)],
    "b_only": [(_A_LOAD, "sm90::mbar_arrive_expect_tx(&full[stage], L::B_TILE);")],
    "promote_once": [(_plain("float block = part[0][i];"),
                      "if (kb != k_blocks - 1) continue;\nfloat block = part[0][i];")],
    "no_wgmma": [(_plain("for (int h = 0; h < SLICES; ++h) issue(part[h], stage, h);"), ""),
                 (_plain("sm90::wgmma_wait<0>();"), "")],
    "no_barriers": [
        (_plain("if (pipe >= PIPES) return;"), "return;"),
        (_plain("sm90::mbar_wait(&full[stage], phase);"), "{}"),
        (_plain("release(stage);"), "")],
    "unhooked": [
        (_plain("sm90::wgmma_wait<0>();\nfence_parts();\nrelease(stage);  // the stage is read"), ""),
        (_plain("float block = part[0][i];"), "float block = acc[i ^ 1];"),
        (_plain("block += part[h][i];\n        acc[i] += block * ((i & 2) ? scale1 : scale0);\n      }"),
         "block += acc[i ^ 2];\n        acc[i] += block * ((i & 2) ? scale1 : scale0);\n      }\n"
         "      sm90::wgmma_wait<0>();\n"
         "      fence_parts();\n"
         "      release(stage);"),
        # The wgmma results still reach the output (once per tile), or ptxas drops them.
        (_plain("// Epilogue straight from registers"),
         "for (int i = 0; i < PART; ++i) acc[i] += part[0][i] + part[SLICES - 1][i];\n"
         "    // Epilogue straight from registers")],
    "no_epilogue": [(r"col < p\.n\)", "col < p.n && p.m < 0)")],
    "nonuniform_k": [(_plain("for (int kb = 0; kb < k_blocks; ++kb) {\n"
                             "if (!loaded) sm90::mbar_wait(&full[stage], phase);"),
                      "const int k_end = __shfl_sync(0xffffffff, k_blocks, 0);\n"
                      "for (int kb = 0; kb < k_end; ++kb) {\n"
                      "if (!loaded) sm90::mbar_wait(&full[stage], phase);")],
    "timeline": [
        (_plain("enum Work : int {"),
         "constexpr int PROBE_TILES = 8;\n"
         "unsigned long long probe_clock[PROBE_TILES][3]; int probe_tile[PROBE_TILES][3];\n"
         "int probe_tiles = 0;\nenum Work : int {"),
        (_plain("const int m0 = tile.m0 + rank * BLOCK_M;"),
         _NOW.format("probe_t0") + "const int m0 = tile.m0 + rank * BLOCK_M;"),
        (_plain("// Epilogue straight from registers:"),
         _NOW.format("probe_t1") + "// Epilogue straight from registers:"),
        (_plain("};\nif constexpr (SPLIT_TAIL) {\nif (work != WHOLE_TILE) {"),
         _NOW.format("probe_t2") + "if (probe_tiles < PROBE_TILES) {\n"
         "probe_clock[probe_tiles][0] = probe_t0; probe_clock[probe_tiles][1] = probe_t1;\n"
         "probe_clock[probe_tiles][2] = probe_t2; probe_tile[probe_tiles][0] = tile.group;\n"
         "probe_tile[probe_tiles][1] = tile.n0; probe_tile[probe_tiles][2] = tile.m0 * 4 + tile.half;\n"
         "}\n++probe_tiles;\n"
         "};\nif constexpr (SPLIT_TAIL) {\nif (work != WHOLE_TILE) {"),
        # Printed after the loop, once the whole grid is surely done (3 ms after the first
        # tile): a printf per tile, or one as a CTA ends, held the tiles still running back
        # by 100s of us.
        (_plain("if (turn == 0) wait_turn();"),
         "if (threadIdx.x % 128 == 0) {\n"
         "for (unsigned long long probe_now = probe_clock[0][0]; probe_tiles > 0 &&\n"
         "probe_now < probe_clock[0][0] + 3000000ull; __nanosleep(100000))\n"
         + _READ_CLOCK.format("probe_now") +
         "for (int i = 0; i < probe_tiles && i < PROBE_TILES; ++i)\n"
         'printf("timeline %d %d %d %d %d %d %llu %llu %llu\\n", blockIdx.x, pipe, consumer, '
         "probe_tile[i][0], probe_tile[i][1], probe_tile[i][2], probe_clock[i][0], "
         "probe_clock[i][1], probe_clock[i][2]);\n"
         'if (probe_tiles > PROBE_TILES) printf("timeline-overflow %d\\n", probe_tiles);\n}\n'
         "if (turn == 0) wait_turn();"),
        # Its k loops not unrolled: unrolled, the recording spills (log item 50).
        (_plain("constexpr int K_UNROLL = CLUSTER == 1 ? 4 : 2;"), "constexpr int K_UNROLL = 1;"),
    ],
    "tile_pairs": [(SCHEDULER, _plain("next(unit + static_cast<i64>(pipe) * units),"),
                    "next(static_cast<i64>(unit) * pipes + pipe),")],
    "no_scale_warp": [(_plain("sm90::mbar_init(&full[s], 1 + SCALE_LANES);"),
                       "sm90::mbar_init(&full[s], 1);"),
                      # At run time, so the code and its layout stay those of the kernel.
                      (_SCALE_WARP, _SCALE_WARP_TEXT + "\nif (p.k > 0) return;")],
    "scale_pad": [(_SCALE_WARP, _SCALE_WARP_TEXT + "\nu32 probe_pad = lane;"),
                  (_plain("if (lane == 0) sm90::cp_async_4(slot + BLOCK_M, b_col + kb * p.bs_stride_k);"),
                   "if (lane == 0) sm90::cp_async_4(slot + BLOCK_M, b_col + kb * p.bs_stride_k);\n"
                   + "".join(f'asm volatile("mad.lo.u32 %0, %0, %1, {i + 3};" '
                             ': "+r"(probe_pad) : "r"(p.k));\n' for i in range(48))),
                  (_plain("sm90::cp_async_wait_all();"),
                   'if (probe_pad == 0xdeadbeefu) asm volatile("trap;");\n'
                   "sm90::cp_async_wait_all();")],
}


def edited(sources: dict[str, str], variant: str) -> dict[str, str]:
    """The kernel files (name under kernels_cu/ -> text) with the edits of ``variant``
    ("base", or names joined by '+')."""
    sources = dict(sources)
    if variant == "base":
        return sources
    for name in variant.split("+"):
        if name not in EDITS:
            raise SystemExit(f"unknown variant {name!r}: expected base or one of "
                             f"{sorted(EDITS)}")
        for edit in EDITS[name]:
            file, pattern, replacement = edit if len(edit) == 3 else (SOURCE, *edit)
            # A function as the replacement: its text is taken as is (no group escapes).
            sources[file], count = re.subn(pattern, lambda _, new=replacement: new,
                                           sources[file], flags=re.DOTALL)
            if not count:
                raise SystemExit(f"variant {name}: {pattern!r} is no longer in {file}")
    return sources


def kernel_sources(directory: Path) -> dict[str, str]:
    """The files the edits touch, as they are under ``directory``."""
    return {file: (directory / file).read_text() for file in (SOURCE, SCHEDULER)}


def tree_label(tree: Path) -> str:
    """How a kernels_cu/ directory of --trees is named in the output: the folder that
    holds it as given ("ab/main"), or "worktree" for the repository's own."""
    return "worktree" if tree.resolve().parent == ROOT else str(tree.parent)


def use_sources(directory: Path):
    """Compile from ``directory`` from now on, forgetting every kernel built or loaded."""
    from cugroupgemm import build, tma, warm_calls

    build.KERNEL_DIR = directory
    build.source_fingerprint.cache_clear()
    build._memory_cache.clear()
    build._loaded.clear()
    tma.clear_cache()
    warm_calls.clear()


def main():
    import cupy as cp

    from cugroupgemm import bench, bench_shapes
    from cugroupgemm.device import device_info

    parser = argparse.ArgumentParser()
    parser.add_argument("variants")
    parser.add_argument("--configs", default="64x128x64x2")
    parser.add_argument("--shapes", default="0,10,14")
    parser.add_argument("--expected-m", help="comma-separated: each shape with each of these "
                        "expected_m instead of its own (decode sizes between the table's)")
    parser.add_argument("--trees", help="comma-separated kernels_cu/ directories to time "
                        "(default: the repository's)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="time everything this many times, the trees and variants taking "
                        "turns (the machine's speed drifts: compare alternated rounds)")
    parser.add_argument("--once", action="store_true",
                        help="launch each once without timing (for a profiler)")
    args = parser.parse_args()
    variants = args.variants.split(",")
    trees = [Path(t) for t in args.trees.split(",")] if args.trees else [ROOT / "kernels_cu"]
    originals = {tree: kernel_sources(tree) for tree in trees}
    for tree in trees:
        for variant in variants:
            edited(originals[tree], variant)  # every edit applies before any GPU time is spent
    configs = [tuple(map(int, c.split("x"))) for c in args.configs.split(",")]
    if set(variants) != {"base"} and any(config[7:8] == (1,) for config in configs):
        # The edits assume the static walk; tiles claimed at run time wait for tickets a
        # removed producer never publishes (no_barriers would hang).
        parser.error("configs that claim tiles at run time (dynamic) take only 'base'")
    info = device_info(cp.cuda.Device().id)
    shapes = [bench_shapes.HOPPER[int(i)] for i in args.shapes.split(",")]
    if args.expected_m:
        shapes = [dataclasses.replace(shape, expected_m=em) for shape in shapes
                  for em in bench_shapes.int_list(args.expected_m)]
    cases = [bench.make_case(shape) for shape in shapes]
    runs = [(round_, tree, variant) for round_ in range(1, args.rounds + 1)
            for variant in variants for tree in trees]
    for round_, tree, variant in runs:
        directory = Path(tempfile.mkdtemp()) / "kernels_cu"
        shutil.copytree(tree, directory)
        for file, text in edited(originals[tree], variant).items():
            (directory / file).write_text(text)
        use_sources(directory)
        name = f"{tree_label(tree)}:{variant}" if len(trees) > 1 else variant
        if args.rounds > 1:
            name = f"r{round_} {name}"
        for shape, case in zip(shapes, cases):
            work = bench_shapes.work(shape, case.masked_m, 2)
            for config in configs:
                if args.once:
                    tune_sm90.launch_config(case, config, info)
                    print(f"launched {name} {shape.label} G{shape.groups} em{shape.expected_m} "
                          f"n{shape.n} k{shape.k} {'x'.join(map(str, config))}", flush=True)
                    continue
                us = tune_sm90.time_config(case, config, info)
                print(f"{name:28s} {shape.label:8s} G{shape.groups:<3d} "
                      f"em{shape.expected_m:<5d} n{shape.n:<5d} k{shape.k:<5d} "
                      f"{'x'.join(map(str, config)):14s} {us:8.1f} us "
                      f"{work.flops / us / 1e6:7.1f} TF {work.bytes / us / 1e3:6.0f} GB/s",
                      flush=True)


if __name__ == "__main__":
    main()
