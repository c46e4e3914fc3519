"""The sm90 family's host half without a GPU: configs, shared memory, plans, TMA maps, builds."""

import ctypes
import dataclasses
import re

import pytest
from conftest import compile_static_asserts

from cugroupgemm import build, dlpack, dtypes, kernel_report, tma
from cugroupgemm.dtypes import OutKind
from cugroupgemm.errors import ArgumentValueError, UnsupportedDeviceError
from cugroupgemm.families import sm90
from cugroupgemm.problem import Problem

H100 = sm90.REFERENCE_DEVICE
H100_PCIE = dataclasses.replace(H100, name="H100 PCIe", sm_count=114)
SMALL_SMEM = dataclasses.replace(H100, name="small smem", smem_per_block_optin=101376)
AMPERE = dataclasses.replace(H100, name="A100", cc=(8, 0))
BLACKWELL = dataclasses.replace(H100, name="B200", cc=(10, 0))


def problem(groups=32, m=1024, n=4096, k=7168, expected_m=8, out_kind=OutKind.BF16):
    return Problem(groups, m, n, k, expected_m, out_kind)


def test_runs_only_on_hopper_and_builds_for_sm_90a():
    assert sm90.runs_on(H100) and not sm90.runs_on(AMPERE) and not sm90.runs_on(BLACKWELL)
    assert sm90.target_for(H100) == "sm_90a"
    assert sm90.FAMILY.check_targets == ("sm_90a",)
    assert {pattern for _, pattern in sm90.check_specs("sm_90a")} == {r"QGMMA"}
    assert sm90.FAMILY.validated_archs == (90,)


@pytest.mark.parametrize("expected_m", [0, 1, 8, 53, 113, 256, 4096])
def test_one_tile_in_two_pipelines_outside_the_wide_rows(expected_m):
    config = sm90.choose_config(problem(expected_m=expected_m), H100)
    assert (config.block_m, config.block_n, config.pipes) == (64, 128, 2)
    assert config.promote_k == sm90.DEFAULT_PROMOTE_K == 64
    assert config.consumer_warpgroups == 2 and config.threads == 384


@pytest.mark.parametrize("expected_m", [54, 63, 64, 80, 96, 112])
def test_a_wide_tile_in_one_pipeline_where_groups_hold_one_to_two_small_tiles(expected_m):
    config = sm90.choose_config(problem(expected_m=expected_m), H100)
    assert (config.block_m, config.block_n, config.pipes) == (128, 128, 1)
    assert config.promote_k == sm90.DEFAULT_PROMOTE_K
    assert config.consumer_warpgroups == 2 and config.threads == 384


@pytest.mark.parametrize("groups, n, device, wide", [
    (32, 4096, H100, True), (4, 7168, H100, True),  # 4 x 56 n tiles >= 132 SMs
    (4, 4096, H100, False), (2, 7168, H100, False), (1, 4096, H100, False),
    (4, 4096, H100_PCIE, True)])  # 128 tiles on 114 SMs
def test_the_wide_tile_only_where_its_tiles_cover_every_sm(groups, n, device, wide):
    config = sm90.choose_config(problem(groups=groups, n=n, expected_m=80), device)
    assert (config.block_m, config.pipes) == ((128, 1) if wide else (64, 2))
    assert config.dynamic and config.split_tail  # claimed, as through WIDE_ROWS


def test_the_reference_configs_are_the_heuristics_choices():
    whole, wide, split = sm90.reference_configs()
    assert (whole.block_m, whole.block_n, whole.pipes, whole.stages) == (64, 128, 2, 4)
    assert (wide.block_m, wide.block_n, wide.pipes, wide.stages) == (128, 128, 1, 6)
    assert split == dataclasses.replace(whole, split_tail=True, dynamic=False, turns=True)
    assert wide.split_tail and not whole.split_tail
    assert whole.out_kind == wide.out_kind == OutKind.BF16
    assert whole.dynamic and wide.dynamic


