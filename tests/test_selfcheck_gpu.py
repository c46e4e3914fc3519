"""The self-check on a Hopper GPU: the sm90 family marked as never validated, once as it
is (it must pass silently and stay chosen), once made wrong (warn once, portable after)."""

import dataclasses
import sys
import warnings

import pytest
from conftest import assert_close_to_reference, make_gemm_inputs, reference_gpu

from cugroupgemm import batch_deepgemm_fp8_nt_groupwise as gemm
from cugroupgemm import dispatch, selfcheck
from cugroupgemm.device import device_info
from cugroupgemm.families import sm90

pytestmark = pytest.mark.gpu

# Makes the sm90 family read b through a tensor map over a's memory: a wrong result
# (a @ a.T), with every access in bounds. Run in the self-check's child process.
WRONG_SM90 = """
import dataclasses
from cugroupgemm.families import sm90
right = sm90.FAMILY.extra_arguments
sm90.FAMILY = dataclasses.replace(
    sm90.FAMILY, extra_arguments=lambda plan, views: right(plan, {**views, "b": views["a"]}))
"""


def wrong_sm90_child(family_name, device_id):
    code = WRONG_SM90 + ("import sys\nfrom cugroupgemm.selfcheck import main\n"
                         "sys.exit(main(sys.argv[1:]))\n")
    return [sys.executable, "-c", code, family_name, str(device_id)]


@pytest.fixture
def info(monkeypatch):
    """Device 0 with sm90 unvalidated and no verdict yet: the state of a fresh process."""
    info = device_info(0)
    if not sm90.runs_on(info):
        pytest.skip("the sm90 family needs a compute capability 9.0 GPU")
    monkeypatch.setattr(sm90, "FAMILY", dataclasses.replace(sm90.FAMILY, validated_archs=()))
    monkeypatch.setattr(selfcheck, "_verdicts", {})
    monkeypatch.delenv("CUGROUPGEMM_KERNEL", raising=False)
    monkeypatch.delenv("CUGROUPGEMM_SELFCHECK", raising=False)
    monkeypatch.setenv("CUGROUPGEMM_PRINT_CONFIG", "1")
    return info


def call_and_check(capsys):
    """One public call on fresh inputs, checked against the reference; the family it used."""
    import cupy as cp

    inputs = make_gemm_inputs(3, 200, 400, 512, [200, 0, 65], seed=11)
    out = gemm(**inputs, expected_m=64, out_dtype="float32")
    cp.cuda.runtime.deviceSynchronize()
    assert_close_to_reference(out.astype(cp.float64), reference_gpu(**inputs), inputs["masked_m"])
    printed = [line for line in capsys.readouterr().out.splitlines()
               if line.startswith("cugroupgemm: ")]
    assert len(printed) == 1, printed
    return printed[0].split()[1]


def test_the_probe_passes_the_real_sm90_kernel(info):
    assert selfcheck.probe(sm90.FAMILY, info.device_id) is None


def test_the_probe_catches_a_wrong_result(info):
    right = sm90.FAMILY.extra_arguments
    wrong = dataclasses.replace(sm90.FAMILY, extra_arguments=lambda plan, views: right(
        plan, {**views, "b": views["a"]}))
    failure = selfcheck.probe(wrong, info.device_id)
    assert failure is not None and failure.startswith("probe 0 "), failure


def test_an_unvalidated_family_that_agrees_stays_chosen_without_a_warning(info, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error", selfcheck.SelfCheckWarning)
        assert call_and_check(capsys) == "sm90"  # the first call runs the check
        assert call_and_check(capsys) == "sm90"
    assert selfcheck._verdicts == {("sm90", info.cc): True}


def test_a_wrong_result_warns_once_and_falls_back_to_portable(info, capsys, caplog,
                                                               monkeypatch):
    monkeypatch.setattr(selfcheck, "_child_command", wrong_sm90_child)
    with pytest.warns(selfcheck.SelfCheckWarning, match=r"sm90 kernel family .* self-check "
                      r"failed: probe 0 ") as record:
        assert call_and_check(capsys) == "portable"
    assert len([w for w in record if w.category is selfcheck.SelfCheckWarning]) == 1
    assert len([r for r in caplog.records if "self-check failed" in r.message]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", selfcheck.SelfCheckWarning)
        assert call_and_check(capsys) == "portable"  # the rest of the process
        assert dispatch.choose_family(info).name == "portable"
    assert selfcheck._verdicts == {("sm90", info.cc): False}
