"""The first-use self-check without a GPU: verdicts, warnings, dispatch fallback, the child
process protocol, the probe inputs and the comparison (GPU half: test_selfcheck_gpu.py)."""

import dataclasses
import logging
import sys
import warnings

import numpy as np
import pytest

from cugroupgemm import dispatch, reference, selfcheck
from cugroupgemm.dtypes import OutKind
from cugroupgemm.errors import UnsupportedDeviceError
from cugroupgemm.families import portable, sm90, sm100
from cugroupgemm.problem import Problem

B200 = sm100.REFERENCE_DEVICE
H100 = sm90.REFERENCE_DEVICE


@pytest.fixture(autouse=True)
def fresh_verdicts(monkeypatch):
    monkeypatch.setattr(selfcheck, "_verdicts", {})
    monkeypatch.delenv("CUGROUPGEMM_SELFCHECK", raising=False)
    monkeypatch.delenv("CUGROUPGEMM_KERNEL", raising=False)


@pytest.fixture
def child(monkeypatch):
    """A fake child: records each run and answers with ``child.failure``."""

    class Child:
        failure = None
        runs = []

        def __call__(self, family_name, device_id):
            self.runs.append((family_name, device_id))
            return self.failure

    fake = Child()
    fake.runs = []
    monkeypatch.setattr(selfcheck, "_run_child", fake)
    return fake


# ---- verdicts --------------------------------------------------------------------------

def test_a_validated_family_and_the_fallback_are_never_checked(child):
    validated = dataclasses.replace(sm90.FAMILY, validated_archs=(90,))
    assert selfcheck.trusted(validated, H100)
    assert selfcheck.trusted(portable.FAMILY, B200)
    assert child.runs == []


def test_an_unvalidated_family_is_checked_once_per_process(child):
    assert selfcheck.trusted(sm100.FAMILY, B200)
    assert selfcheck.trusted(sm100.FAMILY, dataclasses.replace(B200, device_id=3))
    assert child.runs == [("sm100", -1)]  # the verdict is per architecture, not per GPU


def test_a_failed_check_warns_and_logs_once_and_holds(child, caplog):
    child.failure = "probe 0: group 1 row 2 column 3: 5.0 where the portable kernel gives 4.0"
    with caplog.at_level(logging.WARNING, logger="cugroupgemm"):
        with pytest.warns(selfcheck.SelfCheckWarning, match=r"sm100 kernel family has never "
                          r"been validated on B200 \(reference\) \(sm_100\).*group 1 row 2"):
            assert not selfcheck.trusted(sm100.FAMILY, B200)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert not selfcheck.trusted(sm100.FAMILY, B200)
    assert len(child.runs) == 1
    assert [r.levelno for r in caplog.records if "self-check failed" in r.message] == [
        logging.WARNING]


@pytest.mark.parametrize("value", ["0", "off", "False", "no"])
def test_the_switch_trusts_unvalidated_families_unchecked(child, monkeypatch, value):
    monkeypatch.setenv("CUGROUPGEMM_SELFCHECK", value)
    assert selfcheck.trusted(sm100.FAMILY, B200)
    assert child.runs == []


# ---- dispatch --------------------------------------------------------------------------

def test_dispatch_prefers_sm100_on_a_b200_once_its_check_passes(child):
    assert dispatch.choose_family(B200).name == "sm100"
    assert dispatch.choose_family(dataclasses.replace(B200, cc=(10, 3))).name == "sm100"


def test_dispatch_falls_back_to_portable_when_the_check_fails(child):
    child.failure = "no answer within 300 s (a hung kernel?)"
    with pytest.warns(selfcheck.SelfCheckWarning):
        assert dispatch.choose_family(B200).name == "portable"
    assert dispatch.choose_family(B200).name == "portable"
    assert child.runs == [("sm100", -1)]