@pytest.mark.parametrize("expected_m, claimed", [(1, True), (64, True), (112, True),
                                                 (113, False), (128, False), (4096, False)])
def test_tiles_are_claimed_at_run_time_through_the_wide_rows(expected_m, claimed):
    config = sm90.choose_config(problem(expected_m=expected_m), H100)
    assert config.dynamic == claimed
    assert config.turns == (not claimed)  # the unclaimed pipelines take turns (log item 39)


@pytest.mark.parametrize("expected_m, split", [(1, False), (63, False), (64, True), (96, True),
                                               (97, True), (4096, True)])
def test_the_last_round_is_split_where_the_arithmetic_bounds_the_time(expected_m, split):
    assert sm90.choose_config(problem(expected_m=expected_m), H100).split_tail == split


def test_worked_examples_of_the_docstring():
    config = sm90.choose_config(problem(groups=4, m=4096, n=7168, expected_m=256), H100)
    assert sm90.scale_slot_bytes(64) == 272  # 65 floats in 16-byte units
    assert config.stages == 232448 // (2 * (24576 + 40 + 272)) == 4
    assert config.smem_bytes == 2 * 4 * 24888 == 199104
    wide = sm90.choose_config(problem(expected_m=64), H100)
    assert sm90.scale_slot_bytes(128) == 528  # 129 floats in 16-byte units
    assert wide.stages == 232448 // (32768 + 40 + 528) == 6
    assert wide.smem_bytes == 6 * 33336 == 200016


def test_the_layout_mirror_matches_the_kernel():
    """smem_bytes against the kernel's own Layout (all pipelines' stages in one ring)."""
    shapes = [(64, 128, 4, 2), (64, 128, 9, 1), (128, 128, 6, 1), (192, 64, 6, 1),
              (64, 128, sm90.MAX_STAGES, 2)]
    checks = [f"static_assert(sm90_gemm::Layout<{bm}, {bn}, {stages * pipes}>::BYTES == "
              f"{sm90.smem_bytes(bm, bn, stages, pipes)}, \"{bm} x {bn}, {stages} x {pipes}\");"
              for bm, bn, stages, pipes in shapes]
    compile_static_asserts(sm90.SOURCE, sm90.TARGET, checks)


def test_one_pipeline_configs_are_explicit():
    config = sm90.fitted_config(192, 64, H100, promote_k=128)
    assert config.stages == 232448 // (32768 + 40 + 784) == 6
    assert config.expression() == "sm90_fp8_masked_gemm<192, 64, 6, 3, 128, 0, 1>"
    plan = sm90.plan(problem(groups=4, expected_m=256), H100, config)
    assert plan.config == config and plan.block == (512, 1, 1)
    assert plan.smem_bytes == config.smem_bytes <= H100.smem_per_block_optin


@pytest.mark.parametrize("block_m, block_n, promote_k, pipes", [
    (256, 64, 64, 1), (128, 256, 64, 1), (64, 128, 32, 1), (100, 128, 64, 1), (128, 128, 64, 2),
    (64, 128, 64, 3)])
def test_configs_the_kernel_does_not_offer_are_refused(block_m, block_n, promote_k, pipes):
    with pytest.raises(ValueError, match="unsupported sm90 config"):
        sm90.Sm90Config(block_m, block_n, 2, OutKind.BF16, promote_k, pipes)


@pytest.mark.parametrize("device", [H100, H100_PCIE, SMALL_SMEM])
@pytest.mark.parametrize("expected_m", [1, 64, 65, 4096])
def test_every_plan_fits_the_device(device, expected_m):
    plan = sm90.plan(problem(expected_m=expected_m), device)
    config = plan.config
    assert sm90.MIN_STAGES <= config.stages <= sm90.MAX_STAGES
    assert plan.smem_bytes == config.smem_bytes <= device.smem_per_block_optin
    # One more stage would not fit (or the cap is reached).
    assert (config.stages == sm90.MAX_STAGES
            or sm90.smem_bytes(config.block_m, config.block_n, config.stages + 1, config.pipes)
            > device.smem_per_block_optin)
    assert plan.grid[0] <= device.sm_count and plan.grid[1:] == (1, 1)
    assert plan.block == ((config.consumer_warpgroups + 1) * 128, 1, 1)
    assert plan.spec.target == "sm_90a" and plan.spec.source == sm90.SOURCE


