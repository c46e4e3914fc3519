"""Every kernel compiles for every target its family claims, with the instructions meant.

No GPU needed: NVRTC builds the cubins; nvdisasm (the [test] extra installs it) shows
the SASS. This is what CI checks for sm_80, sm_89, sm_90a and sm_100a.
"""

import pytest

from cugroupgemm import dispatch, kernel_report, quantize

GEMM_JOBS = [(family.name, spec, pattern)
             for family in dispatch.families().values() for target in family.check_targets
             for spec, pattern in family.check_specs(target)]
QUANT_JOBS = [spec for target in ("sm_80", "sm_89", "sm_90a", "sm_100a")
              for spec in quantize.check_specs(target)]


def _id(job):
    spec = job[1] if isinstance(job, tuple) else job
    return f"{spec.target}-{spec.expression.replace(' ', '')}"


@pytest.mark.parametrize("job", GEMM_JOBS, ids=_id)
def test_gemm_kernel_compiles_without_spills_and_uses_tensor_cores(job):
    _, spec, pattern = job
    check = kernel_report.check_kernel(spec, pattern)
    assert check.resources.spill_store_bytes == 0 and check.resources.spill_load_bytes == 0
    assert check.resources.stack_bytes == 0, check.resources
    if check.sass is None:
        pytest.skip("no disassembler installed: SASS not checked")
    assert check.tensor_core_ok, f"no {pattern!r} in the SASS of {spec.expression}"
    assert check.local_memory_ops == 0


@pytest.mark.parametrize("spec", QUANT_JOBS, ids=_id)
def test_quantizer_compiles_without_spills(spec):
    check = kernel_report.check_kernel(spec, "")
    assert check.resources.spill_store_bytes == 0 and check.resources.spill_load_bytes == 0
    if check.sass is not None:
        assert check.local_memory_ops == 0


def test_every_claimed_target_is_covered():
    targets = {spec.target for _, spec, _ in GEMM_JOBS}
    assert {"sm_80", "sm_89", "sm_90a", "sm_100a"} <= targets


def test_the_sm100_family_is_checked_on_sm_100a_and_sm_100f():
    """Never run on hardware: these compile and SASS checks are what CI can hold it to."""
    targets = {spec.target for name, spec, _ in GEMM_JOBS if name == "sm100"}
    assert targets == {"sm_100a", "sm_100f"}
    assert all("UTCQMMA" in pattern and "UTMALDG" in pattern
               for name, _, pattern in GEMM_JOBS if name == "sm100")


def test_check_command_prints_one_line_per_kernel(capsys, tmp_path):
    from cugroupgemm.__main__ import main

    assert main(["check", "--dump", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert f"{len(GEMM_JOBS) + len(QUANT_JOBS)} passed, 0 failed" in printed
    assert "regs" in printed and "spills 0/0 B" in printed
    if kernel_report.disassembler() is not None:
        assert any(p.name.startswith("portable-sm_90a-") for p in tmp_path.iterdir())


NVDISASM_LOOPS = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
.L_x_1:
        /*0010*/                   QGMMA.64x128x32.F32.E4M3.E4M3 R24, gdesc[UR4], R24 ;
.L_x_2:
        /*0020*/                   SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR8], R2 ;
        /*0030*/              @!P0 BRA `(.L_x_3) ;
        /*0040*/                   R2UR UR4, R4 ;
        /*0050*/              @!P1 BRA `(.L_x_1) ;
        /*0060*/                   EXIT ;
.L_x_3:
        /*0070*/                   SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR8], R2 ;
        /*0080*/              @!P0 BRA `(.L_x_3) ;
        /*0090*/                   BRA `(.L_x_2) ;
"""


def test_inner_loops_are_the_backward_branches_around_an_instruction():
    """The k loop (0x10-0x50), not the barrier retry's way back into it (0x20-0x90, which
    crosses it and is longer) nor the retry loop itself (no QGMMA); cuobjdump's branches
    name addresses instead of labels."""
    loops = kernel_report.inner_loops(NVDISASM_LOOPS, "QGMMA")
    assert [len(loop) for loop in loops] == [5]
    assert loops[0][0].startswith("QGMMA") and loops[0][-1] == "@!P1 BRA `(.L_x_1)"
    by_address = NVDISASM_LOOPS.replace("`(.L_x_1)", "0x10").replace("`(.L_x_2)", "0x20")
    assert [len(loop) for loop in kernel_report.inner_loops(by_address, "QGMMA")] == [5]
    assert kernel_report.inner_loops(NVDISASM_LOOPS, "HGMMA") == []