def test_a_forced_family_is_not_checked(child, monkeypatch):
    child.failure = "wrong"
    monkeypatch.setenv("CUGROUPGEMM_KERNEL", "sm100")
    assert dispatch.choose_family(B200).name == "sm100"
    assert child.runs == []
    with pytest.raises(UnsupportedDeviceError, match="cannot run on H100"):
        dispatch.choose_family(H100)


# ---- the child process protocol ---------------------------------------------------------

def fake_child_command(monkeypatch, code):
    monkeypatch.setattr(selfcheck, "_child_command",
                        lambda name, device_id: [sys.executable, "-c", code, name, str(device_id)])


def test_the_child_verdict_line_is_the_answer(monkeypatch):
    fake_child_command(monkeypatch, "print('noise'); print('cugroupgemm self-check: passed')")
    assert selfcheck._run_child("sm100", 0) is None
    fake_child_command(monkeypatch, "print('cugroupgemm self-check: failed: probe 1: NaN')")
    assert selfcheck._run_child("sm100", 0) == "probe 1: NaN"


def test_a_crashed_child_is_a_failure_naming_its_status(monkeypatch):
    fake_child_command(monkeypatch, "import sys; print('CUDA_ERROR_ILLEGAL_INSTRUCTION', "
                       "file=sys.stderr); sys.exit(3)")
    assert selfcheck._run_child("sm100", 0) == (
        "the check exited with status 3 and no verdict: CUDA_ERROR_ILLEGAL_INSTRUCTION")


def test_a_hung_child_is_killed_and_is_a_failure(monkeypatch):
    fake_child_command(monkeypatch, "import time; time.sleep(60)")
    monkeypatch.setattr(selfcheck, "TIMEOUT_S", 1)
    assert selfcheck._run_child("sm100", 0) == "no answer within 1 s (a hung kernel?)"


def test_the_child_imports_this_package(monkeypatch, tmp_path):
    fake_child_command(monkeypatch, "import cugroupgemm.selfcheck as s; "
                       "print(s.VERDICT_PREFIX + 'failed: ' + s.__file__)")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    assert selfcheck._run_child("sm100", 0) == selfcheck.__file__


def test_main_reports_an_exception_as_a_one_line_failure(monkeypatch, capsys):
    def broken(family, device_id):
        raise RuntimeError("cuLaunchKernel failed:\n  CUDA_ERROR_INVALID_VALUE")

    monkeypatch.setattr(selfcheck, "probe", broken)
    assert selfcheck.main(["sm100", "0"]) == 0
    assert capsys.readouterr().out == (
        "cugroupgemm self-check: failed: RuntimeError: cuLaunchKernel failed: "
        "CUDA_ERROR_INVALID_VALUE\n")


# ---- probes ------------------------------------------------------------------------------

def normalised(config):
    """A config's tile shape: what the heuristics choose apart from stages and out kind."""
    return dataclasses.replace(config, stages=0, out_kind=OutKind.BF16)


@pytest.mark.parametrize("family, device", [(sm90, H100), (sm100, B200)])
def test_the_probes_reach_every_tile_shape_the_heuristics_pick(family, device):
    def shape(problem):
        return normalised(family.plan(problem, device).config)

    # Every expected_m, with tiles enough to cover the SMs and with a few (sm90's wide
    # tile needs the first); each probe as the problem it runs.
    chosen = {shape(Problem(groups, 4096, n, 1024, em, OutKind.BF16))
              for groups, n in ((8, 4096), (1, 256)) for em in range(1, 4097)}
    probed = {shape(Problem(p.groups, p.m, p.n, p.k, p.expected_m, p.out_kind))
              for p in selfcheck.PROBES}
    assert chosen <= probed, f"no probe reaches {chosen - probed}"