def test_stages_come_from_the_device_not_a_literal():
    big = sm90.choose_config(problem(expected_m=8), H100)
    small = sm90.choose_config(problem(expected_m=8), SMALL_SMEM)
    assert small.stages == 101376 // (2 * 24888) == 2 < big.stages


def test_too_little_shared_memory_is_a_clear_error():
    tiny = dataclasses.replace(H100, smem_per_block_optin=90000)  # < 2 x 2 stages of 24 KB
    with pytest.raises(UnsupportedDeviceError, match=r"at least \d+ bytes of shared memory"):
        sm90.choose_config(problem(expected_m=8), tiny)


def test_grid_is_no_larger_than_the_tile_count():
    plan = sm90.plan(problem(groups=1, m=16, n=256, k=128, expected_m=4), H100)
    assert plan.grid == (2, 1, 1)  # 1 group x 1 m tile x 2 n tiles: one SM each
    plan = sm90.plan(problem(groups=64, m=4096, n=7168, k=2048, expected_m=4000), H100)
    assert plan.grid == (H100.sm_count, 1, 1)


def test_a_pair_of_ctas_shares_tiles_of_twice_the_rows():
    pair = sm90.Sm90Config(64, 128, 4, OutKind.BF16, pipes=2, cluster=2)
    plan = sm90.plan(problem(groups=1, m=100, n=256, k=128, expected_m=4), H100, pair)
    assert plan.grid == (4, 1, 1)  # one 128-row m tile x 2 n tiles, two CTAs each
    plan = sm90.plan(problem(), H100, pair)
    assert plan.grid == (H100.sm_count, 1, 1)
    odd = dataclasses.replace(H100, sm_count=131)
    assert sm90.plan(problem(), odd, pair).grid == (130, 1, 1)  # whole clusters only
    assert plan.smem_bytes == sm90.plan(problem(), H100).smem_bytes  # per CTA: the same
    with pytest.raises(ValueError, match="unsupported sm90 config"):
        sm90.Sm90Config(64, 128, 4, OutKind.BF16, cluster=4)


def test_a_pair_loads_its_share_of_b(fake_driver):
    pair = sm90.Sm90Config(64, 128, 4, OutKind.BF16, pipes=2, cluster=2)
    plan = sm90.plan(problem(groups=3, m=100, n=272, k=512, expected_m=70), H100, pair)
    sm90.extra_arguments(plan, {"a": view((3, 100, 512)),
                                "b": view((3, 272, 512), ptr=0x7F0000100000)})
    call_a, call_b = fake_driver.calls
    assert call_a["box"] == (128, 64, 1) and call_b["box"] == (128, 64, 1)


def test_a_given_config_takes_the_problems_out_kind():
    config = sm90.Sm90Config(192, 64, 4, OutKind.BF16)
    plan = sm90.plan(problem(expected_m=256, out_kind=OutKind.F32), H100, config)
    assert plan.config.out_kind == OutKind.F32 and plan.spec.expression.endswith(", 2, 1>")


