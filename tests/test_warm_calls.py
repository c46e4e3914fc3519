"""Warm calls without a GPU: which calls may take the path, and the bound on what is kept."""

from types import SimpleNamespace

from conftest import fake_gemm_args

from cugroupgemm import frameworks, warm_calls
from cugroupgemm.dtypes import OutKind
from cugroupgemm.launch import GemmParams
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
    keys = [("cupy", id(family), int, i) for i in range(warm_calls.MAX_ENTRIES + 1)]
    for key in keys:
        warm_calls.remember(key, (family, launch), problem, True)
    assert len(warm_calls._entries) == warm_calls.MAX_ENTRIES
    assert keys[0] not in warm_calls._entries and keys[-1] in warm_calls._entries


def test_a_launch_of_another_family_than_the_key_says_is_not_kept():
    keyed, launched = object(), object()
    key = ("cupy", id(keyed), int, 1)
    warm_calls.remember(key, (launched, SimpleNamespace(device_id=0)),
                        Problem(1, 64, 128, 128, 16, OutKind.F32), False)
    assert key not in warm_calls._entries


class RecordedLaunch(SimpleNamespace):
    """A stand-in KernelLaunch: records each run's stream and params."""

    def run(self, stream, params=None):
        self.runs.append((stream, params))


def test_a_replay_allocates_as_a_first_call_does_and_points_the_params_at_it(monkeypatch):
    allocations = []

    def allocate(framework, shape, dtype, device_id, stream):
        allocations.append((framework, shape, dtype, device_id, stream))
        return SimpleNamespace(ptr=0xABC000), "the output"

    monkeypatch.setattr(frameworks, "allocate", allocate)
    monkeypatch.setattr(frameworks, "current_stream", lambda framework, device_id: 77)
    family = object()
    launch = RecordedLaunch(device_id=3, arguments=(GemmParams(out=0x1000),), runs=[])
    allocating, given = ("torch", id(family), "allocates"), ("torch", id(family), "out given")
    problem = Problem(2, 64, 256, 128, 16, OutKind.BF16)
    warm_calls.remember(allocating, (family, launch), problem, True)
    warm_calls.remember(given, (family, launch), problem, False)
    assert warm_calls.replay(allocating, None) == "the output"
    assert allocations == [("torch", (2, 64, 256), OutKind.BF16.dtype, 3, 77)]
    stream, params = launch.runs[0]
    assert stream == 77 and params.out == 0xABC000
    assert launch.arguments[0].out == 0x1000  # the remembered params are left as they were
    out = object()
    assert warm_calls.replay(given, out) is out
    assert launch.runs[1] == (77, None) and len(allocations) == 1


def test_nothing_is_kept_without_a_key_or_a_launch():
    warm_calls.remember(None, (object(), SimpleNamespace(device_id=0)),
                        Problem(1, 64, 128, 128, 16, OutKind.F32), False)
    warm_calls.remember(("cupy", 0), None, Problem(1, 0, 128, 128, 0, OutKind.F32), False)
    assert not warm_calls._entries
