"""Property tests of the host-side contract, without a GPU (hypothesis).

Any call either passes validation or raises ArgumentTypeError/ArgumentValueError whose
message names an argument that really is at fault; never another exception. The arrays
are fake CUDA arrays (tests/conftest.py) and the GPU steps of the public function (output
allocation, device query) are replaced by a sentinel, so a valid call is seen to stop
exactly where the GPU would first be needed.

The rules below (``faults``) are the contract written a second time, from docs/api.md,
as the model the validator is checked against.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from conftest import FakeCudaArray, fake_gemm_args
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import cugroupgemm
from cugroupgemm import api, dlpack, dtypes, validate
from cugroupgemm.dtypes import OutKind, out_kind_from_user
from cugroupgemm.errors import ArgumentTypeError, ArgumentValueError

ARRAYS = ("a", "b", "a_scale", "b_scale", "masked_m", "out")
INT32_MAX = 2**31 - 1
KEY = {"a": (dtypes.FLOAT8_E4M3FN, dtypes.UINT8), "b": (dtypes.FLOAT8_E4M3FN, dtypes.UINT8),
       "a_scale": (dtypes.FLOAT32,), "b_scale": (dtypes.FLOAT32,), "masked_m": (dtypes.INT32,),
       "out": (dtypes.BFLOAT16, dtypes.FLOAT16, dtypes.FLOAT32)}
# Every (code, bits) a DLPack producer can state with one lane: the codes of dlpack.h
# (int, uint, float, opaque handle, bfloat, complex, bool, the float8/6/4 family) and one
# unknown code, at every width.
ANY_DTYPE = st.builds(dtypes.from_dlpack_code, st.sampled_from([*range(18), 255]),
                      st.sampled_from([1, 4, 6, 8, 16, 32, 64, 128]), st.just(1))
DEVICES = [(dlpack.KDL_CUDA, 0), (dlpack.KDL_CUDA, 1), (dlpack.KDL_CPU, 0),
           (dlpack.KDL_CUDA_HOST, 0), (dlpack.KDL_CUDA_MANAGED, 0), (10, 0)]  # 10: ROCm
NOT_ARRAYS = [None, [1, 2, 3], 3.0, np.zeros((2, 3), np.float32)]  # numpy: a CPU array

VALID_OUT_DTYPES = [None, "bfloat16", "float16", "float32", "bf16", "half", np.float16,
                    np.float32, np.dtype("float32")]
BAD_OUT_DTYPES = ["int8", "float64", "", "float8_e4m3fn", np.float64, np.int32, object(), 3]
VALID_GRANULARITIES = [(1, 128, 128), [1, 128, 128], np.array([1, 128, 128]),
                       (np.int64(1), 128, 128)]
BAD_GRANULARITIES = [(128, 128, 128), (1, 128), (1, 64, 128), (1, 128, 128, 1),
                     (1.0, 128, 128), None, "abc", 5, (1, 128, "128")]
BAD_EXPECTED_M = [-1, True, False, np.True_, 3.0, float("nan"), float("inf"), "8", None,
                  Fraction(3), Decimal(3), 10**30, -(10**30), 2**63, np.float64(2)]


class ReachedGpu(Exception):
    """Raised by the stand-ins of the GPU steps: validation let the call through."""


@dataclass(frozen=True)
class Dims:
    groups: int
    m: int
    n: int
    k: int

    def shape_of(self, name: str) -> tuple[int, ...]:
        g, m, n, k = self.groups, self.m, self.n, self.k
        return {"a": (g, m, k), "b": (g, n, k), "a_scale": (g, m, k // 128),
                "b_scale": (g, -(-n // 128), k // 128), "masked_m": (g,), "out": (g, m, n)}[name]


@dataclass(frozen=True)
class ArraySpec:
    """One fake array as the call will see it, or ``stand_in`` for a non-array."""

    dtype: dtypes.DType
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    ptr: int
    device: tuple[int, int] = (dlpack.KDL_CUDA, 0)
    readonly: bool = False
    stand_in: object = field(default=None, compare=False)
    is_stand_in: bool = False

    def make(self):
        if self.is_stand_in:
            return self.stand_in
        return FakeCudaArray(self.shape, self.dtype, strides=self.strides, ptr=self.ptr,
                             device_type=self.device[0], device_id=self.device[1],
                             readonly=self.readonly)


# ---------------------------------------------------------------------------------------
# The model: which arguments of a call are at fault.

def _operand_ok(spec: ArraySpec) -> bool:
    s = spec.strides
    return (min(s) >= 0 and (spec.shape[2] <= 1 or s[2] == 1)
            and spec.ptr % 16 == 0 and s[0] % 16 == 0 and s[1] % 16 == 0)


def _out_ok(spec: ArraySpec, dims: Dims) -> bool:
    s0, s1, s2 = spec.strides
    span = (dims.m - 1) * s1 + dims.n  # elements covered by one group's rows
    return (not spec.readonly and min(spec.strides) >= 0 and s2 == 1 and s1 % 8 == 0
            and s0 % 8 == 0 and spec.ptr % 16 == 0
            and not (dims.groups > 1 and dims.m > 0 and s0 < span)
            and not (dims.m > 1 and s1 < dims.n))


def array_is_faulty(name: str, spec: ArraySpec, dims: Dims) -> bool:
    if spec.is_stand_in or spec.device[0] != dlpack.KDL_CUDA or min(spec.shape, default=0) < 0:
        return True
    if spec.dtype not in KEY[name] or spec.shape != dims.shape_of(name):
        return True
    if name in ("a", "b"):
        return not _operand_ok(spec)
    if name in ("a_scale", "b_scale"):
        return min(spec.strides) < 0 or spec.ptr % 4 != 0
    if name == "masked_m":
        return (dims.groups > 1 and spec.strides[0] != 1) or spec.ptr % 4 != 0
    return not _out_ok(spec, dims)


def dims_faults(dims: Dims) -> set[str]:
    found = set()
    if dims.k <= 0 or dims.k % 128 or dims.k > INT32_MAX:
        found |= {"a", "b"}
    if dims.n <= 0 or dims.n % 16 or dims.n > INT32_MAX:
        found.add("b")
    if not 0 <= dims.groups <= INT32_MAX or not 0 <= dims.m <= INT32_MAX:
        found.add("a")
    return found


def expected_m_is_valid(value, m: int) -> bool:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        return False
    return 0 <= int(value) <= m


def granularity_is_valid(value) -> bool:
    return any(value is v for v in VALID_GRANULARITIES)


def faults(call: dict, dims: Dims) -> set[str]:
    specs = {name: call[name] for name in ARRAYS if call.get(name) is not None}
    found = dims_faults(dims)
    found |= {name for name, spec in specs.items() if array_is_faulty(name, spec, dims)}
    device_ids = {spec.device[1] for spec in specs.values() if not spec.is_stand_in}
    if len(device_ids) > 1:
        found.add("device")
    if not expected_m_is_valid(call["expected_m"], dims.m):
        found.add("expected_m")
    if not granularity_is_valid(call["granularity"]):
        found.add("scale_granularity_mnk")
    if "out" not in specs and any(call["out_dtype"] is v for v in BAD_OUT_DTYPES):
        found.add("out_dtype")
    return found


def named_in(message: str) -> set[str]:
    """The arguments an error message names (its prefix, as every message starts)."""
    if message.startswith("all arrays must be on one CUDA device"):
        return {"device"}
    match = re.match(r"^([a-z_]+(?:, [a-z_]+)*): ", message)
    return set(match.group(1).split(", ")) if match else set()


# ---------------------------------------------------------------------------------------
# The generator: a valid call, then up to three aspects of it drawn from everything.

VALID_DIMS = dict(groups=[0, 1, 2, 3], m=[0, 1, 17, 64, 130], n=[16, 144, 256], k=[128, 384])
ANY_DIMS = dict(groups=[-1, INT32_MAX + 1], m=[-1, INT32_MAX, INT32_MAX + 1],
                n=[0, 8, 100, 2**31 - 16, 2**31], k=[0, 64, 200, 2**31 - 128, 2**31])
# NOTE: a's shape is the problem's (dims): a mismatch between a and b is b's fault.
ASPECTS = (["dims", "expected_m", "granularity", "out_dtype"]
           + [f"{name}.{what}" for name in ARRAYS
              for what in ("dtype", "rank", "shape", "strides", "ptr", "device", "stand_in")
              if (name, what) != ("a", "shape")]
           + ["out.readonly"])


@st.composite
def strides_for(draw, shape: tuple[int, ...]):
    """Compact, padded, transposed, broadcast (zero) or negated strides for ``shape``."""
    strides = list(dlpack.compact_strides(shape))
    kind = draw(st.sampled_from(["compact", "padded", "transposed", "zero", "negative"]))
    if not shape or kind == "compact":
        return tuple(strides)
    if kind == "padded":  # rows (and groups) padded by some elements
        step = 1
        for dim in reversed(range(len(shape))):
            strides[dim] = step
            step *= max(shape[dim], 1) + draw(st.sampled_from([0, 0, 1, 8, 16, 128]))
    elif kind == "transposed":  # the last two axes swapped in memory
        if len(shape) >= 2:
            strides[-1], strides[-2] = max(shape[-2], 1), 1
    else:
        dim = draw(st.integers(0, len(shape) - 1))
        strides[dim] = 0 if kind == "zero" else -max(strides[dim], 1)
    return tuple(strides)


@st.composite
def gemm_calls(draw):
    mutated = draw(st.sets(st.sampled_from(ASPECTS), max_size=3))
    dims = Dims(**{d: draw(st.sampled_from(values)) for d, values in VALID_DIMS.items()})
    if "dims" in mutated:
        which = draw(st.sampled_from(list(ANY_DIMS)))
        dims = replace(dims, **{which: draw(st.sampled_from(ANY_DIMS[which]))})
    call = {}
    for index, name in enumerate(ARRAYS):
        if name == "out" and not draw(st.booleans()):
            continue
        call[name] = draw(array_spec(name, dims, index, {a.split(".")[1] for a in mutated
                                                         if a.startswith(name + ".")}))
    top = max(dims.m, 0)
    call["expected_m"] = (draw(st.sampled_from(BAD_EXPECTED_M + [top + 1, 0, top]))
                          if "expected_m" in mutated else
                          draw(st.sampled_from([int, np.int64]))(draw(st.integers(0, top))))
    call["granularity"] = draw(st.sampled_from(
        VALID_GRANULARITIES + (BAD_GRANULARITIES if "granularity" in mutated else [])))
    call["out_dtype"] = draw(st.sampled_from(
        VALID_OUT_DTYPES + (BAD_OUT_DTYPES if "out_dtype" in mutated else [])))
    return call, dims


@st.composite
def array_spec(draw, name: str, dims: Dims, index: int, mutated: set[str]):
    shape = dims.shape_of(name)
    if "rank" in mutated:
        shape = draw(st.sampled_from([shape[1:], (*shape, 1), ()]))
    if "shape" in mutated and shape:
        # b's n is the problem's own (dims); its groups and k must match a's.
        dim = draw(st.sampled_from([0, len(shape) - 1] if name == "b"
                                   else range(len(shape))))
        shape = shape[:dim] + (shape[dim] + draw(st.sampled_from([-1, 1, 128])),) + shape[dim + 1:]
    spec = ArraySpec(
        dtype=draw(ANY_DTYPE) if "dtype" in mutated else draw(st.sampled_from(KEY[name])),
        shape=shape,
        strides=draw(strides_for(shape)) if "strides" in mutated
        else dlpack.compact_strides(shape),
        ptr=0x7F0000000000 + index * 2**32 + (
            draw(st.sampled_from([0, 1, 2, 4, 8, 16, 32])) if "ptr" in mutated else 0),
        device=draw(st.sampled_from(DEVICES)) if "device" in mutated else DEVICES[0],
        readonly=name == "out" and "readonly" in mutated and draw(st.booleans()))
    if "stand_in" in mutated and draw(st.booleans()):
        # NOTE: out=None is no out at all, not a stand-in.
        choices = NOT_ARRAYS[1:] if name == "out" else NOT_ARRAYS
        spec = replace(spec, stand_in=draw(st.sampled_from(choices)), is_stand_in=True)
    return spec


# ---------------------------------------------------------------------------------------
# The properties.

@pytest.fixture
def gpu_steps_stopped(monkeypatch):
    """The public function's first GPU steps raise ReachedGpu with what they were asked."""
    def allocate(framework, shape, dtype, device_id, stream):
        raise ReachedGpu(("allocate", tuple(shape), dtype))

    def device_info(device_id):
        raise ReachedGpu(("device_info", device_id))

    monkeypatch.setattr(api.frameworks, "allocate", allocate)
    monkeypatch.setattr(api, "device_info", device_info)
    monkeypatch.delenv("CUGROUPGEMM_CHECK_MASKED_M", raising=False)