def test_expression_names_every_template_argument():
    config = sm90.Sm90Config(192, 64, 4, OutKind.F32, 128)
    assert config.expression() == "sm90_fp8_masked_gemm<192, 64, 4, 3, 128, 2, 1>"
    piped = sm90.Sm90Config(64, 128, 4, OutKind.BF16, pipes=2)
    assert piped.expression() == "sm90_fp8_masked_gemm<64, 128, 4, 2, 64, 0, 2>"
    pair = dataclasses.replace(piped, cluster=2)
    assert pair.expression() == "sm90_fp8_masked_gemm_pair<64, 128, 4, 2, 64, 0, 2>"
    turns = dataclasses.replace(pair, turns=True)
    assert turns.expression() == "sm90_fp8_masked_gemm_pair<64, 128, 4, 2, 64, 0, 2, true>"
    with pytest.raises(ValueError, match="unsupported sm90 config"):
        sm90.Sm90Config(128, 128, 4, OutKind.BF16, turns=True)  # one pipeline: no turns
    split = dataclasses.replace(piped, split_tail=True)
    assert split.expression() == "sm90_fp8_masked_gemm<64, 128, 4, 2, 64, 0, 2, false, true>"
    claimed = dataclasses.replace(split, dynamic=True)
    assert claimed.expression() == "sm90_fp8_masked_gemm_claimed<64, 128, 4, 2, 64, 0, 2, true>"


@pytest.mark.parametrize("options", [dict(cluster=2), dict(turns=True)])
def test_tiles_claimed_at_run_time_need_one_cta_and_no_turns(options):
    with pytest.raises(ValueError, match="unsupported sm90 config"):
        sm90.Sm90Config(**{**dict(block_m=64, block_n=128, stages=4, out_kind=OutKind.BF16,
                                   pipes=2, dynamic=True), **options})


def test_only_a_plan_that_claims_tiles_takes_a_counter():
    problem_ = problem(expected_m=256)
    for dynamic in (False, True):
        config = sm90.fitted_config(64, 128, H100, pipes=2, dynamic=dynamic)
        assert sm90.plan(problem_, H100, config).tile_counter == dynamic


@pytest.mark.parametrize("options", [dict(block_n=64), dict(cluster=2)])
def test_split_tails_need_128_columns_and_one_cta(options):
    with pytest.raises(ValueError, match="unsupported sm90 config"):
        sm90.Sm90Config(**{**dict(block_m=64, block_n=128, stages=4, out_kind=OutKind.BF16,
                                   pipes=2, split_tail=True), **options})


def test_split_tails_take_turns():
    config = sm90.Sm90Config(64, 128, 4, OutKind.BF16, pipes=2, turns=True, split_tail=True)
    assert config.expression() == "sm90_fp8_masked_gemm<64, 128, 4, 2, 64, 0, 2, true, true>"


def test_fitted_config_takes_the_stages_that_fit_and_the_options_given():
    config = sm90.fitted_config(64, 128, H100, OutKind.F16, pipes=2, split_tail=True)
    assert config.stages == 232448 // (2 * (24576 + 40 + 272)) == 4
    assert (config.out_kind, config.pipes, config.split_tail) == (OutKind.F16, 2, True)
    assert (config.promote_k, config.cluster, config.turns) == (64, 1, False)  # defaults


# ---- TMA descriptors (the driver is faked: no GPU here) ------------------------------

def view(shape, strides=None, ptr=0x7F0000000000):
    strides = strides or dlpack.compact_strides(shape)
    return dlpack.TensorView(ptr, tuple(shape), tuple(strides), dtypes.FLOAT8_E4M3FN,
                             dlpack.KDL_CUDA, 0, False)


def test_operand_maps_are_3d_k_rows_groups_with_128_byte_swizzle(fake_driver):
    plan = sm90.plan(problem(groups=3, m=100, n=272, k=512, expected_m=40), H100)
    a, b = view((3, 100, 512)), view((3, 272, 512), ptr=0x7F0000100000)
    map_a, map_b = sm90.extra_arguments(plan, {"a": a, "b": b})
    assert isinstance(map_a, tma.TensorMap) and ctypes.sizeof(map_a) == 128
    assert bytes(map_a) == bytes(range(128))
    call_a, call_b = fake_driver.calls
    assert call_a["dims"] == (512, 100, 3) and call_a["strides"] == (512, 51200)
    assert call_a["box"] == (128, 64, 1) and call_a["elem"] == (1, 1, 1)
    assert call_b["dims"] == (512, 272, 3) and call_b["box"] == (128, plan.config.block_n, 1)
    assert call_a["swizzle"] == tma.SWIZZLE_128B and call_a["oob"] == tma.OOB_FILL_ZEROS
    assert call_a["dtype"] == tma.DATA_TYPE_UINT8 and call_b["address"] == 0x7F0000100000


