"""The sm100 family's host half without a GPU: targets, configs, shared memory, plans, TMA
maps, and what NVRTC + ptxas made of every instance against the limits of an SM100 SM."""

import ctypes
import dataclasses
import re

import pytest

from conftest import compile_static_asserts

from cugroupgemm import build, dlpack, dtypes, kernel_report, tma, validate
from cugroupgemm.dtypes import OutKind
from cugroupgemm.errors import UnsupportedDeviceError
from cugroupgemm.families import sm100
from cugroupgemm.problem import Problem

B200 = sm100.REFERENCE_DEVICE
B300 = dataclasses.replace(B200, name="B300", cc=(10, 3), sm_count=160)
SMALL_SMEM = dataclasses.replace(B200, name="small smem", smem_per_block_optin=101376)
HOPPER = dataclasses.replace(B200, name="H100", cc=(9, 0))
THOR = dataclasses.replace(B200, name="Thor", cc=(11, 0))
RTX_BLACKWELL = dataclasses.replace(B200, name="RTX 5090", cc=(12, 0))


def problem(groups=32, m=1024, n=4096, k=7168, expected_m=8, out_kind=OutKind.BF16):
    return Problem(groups, m, n, k, expected_m, out_kind)


def test_runs_on_10_0_as_sm_100a_and_on_10_3_as_sm_100f_only():
    assert sm100.runs_on(B200) and sm100.target_for(B200) == "sm_100a"
    assert sm100.runs_on(B300) and sm100.target_for(B300) == "sm_100f"
    for other in (HOPPER, THOR, RTX_BLACKWELL):
        assert not sm100.runs_on(other), other.name
    assert sm100.FAMILY.check_targets == ("sm_100a", "sm_100f")
    assert sm100.FAMILY.validated_archs == ()  # never run: the self-check guards it


def test_the_worked_example_of_the_docstring():
    config = sm100.choose_config(problem(groups=32, m=4096, n=7168, expected_m=256), B200)
    assert config.stages == (232448 - 1104) // 32784 == 7
    assert config.smem_bytes == 7 * 32784 + 1104 == 230592
    assert config.expression() == "sm100_fp8_masked_gemm<7, 0>"


def test_the_layout_mirror_matches_the_kernel():
    """Compile static_asserts against the kernel's own Layout for a few stage counts."""
    checks = [f"static_assert(sm100_gemm::Layout<{s}>::BYTES == {sm100.smem_bytes(s)}, "
              f"\"stages {s}\");" for s in (2, 7, sm100.MAX_STAGES)]
    checks += [f"static_assert(sm100_gemm::ACC_STAGES == {sm100.ACC_STAGES}, \"acc stages\");",
               f"static_assert(sm100_gemm::THREADS == {sm100.THREADS}, \"threads\");"]
    compile_static_asserts(sm100.SOURCE, "sm_100a", checks)


@pytest.mark.parametrize("device", [B200, B300, SMALL_SMEM])
@pytest.mark.parametrize("expected_m", [1, 64, 129, 4096])
def test_every_plan_fits_the_device(device, expected_m):
    plan = sm100.plan(problem(expected_m=expected_m), device)
    config = plan.config
    assert sm100.MIN_STAGES <= config.stages <= sm100.MAX_STAGES
    assert plan.smem_bytes == config.smem_bytes <= device.smem_per_block_optin
    assert (config.stages == sm100.MAX_STAGES
            or sm100.smem_bytes(config.stages + 1) > device.smem_per_block_optin)
    assert plan.grid[0] <= device.sm_count and plan.grid[1:] == (1, 1)
    assert plan.block == (256, 1, 1)
    assert plan.spec.source == sm100.SOURCE and plan.spec.target == sm100.target_for(device)


def test_a_cta_never_shares_its_sm_so_taking_all_tensor_memory_is_safe():
    for device in (B200, B300):
        assert 2 * sm100.plan(problem(), device).smem_bytes > device.smem_per_block_optin


def test_too_little_shared_memory_is_a_clear_error():
    tiny = dataclasses.replace(B200, smem_per_block_optin=60000)
    with pytest.raises(UnsupportedDeviceError, match=r"at least \d+ bytes of shared memory"):
        sm100.plan(problem(), tiny)


def test_grid_is_no_larger_than_the_tile_count():
    assert sm100.plan(problem(groups=1, m=16, n=272, k=128, expected_m=4), B200).grid == (3, 1, 1)
    assert sm100.plan(problem(groups=64, m=4096, n=7168, k=2048), B200).grid == (148, 1, 1)


def test_a_given_config_takes_the_problems_out_kind():
    plan = sm100.plan(problem(out_kind=OutKind.F32), B200, sm100.Sm100Config(3, OutKind.BF16))
    assert plan.config == sm100.Sm100Config(3, OutKind.F32)
    assert plan.spec.expression == "sm100_fp8_masked_gemm<3, 2>"