@settings(max_examples=500, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(gemm_calls())
def test_every_call_passes_validation_or_names_a_faulty_argument(gpu_steps_stopped, drawn):
    call, dims = drawn
    expected_faults = faults(call, dims)
    event("valid" if not expected_faults else f"{len(expected_faults)} fault(s)")
    arrays = {name: call[name].make() for name in ARRAYS if name in call}
    try:
        result = cugroupgemm.batch_deepgemm_fp8_nt_groupwise(
            **arrays, expected_m=call["expected_m"], scale_granularity_mnk=call["granularity"],
            out_dtype=call["out_dtype"], stream=0, check_masked_m=False)
    except (ArgumentTypeError, ArgumentValueError) as exc:
        named = named_in(str(exc))
        assert expected_faults, f"a valid call was refused: {exc}"
        assert named & expected_faults, (f"the error names {named or 'nothing'}, the faults "
                                         f"are {sorted(expected_faults)}: {exc}")
        return
    except ReachedGpu as reached:
        assert not expected_faults, f"faults {sorted(expected_faults)} reached the GPU"
        step = reached.args[0]
        if step[0] == "allocate":  # the output the GPU would be asked for
            kind = out_kind_from_user(call["out_dtype"])
            assert step[1:] == ((dims.groups, dims.m, dims.n), kind.dtype)
        return
    # Only an empty problem with a given out returns without touching the GPU.
    assert not expected_faults, f"faults {sorted(expected_faults)} passed unnoticed"
    assert result is arrays["out"] and 0 in (dims.groups, dims.m)


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(st.integers(), st.floats(), st.booleans(), st.none(), st.text(max_size=4),
                       st.fractions(), st.decimals(allow_nan=True), st.complex_numbers(),
                       st.integers(-(2**63), 2**63 - 1).map(np.int64),
                       st.integers(0, 255).map(np.uint8), st.booleans().map(np.bool_)),
       m=st.integers(0, 300))
