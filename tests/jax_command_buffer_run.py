"""Run by tests/test_jax_adapter_gpu.py in a fresh process, with XLA_FLAGS that force XLA
command buffers (CUDA graphs) around the custom call.

A jitted MoE-style projection (quantise, GEMM, SiLU) runs for several steps with new
activations and new masked_m; each step is compared with the same steps run eagerly.
The GEMM's operands are XLA temporaries, so XLA may replay its recorded launch instead
of calling the Python callback again. Prints one JSON line: executions, callbacks (how
often the Python callback ran) and the steps whose valid rows differ from the eager ones
or whose rows past the mask are not zero.

Usage: python tests/jax_command_buffer_run.py True|False   (command_buffer_compatible)
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

import cugroupgemm
from cugroupgemm import jax_ops

GROUPS, M, N, K, EXPECTED_M, STEPS = 4, 64, 256, 512, 32, 8


def main(command_buffer_compatible: bool):
    callbacks = []
    launch = jax_ops._launch

    def counting_launch(ctx, views, problem):
        callbacks.append(problem)
        launch(ctx, views, problem)

    jax_ops._launch = counting_launch
    w = jax.random.normal(jax.random.key(0), (GROUPS, N, K), jnp.float32)
    b, b_scale = cugroupgemm.per_block_cast_to_fp8(w)

    @jax.jit
    def project(x, masked_m):
        a, a_scale = jax_ops.per_token_cast_to_fp8(x)
        clamped = jnp.clip(masked_m, 0, M)  # a temporary, as the GEMM's other operands
        y = jax_ops.batch_deepgemm_fp8_nt_groupwise(
            a, b, a_scale, b_scale, clamped, EXPECTED_M, out_dtype=jnp.float32,
            command_buffer_compatible=command_buffer_compatible)
        return jax.nn.silu(y)

    rng = np.random.default_rng(1)
    mismatched = []
    for step in range(STEPS):
        x = jax.random.normal(jax.random.key(step + 1), (GROUPS, M, K), jnp.float32)
        masked = rng.integers(0, M + 1, size=GROUPS)
        masked_m = jnp.asarray(masked, jnp.int32)
        got = np.asarray(project(x, masked_m))
        a, a_scale = cugroupgemm.per_token_cast_to_fp8(x)
        y = cugroupgemm.batch_deepgemm_fp8_nt_groupwise(a, b, a_scale, b_scale, masked_m,
                                                        EXPECTED_M, out_dtype=jnp.float32)
        want = np.asarray(jax.nn.silu(y))
        if any(not np.array_equal(got[g, :rows], want[g, :rows]) or got[g, rows:].any()
               for g, rows in enumerate(masked)):
            mismatched.append(step)
    print(json.dumps({"executions": STEPS, "callbacks": len(callbacks),
                      "mismatched_steps": mismatched}))


if __name__ == "__main__":
    main(sys.argv[1] == "True")
