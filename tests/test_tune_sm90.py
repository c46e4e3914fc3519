"""scripts/tune_sm90.py without a GPU: a candidate tuple that leaves out the trailing
fields gets their defaults, so a shorter tuple never turns on a knob by shifting; a forced
config is what the dispatcher plans, and only while forced."""

import importlib.util
from pathlib import Path

import pytest

from cugroupgemm.families import sm90

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def tune():
    spec = importlib.util.spec_from_file_location("tune_sm90", SCRIPTS / "tune_sm90.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("candidate, cluster, turns, split_tail", [
    ((64, 128, 64, 2), 1, False, False),
    ((64, 128, 64, 2, 2), 2, False, False),
    ((64, 128, 64, 2, 1, True), 1, True, False),
    ((64, 128, 64, 2, 2, True), 2, True, False),
    ((64, 128, 64, 2, 1, 0, 1), 1, False, True),  # as probe_sm90's 64x128x64x2x1x0x1
])
def test_a_candidate_names_its_config(tune, candidate, cluster, turns, split_tail):
    config = tune.config_of(candidate, sm90.REFERENCE_DEVICE)
    assert (config.block_m, config.block_n, config.promote_k, config.pipes) == candidate[:4]
    assert (config.cluster, config.turns, config.split_tail) == (cluster, turns, split_tail)
    assert config.stages == sm90.max_stages(config.block_m, config.block_n,
                                            sm90.REFERENCE_DEVICE, config.pipes)


def test_every_candidate_is_a_valid_config(tune):
    for candidate in tune.CANDIDATES:
        tune.config_of(candidate, sm90.REFERENCE_DEVICE)


def test_a_forced_config_is_what_the_dispatcher_plans_and_is_undone(tune):
    from cugroupgemm import dispatch
    from cugroupgemm.dtypes import OutKind
    from cugroupgemm.problem import Problem

    problem = Problem(4, 1024, 4096, 7168, 256, OutKind.F16)
    config = tune.config_of((128, 128, 128, 1), sm90.REFERENCE_DEVICE)
    default = dispatch.families()["sm90"].plan(problem, sm90.REFERENCE_DEVICE).config
    with tune.forced(config):
        family = dispatch.choose_family(sm90.REFERENCE_DEVICE)
        assert family.name == "sm90"
        assert family.plan(problem, sm90.REFERENCE_DEVICE).config == config
    assert dispatch.families()["sm90"].plan(problem, sm90.REFERENCE_DEVICE).config == default
    assert default != config