def test_expected_m_is_an_int_in_0_to_m_or_a_named_error(value, m):
    valid = expected_m_is_valid(value, m)
    try:
        assert validate.check_expected_m(value, m) == int(value) and valid
    except (ArgumentTypeError, ArgumentValueError) as exc:
        assert not valid and str(exc).startswith("expected_m: "), exc


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(
    st.lists(st.one_of(st.integers(-1, 300), st.floats(), st.text(max_size=2)), max_size=4),
    st.tuples(st.sampled_from([1, 128]), st.sampled_from([64, 128]), st.sampled_from([128, 1])),
    st.text(max_size=4), st.integers(), st.none(), st.binary(max_size=4)))
def test_granularity_is_1_128_128_or_a_named_error(value):
    try:
        validate.check_granularity(value)
        assert tuple(value) == (1, 128, 128)
    except (ArgumentTypeError, ArgumentValueError) as exc:
        assert str(exc).startswith("scale_granularity_mnk: "), exc
        assert not (isinstance(value, (list, tuple)) and list(value) == [1, 128, 128]
                    and all(isinstance(v, int) for v in value))


@settings(max_examples=300, deadline=None)
@given(value=st.one_of(st.text(max_size=12), st.sampled_from(["torch.float32", "<class "
       "'numpy.float16'>", "BFloat16", "jax.numpy.bfloat16"]), st.integers(), st.floats(),
       st.none(), st.builds(object), st.binary(max_size=4)))