def test_a_warm_call_does_no_encode(fake_driver):
    plan = sm90.plan(problem(groups=2, m=64, n=256, k=256, expected_m=8), H100)
    views = {"a": view((2, 64, 256)), "b": view((2, 256, 256), ptr=0x7F0000200000)}
    first = sm90.extra_arguments(plan, views)
    second = sm90.extra_arguments(plan, views)
    assert len(fake_driver.calls) == 2
    assert all(x is y for x, y in zip(first, second))
    moved = {**views, "a": view((2, 64, 256), ptr=0x7F0000300000)}
    sm90.extra_arguments(plan, moved)
    assert len(fake_driver.calls) == 3  # a new address: one new map


def test_extent_one_dimensions_get_dense_strides(fake_driver):
    plan = sm90.plan(problem(groups=1, m=1, n=128, k=256, expected_m=1), H100)
    a = view((1, 1, 256), strides=(0, 0, 1))  # DLPack may give any stride to extent 1
    sm90.extra_arguments(plan, {"a": a, "b": view((1, 128, 256), ptr=0x7F0000400000)})
    assert fake_driver.calls[0]["strides"] == (256, 256)


def test_strided_operands_keep_their_strides(fake_driver):
    plan = sm90.plan(problem(groups=2, m=64, n=128, k=256, expected_m=8), H100)
    a = view((2, 64, 256), strides=(64 * 512 + 256, 512, 1))
    sm90.extra_arguments(plan, {"a": a, "b": view((2, 128, 256), ptr=0x7F0000500000)})
    assert fake_driver.calls[0]["strides"] == (512, 64 * 512 + 256)


def test_tma_limits_name_the_argument():
    with pytest.raises(ArgumentValueError, match=r"^b: the TMA kernel needs byte strides"):
        tma.check_tiled("b", 0x1000, (256, 64, 2), (256, 2**40), (128, 64, 1))
    with pytest.raises(ArgumentValueError, match=r"^a: the TMA kernel needs a 16-byte"):
        tma.check_tiled("a", 0x1008, (256, 64, 2), (256, 16384), (128, 64, 1))
    with pytest.raises(ArgumentValueError, match=r"^a: the TMA kernel needs byte strides"):
        tma.check_tiled("a", 0x1000, (256, 64, 2), (264, 16896), (128, 64, 1))


def test_a_refused_encode_names_the_argument(fake_driver):
    fake_driver.status = 1
    with pytest.raises(ArgumentValueError, match=r"^a: cuTensorMapEncodeTiled refused"):
        tma.encode_tiled_u8("a", 0x1000, (256, 64, 2), (256, 16384), (128, 64, 1))


# ---- what ptxas made of every instance CI checks -------------------------------------

@pytest.mark.parametrize("spec", [spec for spec, _ in sm90.check_specs("sm_90a")],
                         ids=lambda s: s.expression)
