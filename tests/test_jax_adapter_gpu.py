"""The JAX adapter on a GPU: the GEMM inside jax.jit against the eager call and the float64
reference, repeated calls, out aliasing, vmap, grad, and XLA command buffers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    assert_close_to_reference,
    make_gemm_inputs,
    reference_gpu,
    to_cupy_float64,
)

import cugroupgemm

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
from cugroupgemm import jax_ops  # noqa: E402
from cugroupgemm.bench_adapters import jax_gemm_inputs  # noqa: E402

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(jax.default_backend() != "gpu", reason="JAX has no GPU here")]

POISON = -7.0
COMMAND_BUFFER_RUN = Path(__file__).with_name("jax_command_buffer_run.py")


def jitted_gemm(expected_m, **static):
    return jax.jit(lambda x: jax_ops.batch_deepgemm_fp8_nt_groupwise(
        **x, expected_m=expected_m, **static))


@pytest.mark.parametrize("groups, m, n, k, masked", [
    (2, 100, 256, 512, [37, 100]),
    (4, 257, 384, 384, [256, 1, 129, 0]),
])
def test_jitted_gemm_matches_eager_and_reference(groups, m, n, k, masked):
    inputs = make_gemm_inputs(groups, m, n, k, masked, seed=m)
    arrays = jax_gemm_inputs(inputs)
    got = jitted_gemm(64, out_dtype=jnp.float32)(arrays)
    eager = cugroupgemm.batch_deepgemm_fp8_nt_groupwise(**arrays, expected_m=64,
                                                        out_dtype=jnp.float32)
    got, eager = np.asarray(got), np.asarray(eager)
    for g, rows in enumerate(masked):
        np.testing.assert_array_equal(got[g, :rows], eager[g, :rows])
        assert not got[g, rows:].any(), f"group {g}: rows past {rows} are not zero"
    assert_close_to_reference(to_cupy_float64(jnp.asarray(got)), reference_gpu(**inputs),
                              inputs["masked_m"])


@pytest.mark.parametrize("power_of_two", [True, False])
def test_jnp_quantizers_equal_the_cuda_ones(power_of_two):
    x = jax.random.normal(jax.random.key(0), (4, 200, 512), jnp.float32)
    x = x * jnp.exp2(jax.random.randint(jax.random.key(1), (4, 200, 1), -8, 8))
    for kind in ("per_token_cast_to_fp8", "per_block_cast_to_fp8"):
        q, s = jax.jit(lambda v: getattr(jax_ops, kind)(v, power_of_two_scale=power_of_two))(x)
        want_q, want_s = getattr(cugroupgemm, kind)(x, power_of_two_scale=power_of_two)
        np.testing.assert_array_equal(np.asarray(jax.lax.bitcast_convert_type(q, jnp.uint8)),
                                      np.asarray(jax.lax.bitcast_convert_type(want_q, jnp.uint8)))
        np.testing.assert_array_equal(np.asarray(s), np.asarray(want_s))


@pytest.mark.parametrize("power_of_two", [True, False])
def test_jitted_moe_projection_equals_eager(power_of_two):
    """Quantise, GEMM and an activation in one jit, against the same steps run eagerly
    (the CUDA quantizers and the eager GEMM)."""
    groups, m, n, k, masked = 4, 96, 512, 1024, [96, 0, 33, 70]
    keys = jax.random.split(jax.random.key(2), 2)
    x = jax.random.normal(keys[0], (groups, m, k), jnp.bfloat16)
    w = jax.random.normal(keys[1], (groups, n, k), jnp.float32)
    masked_m = jnp.asarray(masked, jnp.int32)

    @jax.jit
    def project(x, w, masked_m):
        a, a_scale = jax_ops.per_token_cast_to_fp8(x, power_of_two_scale=power_of_two)
        b, b_scale = jax_ops.per_block_cast_to_fp8(w, power_of_two_scale=power_of_two)
        y = jax_ops.batch_deepgemm_fp8_nt_groupwise(a, b, a_scale, b_scale, masked_m, 48)
        return jax.nn.silu(y.astype(jnp.float32))

    a, a_scale = cugroupgemm.per_token_cast_to_fp8(x, power_of_two_scale=power_of_two)
    b, b_scale = cugroupgemm.per_block_cast_to_fp8(w, power_of_two_scale=power_of_two)
    y = cugroupgemm.batch_deepgemm_fp8_nt_groupwise(a, b, a_scale, b_scale, masked_m, 48)
    eager = np.asarray(jax.nn.silu(y.astype(jnp.float32)))
    got = np.asarray(project(x, w, masked_m))
    for g, rows in enumerate(masked):
        np.testing.assert_array_equal(got[g, :rows], eager[g, :rows])
        assert not got[g, rows:].any()


def test_repeated_jitted_calls_with_new_data_and_new_masked_m():
    run = jitted_gemm(40, out_dtype=jnp.float32)
    rng = np.random.default_rng(3)
    for step in range(6):
        masked = rng.integers(0, 81, size=3)
        inputs = make_gemm_inputs(3, 80, 256, 512, masked, seed=100 + step)
        out = run(jax_gemm_inputs(inputs))
        assert_close_to_reference(to_cupy_float64(out), reference_gpu(**inputs),
                                  inputs["masked_m"])
        for g, rows in enumerate(masked):
            assert not np.asarray(out[g, rows:]).any()


@pytest.mark.parametrize("donate", [False, True])
def test_out_is_aliased_and_keeps_rows_past_the_mask(donate):
    masked = [0, 5, 64, 17]
    inputs = make_gemm_inputs(4, 64, 128, 256, masked, seed=4)
    arrays = jax_gemm_inputs(inputs)
    run = jax.jit(lambda x, out: jax_ops.batch_deepgemm_fp8_nt_groupwise(
        **x, expected_m=16, out=out), donate_argnums=(1,) if donate else ())
    out = jnp.full((4, 64, 128), POISON, jnp.bfloat16)
    result = run(arrays, out)
    assert result.dtype == jnp.bfloat16
    values = np.asarray(result.astype(jnp.float32))
    for g, rows in enumerate(masked):
        assert (values[g, rows:] == POISON).all(), f"group {g}: rows past {rows} written"
    assert_close_to_reference(to_cupy_float64(result), reference_gpu(**inputs),
                              inputs["masked_m"])
    if not donate:
        assert (np.asarray(out.astype(jnp.float32)) == POISON).all()


def test_vmap_runs_a_batch_of_problems():
    batch = [make_gemm_inputs(2, 48, 256, 256, masked, seed=20 + i)
             for i, masked in enumerate([[48, 3], [0, 20], [31, 48]])]
    arrays = [jax_gemm_inputs(inputs) for inputs in batch]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *arrays)
    run = jax.jit(jax.vmap(lambda x: jax_ops.batch_deepgemm_fp8_nt_groupwise(
        **x, expected_m=32, out_dtype=jnp.float32)))
    out = run(stacked)
    assert out.shape == (3, 2, 48, 256)
    for i, inputs in enumerate(batch):
        assert_close_to_reference(to_cupy_float64(out[i]), reference_gpu(**inputs),
                                  inputs["masked_m"])


def test_grad_is_a_clear_error():
    arrays = jax_gemm_inputs(make_gemm_inputs(1, 16, 128, 128, [8], seed=5))

    def loss(a_scale):
        y = jax_ops.batch_deepgemm_fp8_nt_groupwise(**{**arrays, "a_scale": a_scale},
                                                    expected_m=8)
        return y.astype(jnp.float32).sum()

    with pytest.raises(jax_ops.NoDerivativeError, match="has no derivative rule"):
        jax.grad(loss)(arrays["a_scale"])


@pytest.mark.parametrize("command_buffer_compatible", [True, False])
def test_command_buffers_replay_with_new_data_and_new_masked_m(command_buffer_compatible):
    """XLA records the launch into a CUDA graph (forced here for a small program) in a
    fresh process, so the first launch also loads the kernel while XLA is capturing."""
    root = str(COMMAND_BUFFER_RUN.parents[1])  # this checkout's cugroupgemm, not another
    env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "")
               + " --xla_gpu_graph_min_graph_size=1"
               " --xla_gpu_enable_command_buffer=FUSION,CUSTOM_CALL",
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, str(COMMAND_BUFFER_RUN),
                           str(command_buffer_compatible)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"command_buffer_compatible={command_buffer_compatible}: {report}")
    assert report["mismatched_steps"] == [], report
    if not command_buffer_compatible:
        assert report["callbacks"] == report["executions"]