def test_out_dtype_is_an_output_kind_or_a_named_type_error(value):
    try:
        assert isinstance(out_kind_from_user(value), OutKind)
    except ArgumentTypeError as exc:
        assert str(exc).startswith("out_dtype: "), exc


# ---------------------------------------------------------------------------------------
# The model's edges, spelled out (each was a gap in validation when this file was written).

def test_groups_of_out_may_not_overlap_even_with_one_row_per_group(gpu_steps_stopped):
    out = FakeCudaArray((2, 1, 256), dtypes.BFLOAT16, strides=(8, 8, 1), ptr=0x7F1000000000)
    with pytest.raises(ArgumentValueError, match=r"^out: groups overlap: group stride 8 is "
                                                 r"less than \(m - 1\) \* row stride \+ n = 256"):
        cugroupgemm.batch_deepgemm_fp8_nt_groupwise(**fake_gemm_args(m=1, expected_m=1),
                                                    out=out, stream=0)


def test_misaligned_masked_m_is_refused(gpu_steps_stopped):
    masked_m = FakeCudaArray((2,), dtypes.INT32, ptr=0x7F1000000002)
    with pytest.raises(ArgumentValueError, match=r"^masked_m: expected a 4-byte aligned start, "
                                                 r"got 0x7f1000000002"):
        cugroupgemm.batch_deepgemm_fp8_nt_groupwise(**fake_gemm_args(masked_m=masked_m),
                                                    stream=0)