def test_the_probes_are_valid_problems_covering_every_output_kind():
    for p in selfcheck.PROBES:
        assert len(p.masked_m) == p.groups and all(0 <= r <= p.m for r in p.masked_m)
        assert p.k % 128 == 0 and p.n % 16 == 0 and 0 < p.expected_m <= p.m
    assert {p.out_kind for p in selfcheck.PROBES} == set(OutKind)
    assert any(p.k // 128 > sm100.max_stages(B200) for p in selfcheck.PROBES)  # rings wrap
    most_tiles = max(p.groups * -(-p.m // 128) * -(-p.n // 128) for p in selfcheck.PROBES)
    assert most_tiles > 2 * B200.sm_count  # CTAs walk several tiles


def test_probe_inputs_are_exact_integers_and_non_power_of_two_scales():
    p = selfcheck.PROBES[0]
    inputs = selfcheck.make_inputs(p, seed=0)
    values = reference.fp8_e4m3_to_float64(inputs["a"])
    assert inputs["a"].shape == (p.groups, p.m, p.k) and inputs["b"].shape == (p.groups, p.n, p.k)
    assert set(np.unique(values)) == set(range(-8, 9))
    assert inputs["b_scale"].shape == (p.groups, 3, p.k // 128)
    steps = inputs["a_scale"].astype(np.float64) * 1024 - 1024
    assert np.array_equal(steps, np.round(steps)) and (1 <= inputs["a_scale"]).all()
    assert (inputs["a_scale"] < 2).all() and (inputs["a_scale"] != 1).any()
    np.testing.assert_array_equal(selfcheck.make_inputs(p, seed=0)["b"], inputs["b"])


# ---- the comparison ------------------------------------------------------------------------

def outputs(kind=OutKind.F32, masked=(2, 0, 3)):
    """Poisoned outputs of 3 groups x 3 rows x 4 columns with the valid rows filled."""
    bits_type = np.uint32 if kind == OutKind.F32 else np.uint16
    values = np.arange(36, dtype=np.float32).reshape(3, 3, 4) - 10
    if kind == OutKind.F32:
        written = values.view(np.uint32)
    elif kind == OutKind.F16:
        written = values.astype(np.float16).view(np.uint16)
    else:
        written = (values.view(np.uint32) >> 16).astype(np.uint16)
    bits = np.full((3, 3, 4), selfcheck.POISON[kind], dtype=bits_type)
    for g, rows in enumerate(masked):
        bits[g, :rows] = written[g, :rows]
    return bits, list(masked)


@pytest.mark.parametrize("kind", list(OutKind))
def test_equal_outputs_agree(kind):
    bits, masked = outputs(kind)
    assert selfcheck.disagreement(bits, bits.copy(), masked, kind) is None


def test_a_wrong_value_is_named_with_its_place():
    want, masked = outputs()
    got = want.copy()
    got[2, 1, 3] = np.float32(99).view(np.uint32)
    assert selfcheck.disagreement(got, want, masked, OutKind.F32) == (
        "group 2 row 1 column 3: 99.0 where the portable kernel gives 21.0 (1 elements of the "
        "group differ)")


def test_rounding_within_the_tolerance_agrees():
    want, masked = outputs()
    got = want.copy()
    got[0, 1, 2] = np.float32(-4 * (1 + 5e-3)).view(np.uint32)  # want -4.0
    assert selfcheck.disagreement(got, want, masked, OutKind.F32) is None


def test_nan_from_either_kernel_is_a_failure():
    want, masked = outputs()
    got = want.copy()
    got[0, 0, 1] = np.float32(np.nan).view(np.uint32)
    assert "the family gave nan" in selfcheck.disagreement(got, want, masked, OutKind.F32)
    assert "the portable kernel gave nan" in selfcheck.disagreement(want, got, masked, OutKind.F32)


def test_a_row_past_the_mask_written_is_a_failure():
    want, masked = outputs(OutKind.BF16)
    got = want.copy()
    got[1, 0, 0] = 0
    assert selfcheck.disagreement(got, want, masked, OutKind.BF16) == (
        "group 1 row 0 column 0: written, but masked_m[1] = 0")


def test_a_valid_row_left_unwritten_is_a_failure():
    want, masked = outputs(OutKind.BF16)
    got = want.copy()
    got[2, 2] = selfcheck.POISON[OutKind.BF16]
    assert selfcheck.disagreement(got, want, masked, OutKind.BF16).startswith("group 2 row 2 ")
