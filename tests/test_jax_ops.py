"""The JAX adapter without a GPU: trace-time checks, the jnp quantizers, and the custom
call's plumbing (aliasing, zero fill, vmap, repeated calls) on XLA's CPU backend, with
the CUDA launch replaced by the NumPy reference."""

import ctypes
import re

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

from cugroupgemm import jax_ops, reference, validate  # noqa: E402
from cugroupgemm.errors import ArgumentTypeError, ArgumentValueError  # noqa: E402

S = jax.ShapeDtypeStruct


def abstract_args(groups=2, m=64, n=256, k=512):
    return dict(a=S((groups, m, k), jnp.float8_e4m3fn), b=S((groups, n, k), jnp.float8_e4m3fn),
                a_scale=S((groups, m, k // 128), jnp.float32),
                b_scale=S((groups, -(-n // 128), k // 128), jnp.float32),
                masked_m=S((groups,), jnp.int32))


def gemm(**kwargs):
    return jax_ops.batch_deepgemm_fp8_nt_groupwise(**kwargs)


def test_output_shape_and_dtype_at_trace_time():
    args = abstract_args()
    assert jax.eval_shape(lambda **kw: gemm(**kw, expected_m=16), **args) == \
        S((2, 64, 256), jnp.bfloat16)
    assert jax.eval_shape(lambda **kw: gemm(**kw, expected_m=16, out_dtype=jnp.float32),
                          **args).dtype == jnp.float32
    out = S((2, 64, 256), jnp.float16)
    assert jax.eval_shape(lambda out, **kw: gemm(**kw, expected_m=16, out=out), out,
                          **args).dtype == jnp.float16


@pytest.mark.parametrize("override, error, message", [
    ({"b": S((2, 256, 640), jnp.float8_e4m3fn)}, ArgumentValueError,
     r"^b: expected shape \(groups=2, n, k=512\) to match a \(2, 64, 512\), got \(2, 256, 640\)"),
    ({"masked_m": S((2,), jnp.float32)}, ArgumentTypeError,
     r"^masked_m: expected dtype int32, got float32"),
    ({"a": S((2, 64, 512), jnp.bfloat16)}, ArgumentTypeError,
     r"^a: expected dtype float8_e4m3fn or uint8, got bfloat16"),
    ({"a_scale": S((2, 64, 3), jnp.float32)}, ArgumentValueError,
     r"^a_scale: expected shape \(2, 64, 4\) \(groups, m, k/128\), got \(2, 64, 3\)"),
    ({"out": S((2, 64, 256), jnp.int32)}, ArgumentTypeError,
     r"^out: expected dtype bfloat16, float16 or float32, got int32"),
])
def test_trace_time_errors_are_the_eager_ones(override, error, message):
    args = {**abstract_args(), **override}
    with pytest.raises(error, match=message):
        jax.eval_shape(lambda **kw: gemm(**kw, expected_m=16), **args)


def test_expected_m_must_be_static():
    args = abstract_args()
    with pytest.raises(ArgumentTypeError, match=r"^expected_m: expected an int"):
        jax.eval_shape(lambda e, **kw: gemm(**kw, expected_m=e), S((), jnp.int32), **args)


def test_non_array_argument_is_named():
    args = {**abstract_args(), "b_scale": [1.0]}
    with pytest.raises(ArgumentTypeError, match=r"^b_scale: expected a JAX array, got \[1.0\]"):
        gemm(**args, expected_m=4)


def test_grad_is_a_clear_error():
    args = abstract_args()

    def loss(a_scale):
        return gemm(**{**args, "a_scale": a_scale}, expected_m=16).astype(jnp.float32).sum()

    with pytest.raises(jax_ops.NoDerivativeError, match=r"has no derivative rule"):
        jax.eval_shape(jax.grad(loss), args["a_scale"])


def test_lowers_to_one_custom_call_with_out_aliased():
    text = jax.jit(lambda **kw: gemm(**kw, expected_m=16)).lower(**abstract_args()).as_text()
    assert text.count("stablehlo.custom_call") == 1
    assert "output_operand_aliases" in text and "operand_index = 5" in text


# --- quantizers -------------------------------------------------------------------------

def awkward_input(shape, seed=0):
    """Normal data over 40 binades per row, plus NaN, Inf, zeros, tiny values, a NaN
    block and an amax of exactly 448 * 2^-5 (a power-of-two scale boundary)."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * np.exp2(rng.integers(-20, 20, size=(*shape[:-1], 1))))
    x = x.astype(np.float32)
    x[0, 0, :5] = [np.nan, -np.nan, np.inf, -np.inf, 0.0]
    x[0, 1, :3] = [-0.0, 1e-30, -1e-30]
    x[1, 2, :128] = np.nan
    x[1, 3, :128] = 0
    x[1, 3, 7] = 14.0
    return x


def codes(q):
    return np.asarray(jax.lax.bitcast_convert_type(q, jnp.uint8))


@pytest.mark.parametrize("power_of_two", [True, False])
@pytest.mark.parametrize("kind", ["per_token_cast_to_fp8", "per_block_cast_to_fp8"])
def test_quantizers_match_the_reference_bit_for_bit(kind, power_of_two):
    x = awkward_input((3, 260, 1024))
    q, scale = jax.jit(lambda v: getattr(jax_ops, kind)(v, power_of_two_scale=power_of_two))(x)
    want_q, want_scale = getattr(reference, kind)(x, power_of_two)
    assert q.dtype == jnp.float8_e4m3fn and scale.dtype == jnp.float32
    np.testing.assert_array_equal(codes(q), want_q)
    np.testing.assert_array_equal(np.asarray(scale), want_scale)


@pytest.mark.parametrize("kind", ["per_token_cast_to_fp8", "per_block_cast_to_fp8"])
def test_quantizers_divide_in_float64(kind):
    """XLA's GPU backend divides float32 with div.full (up to 2 ulp off): a quantizer that
    divided in float32 would pass on the CPU and differ from the CUDA one on a GPU."""
    x = jnp.ones((2, 128, 256), jnp.float32)
    text = jax.jit(lambda v: getattr(jax_ops, kind)(v, power_of_two_scale=False)).lower(x)
    divisions = re.findall(r"stablehlo.divide .*", text.as_text())
    assert len(divisions) == 2, divisions  # the scale, then the codes
    assert all(line.rstrip().endswith("xf64>") for line in divisions), divisions


def test_per_block_edge_blocks_and_bf16_input():
    x = jnp.asarray(np.random.default_rng(1).standard_normal((200, 300)), jnp.bfloat16)
    q, scale = jax_ops.per_block_cast_to_fp8(x)
    want_q, want_scale = reference.per_block_cast_to_fp8(np.asarray(x.astype(jnp.float32)))
    assert q.shape == (200, 300) and scale.shape == (2, 3)
    np.testing.assert_array_equal(codes(q), want_q)
    np.testing.assert_array_equal(np.asarray(scale), want_scale)


def test_quantizer_errors():
    with pytest.raises(ArgumentValueError, match=r"^x: per-token quantisation needs the last "
                                                 r"dimension to be a multiple of 128, got 100"):
        jax_ops.per_token_cast_to_fp8(jnp.zeros((4, 100)))
    with pytest.raises(ArgumentTypeError, match=r"^x: expected dtype float32, bfloat16 or "
                                                r"float16, got int32"):
        jax_ops.per_block_cast_to_fp8(jnp.zeros((4, 128), jnp.int32))
    with pytest.raises(ArgumentValueError, match=r"^x: expected at least 2 dimensions"):
        jax_ops.per_block_cast_to_fp8(jnp.zeros((128,)))


# --- the custom call on XLA's CPU backend ---------------------------------------------------

_NUMPY_DTYPES = {"float8_e4m3fn": np.uint8, "uint8": np.uint8, "float32": np.float32,
                 "int32": np.int32}


def host_array(view):
    """A NumPy array over a CPU view's memory (e4m3 as codes)."""
    dtype = np.dtype(_NUMPY_DTYPES[view.dtype.name])
    memory = (ctypes.c_byte * (view.numel * dtype.itemsize)).from_address(view.ptr)
    return np.frombuffer(memory, dtype).reshape(view.shape)


@pytest.fixture
def cpu_launch(monkeypatch):
    """Run the callback on CPU buffers: they pass as device arrays, and the NumPy
    reference writes the valid rows where the kernel would. Counts the launches.
    JAX is pinned to its CPU backend, also where it has a GPU (the fake reads host
    memory)."""
    launches = []

    def launch(ctx, views, problem):
        out = views["out"]
        assert out.dtype.name == "float32", "the fake writes float32 outputs only"
        memory = (ctypes.c_float * out.numel).from_address(out.ptr)
        target = np.frombuffer(memory, np.float32).reshape(out.shape)
        inputs = {name: host_array(views[name]) for name in
                  ("a", "b", "a_scale", "b_scale", "masked_m")}
        result = reference.masked_gemm(inputs["a"], inputs["b"], inputs["a_scale"],
                                       inputs["b_scale"], inputs["masked_m"])
        for g, rows in enumerate(np.clip(inputs["masked_m"], 0, problem.m)):
            target[g, :rows] = result[g, :rows]
        launches.append(problem)

    monkeypatch.setattr(validate, "check_device_array", lambda view, argument: None)
    monkeypatch.setattr(jax_ops, "_launch", launch)
    with jax.default_device(jax.devices("cpu")[0]):
        yield launches


def make_inputs(groups, m, n, k, masked, seed):
    rng = np.random.default_rng(seed)
    a, a_scale = jax_ops.per_token_cast_to_fp8(rng.standard_normal((groups, m, k), np.float32))
    b, b_scale = jax_ops.per_block_cast_to_fp8(rng.standard_normal((groups, n, k), np.float32))
    return dict(a=a, b=b, a_scale=a_scale, b_scale=b_scale,
                masked_m=jnp.asarray(masked, jnp.int32))


def expected(inputs):
    host = {name: codes(x) if x.dtype == jnp.float8_e4m3fn else np.asarray(x)
            for name, x in inputs.items()}
    return reference.masked_gemm(**{"a_bits": host["a"], "b_bits": host["b"],
                                    "a_scale": host["a_scale"], "b_scale": host["b_scale"],
                                    "masked_m": host["masked_m"]})


def test_jitted_calls_with_new_data_and_new_masked_m(cpu_launch):
    run = jax.jit(lambda x: gemm(**x, expected_m=8, out_dtype=jnp.float32))
    for seed, masked in enumerate([[3, 16], [16, 0], [1, 9]]):
        inputs = make_inputs(2, 16, 128, 256, masked, seed)
        out = np.asarray(run(inputs))
        np.testing.assert_allclose(out, expected(inputs), rtol=1e-5, atol=1e-5)
        for g, rows in enumerate(masked):
            assert not out[g, rows:].any(), "rows past the mask are not zero"
    assert len(cpu_launch) == 3


def test_out_is_aliased_and_keeps_rows_past_the_mask(cpu_launch):
    inputs = make_inputs(2, 16, 128, 256, [5, 12], seed=7)
    out = jnp.full((2, 16, 128), 7.0, jnp.float32)
    result = np.asarray(jax.jit(lambda x, o: gemm(**x, expected_m=8, out=o))(inputs, out))
    want = expected(inputs)
    np.testing.assert_allclose(result[0, :5], want[0, :5], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result[1, :12], want[1, :12], rtol=1e-5, atol=1e-5)
    assert (result[0, 5:] == 7).all() and (result[1, 12:] == 7).all()
    assert (np.asarray(out) == 7).all(), "the caller's out changed without being donated"


def test_vmap_folds_the_batch_into_groups_in_one_launch(cpu_launch):
    batches = [make_inputs(2, 16, 128, 256, masked, seed)
               for seed, masked in enumerate([[3, 16], [0, 7], [16, 1]])]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *batches)
    shared_b = {"b": batches[0]["b"], "b_scale": batches[0]["b_scale"]}
    run = jax.vmap(lambda x, w: gemm(**x, **w, expected_m=8, out_dtype=jnp.float32),
                   in_axes=({"a": 0, "a_scale": 0, "masked_m": 0}, None))
    per_token = {name: stacked[name] for name in ("a", "a_scale", "masked_m")}
    out = np.asarray(jax.jit(run)(per_token, shared_b))
    assert out.shape == (3, 2, 16, 128)
    for i, inputs in enumerate(batches):
        np.testing.assert_allclose(out[i], expected({**inputs, **shared_b}), rtol=1e-5,
                                   atol=1e-5)
    assert len(cpu_launch) == 1 and cpu_launch[0].num_groups == 6