def test_instances_compile_without_spills_or_ignored_register_hints(spec):
    check = kernel_report.check_kernel(spec, r"QGMMA")
    assert check.resources.spill_store_bytes == 0 and check.resources.spill_load_bytes == 0
    assert check.resources.stack_bytes == 0
    log = build.compile_kernel(spec).log
    assert "C7508" not in log, log  # setmaxnreg ignored
    assert not re.search(r"wgmma.*serialized", log), log
    if check.sass is None:
        pytest.skip("no disassembler installed: SASS not checked")
    assert check.tensor_core_ok and check.local_memory_ops == 0
    block_n = int(spec.expression.split(",")[1])
    assert f"QGMMA.64x{block_n}x32.F32.E4M3.E4M3" in check.sass
    # Every k loop keeps its control, ring slot and wgmma descriptors in uniform registers:
    # at most two moves into them (NVRTC 13.0 leaves two in the claimed 64 x 128 loop,
    # 13.5 one), where a loop ptxas cannot prove warp-uniform has 16 and cost 8-19 %
    # (docs/performance.md, log items 38 c, 39).
    loops = kernel_report.inner_loops(check.sass, "QGMMA")
    assert loops and all(sum("R2UR" in line for line in loop) <= 2 for loop in loops), [
        (len(loop), sum("R2UR" in line for line in loop)) for loop in loops]
    # One wait for the tensor core per k block (four QGMMA of k 32): ptxas serialises every
    # wgmma of a kernel (a wait after each) when it cannot follow one of its k loops, with
    # or without its C7518 warning; the whole tiles' rounds then ran 12-22 % slower (log
    # item 44). The k loops are unrolled by four (the pair kernels' by two, log item 50),
    # beside a loop or straight code for the remaining k blocks.
    shape = [(sum("QGMMA" in line for line in loop), sum("WARPGROUP.DEPBAR" in line for line in loop))
             for loop in loops]
    assert all(qgmma == 4 * waits for qgmma, waits in shape), shape
    unroll = 2 if "_pair<" in spec.expression else 4
    assert max(qgmma for qgmma, _ in shape) == 4 * unroll, shape
    # The scale warp's k loop is uniform: its ring in uniform registers, no loop over
    # lanes around its arrival, the shared window's base not read again (a lane-dependent
    # exit before the role split cost it 8 of 56 instructions per k block, log item 50 d).
    scale_loops = kernel_report.inner_loops(check.sass, "LDGSTS")
    assert scale_loops and all(
        not any(op in line for line in loop for op in ("R2UR", "S2R")) and len(loop) > 20
        for loop in scale_loops), [len(loop) for loop in scale_loops]
    claimed = "_claimed<" in spec.expression
    flags = spec.expression[:-1].split(", ")[7:]  # [turns, split_tail] or _claimed's [split_tail]
    if flags[-1:] == ["true"] and (claimed or len(flags) == 2):  # split_tail
        assert f"QGMMA.64x{block_n // 2}x32.F32.E4M3.E4M3" in check.sass  # the half tiles
    # The claims of tiles handed out at run time (and the reset by the last), only there.
    claims = ("ATOMG.E.ADD.64.STRONG.GPU", "ATOMG.E.EXCH.64.STRONG.GPU")
    assert all((claim in check.sass) == claimed for claim in claims)
    assert "UTMALDG.3D" in check.sass and "LDGSTS" in check.sass  # operands and scales
    # The epilogue's stores: 16-bit results traded within quads of lanes into one 16-byte
    # store per 8 columns of a row (4-byte stores cost 5-14 %, log item 36); fp32 pairs.
    out_kind = int(spec.expression.split(", ")[5])
    stores = set(re.findall(r"STG\.E[.A-Z0-9]*", check.sass))
    assert stores == ({"STG.E.64"} if out_kind == 2 else {"STG.E.128"}), stores
    if "_pair<" in spec.expression:  # b by multicast, barriers signalled across the pair
        assert "UTMALDG.3D.MULTICAST" in check.sass and "UCGABAR_WAIT" in check.sass
        assert "SYNCS.ARRIVE.TRANS64.RED" in check.sass
    # A GPU-wide fence only where the pair's two cluster barriers need one: one per k
    # block (a .release.cluster remote arrival) made the pair 2x slower (log item 26).
    assert check.sass.count("MEMBAR.ALL.GPU") == (2 if "_pair<" in spec.expression else 0)