@pytest.mark.parametrize("dims, message", [
    (dict(n=2**31), r"^b: expected n \(b.shape\[1\]\) at most 2\^31 - 1 .* got 2147483648"),
    (dict(k=2**31), r"^a, b: expected k at most 2\^31 - 1 .* got 2147483648"),
    (dict(m=2**31), r"^a: expected m \(a.shape\[1\]\) at most 2\^31 - 1 .* got 2147483648"),
])
def test_extents_past_int32_are_refused_not_wrapped(gpu_steps_stopped, dims, message):
    """Zero strides make such arrays cheap to produce; the kernels hold extents in int32."""
    base = dict(groups=1, m=1, n=128, k=128) | dims
    g, m, n, k = base["groups"], base["m"], base["n"], base["k"]
    args = fake_gemm_args(**base, expected_m=0)
    args["a"] = FakeCudaArray((g, m, k), strides=(0, 0, 1))
    args["b"] = FakeCudaArray((g, n, k), strides=(0, 0, 1))
    with pytest.raises(ArgumentValueError, match=message):
        cugroupgemm.batch_deepgemm_fp8_nt_groupwise(**args, stream=0)


def test_negative_extents_from_a_broken_producer_are_refused(gpu_steps_stopped):
    bad = FakeCudaArray((-1,), dtypes.INT32)
    with pytest.raises(ArgumentValueError, match=r"^masked_m: expected non-negative extents, "
                                                 r"got shape \(-1,\)"):
        cugroupgemm.batch_deepgemm_fp8_nt_groupwise(**fake_gemm_args(masked_m=bad), stream=0)