def test_validation_guarantees_the_epilogues_16_byte_stores():
    """Each thread stores 16 bytes (8 bf16/f16 or 4 f32 values) at column n0 + c of its
    row; validate.py keeps out's row and group strides multiples of 8 elements and its
    start 16-byte aligned, and n a multiple of 16 (tests/test_validate.py)."""
    for kind in OutKind:
        assert validate.OUT_ROW_ALIGN_ELEMENTS * kind.dtype.itemsize % 16 == 0, kind


# ---- TMA descriptors (the driver is faked: no GPU here) ------------------------------

def view(shape, ptr):
    return dlpack.TensorView(ptr, tuple(shape), dlpack.compact_strides(shape),
                             dtypes.FLOAT8_E4M3FN, dlpack.KDL_CUDA, 0, False)


def test_operand_maps_are_the_hopper_3d_maps_with_128_row_boxes(fake_driver):
    plan = sm100.plan(problem(groups=3, m=100, n=272, k=512, expected_m=70), B200)
    maps = sm100.extra_arguments(plan, {"a": view((3, 100, 512), 0x7F0000000000),
                                        "b": view((3, 272, 512), 0x7F0000100000)})
    assert all(isinstance(m, tma.TensorMap) and ctypes.sizeof(m) == 128 for m in maps)
    call_a, call_b = fake_driver.calls
    assert call_a["dims"] == (512, 100, 3) and call_a["strides"] == (512, 51200)
    assert call_a["box"] == (128, 128, 1) and call_b["box"] == (128, 128, 1)
    assert call_b["dims"] == (512, 272, 3)
    # 128-byte swizzle: what the smem descriptors' layout field says (docs/sm100.md).
    assert call_a["swizzle"] == tma.SWIZZLE_128B and call_a["oob"] == tma.OOB_FILL_ZEROS


# ---- descriptors: an encoder written from the PTX ISA tables, against the SASS --------

def instruction_descriptor(m, n, a_e5m2=False, b_e5m2=False):
    """PTX ISA 9.7.16.4.2, Table 42, kind::f8f6f4 (dense, F32 D, K-major A and B)."""
    fields = {(4, 2): 1, (7, 3): int(a_e5m2), (10, 3): int(b_e5m2), (17, 6): n >> 3,
              (24, 5): m >> 4}
    value = 0
    for (low, width), field in fields.items():
        assert field < 1 << width
        value |= field << low
    return value


def test_the_encoder_reproduces_the_hand_derived_table():
    assert instruction_descriptor(128, 128) == 0x08200010
    assert instruction_descriptor(128, 256) == 0x08400010
    assert instruction_descriptor(64, 128) == 0x04200010


# ---- what ptxas made of every instance CI checks, against one SM100 SM ---------------

SPECS = [spec for target in sm100.FAMILY.check_targets for spec, _ in sm100.check_specs(target)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.target}-{s.expression}")
def test_instances_fit_an_sm100_sm_without_spills(spec):
    check = kernel_report.check_kernel(spec, sm100.SASS_PATTERN)
    resources = check.resources
    assert resources.spill_store_bytes == resources.spill_load_bytes == 0, resources
    assert resources.stack_bytes == 0, resources
    assert resources.registers <= sm100.MAX_REGISTERS_PER_THREAD
    assert resources.registers * sm100.THREADS <= sm100.REGISTERS_PER_SM
    stages = int(re.search(r"<(\d+),", spec.expression).group(1))
    assert resources.smem_bytes + sm100.smem_bytes(stages) <= B200.smem_per_block_optin
    assert "C7508" not in build.compile_kernel(spec).log  # no ignored register hints


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.target}-{s.expression}")
def test_sass_holds_the_tcgen05_pipeline(spec):
    check = kernel_report.check_kernel(spec, sm100.SASS_PATTERN)
    if check.sass is None:
        pytest.skip("no disassembler installed: SASS not checked")
    sass = check.sass
    assert check.tensor_core_ok and check.local_memory_ops == 0
    mmas = re.findall(r"UTCQMMA[^;]*;", sass)
    assert mmas, "no tcgen05.mma"
    # Plain kind::f8f6f4: D and the (unused) input-D tensor-memory operands only; the
    # block-scaled form would add scale-factor operands. One CTA: no .2CTA forms.
    assert all(mma.count("tmem[") == 2 for mma in mmas), mmas
    assert any("!UPT" in mma for mma in mmas), "no MMA overwrites its buffer (enable-input-d)"
    assert ".2CTA" not in sass and "UTCCP" not in sass
    for instruction in ("UTMALDG.3D", "UTCBAR", "LDTM.x32", "UTCATOMSWS.FIND_AND_SET",
                        "UTCATOMSWS.AND", "STG.E.128"):
        assert instruction in sass, instruction
    # The instruction descriptor reaches the MMA as an immediate equal to the encoder's.
    idesc_registers = set(re.findall(r"idesc\[(UR\d+)\]", sass))
    immediates = {int(value, 16) for register in idesc_registers
                  for value in re.findall(rf"UMOV {register}, (0x[0-9a-f]+)", sass)}
    assert immediates == {instruction_descriptor(128, 128)}, immediates
