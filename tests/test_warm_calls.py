"""Warm calls without a GPU: which calls may take the path, and the bound on what is kept."""

from types import SimpleNamespace

from conftest import fake_gemm_args

from cugroupgemm import warm_calls
from cugroupgemm.dtypes import OutKind
from cugroupgemm.problem import Problem


def test_arrays_of_other_frameworks_never_take_the_path():
    args = fake_gemm_args()
    arrays = (args["a"], args["b"], args["a_scale"], args["b_scale"], args["masked_m"], None)
    assert warm_calls.key_of(arrays, 16, (1, 128, 128), None) is None


def test_an_unhashable_argument_is_a_miss_not_an_error():
    assert warm_calls.replay(("torch", 0, list, [1]), None) is None


def test_the_oldest_launch_is_forgotten_past_the_bound():
    family = object()
    launch = SimpleNamespace(device_id=0)
    problem = Problem(1, 64, 128, 128, 16, OutKind.F32)
    result = SimpleNamespace(dtype="float32")
    keys = [("cupy", id(family), int, i) for i in range(warm_calls.MAX_ENTRIES + 1)]
    for key in keys:
        warm_calls.remember(key, family, launch, problem, True, result)
    assert len(warm_calls._entries) == warm_calls.MAX_ENTRIES
    assert keys[0] not in warm_calls._entries and keys[-1] in warm_calls._entries


def test_a_launch_of_another_family_than_the_key_says_is_not_kept():
    keyed, launched = object(), object()
    key = ("cupy", id(keyed), int, 1)
    warm_calls.remember(key, launched, SimpleNamespace(device_id=0),
                        Problem(1, 64, 128, 128, 16, OutKind.F32), False, None)
    assert key not in warm_calls._entries
