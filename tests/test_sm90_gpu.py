"""The sm90 family forced on a Hopper GPU, against the float64 reference."""

import numpy as np
import pytest
from conftest import (
    assert_close_to_reference,
    capture_torch_graph,
    make_gemm_inputs,
    reference_gpu,
    refill_torch_inputs,
    to_cupy_float64,
)

from cugroupgemm import batch_deepgemm_fp8_nt_groupwise as gemm
from cugroupgemm.bench_peers import torch_gemm_inputs
from cugroupgemm.device import device_info
from cugroupgemm.families import sm90
from cugroupgemm.testing import sm90_config

pytestmark = pytest.mark.gpu

POISON_BITS = 0x7E57  # a finite bf16/f16 pattern no result row should hold by chance


@pytest.fixture(autouse=True)
def force_sm90(monkeypatch):
    if not sm90.runs_on(device_info(0)):
        pytest.skip("the sm90 family needs a compute capability 9.0 GPU")
    monkeypatch.setenv("CUGROUPGEMM_KERNEL", "sm90")


def force_config(block_m, block_n, promote_k=sm90.DEFAULT_PROMOTE_K, **options):
    """A context in which the sm90 family plans this tile shape (``options``: pipes,
    cluster, turns, split_tail, dynamic; stages from the device, out kind from the
    call)."""
    return sm90_config(sm90.fitted_config(block_m, block_n, device_info(0),
                                          promote_k=promote_k, **options))


def check_f32(inputs, expected_m):
    import cupy as cp

    out = gemm(**inputs, expected_m=expected_m, out_dtype="float32")
    cp.cuda.runtime.deviceSynchronize()
    assert_close_to_reference(out.astype(cp.float64), reference_gpu(**inputs), inputs["masked_m"])
    return out


SHAPES = [  # groups, m, n, k, masked_m, expected_m
    (1, 1, 128, 128, [1], 1),  # the smallest problem
    (2, 100, 256, 512, [37, 100], 69),  # m not a multiple of 64, one full group
    (3, 64, 144, 256, [0, 64, 17], 27),  # empty group, n % 128 != 0 (one 16-column tail)
    (4, 257, 400, 384, [256, 1, 129, 257], 161),  # rows at tile edges, n % 128 = 16
    (4, 257, 400, 384, [256, 1, 129, 257], 8),  # the same with 64-row tiles
    (2, 1000, 512, 2048, [999, 513], 757),  # 16 k blocks > stages: the ring wraps
    (5, 8, 128, 1664, [3, 8, 0, 5, 7], 5),  # 13 k blocks > 9 decode stages
    (8, 512, 4096, 256, [512, 500, 447, 511, 384, 129, 64, 1], 320),  # more tiles than SMs
    (40, 64, 1024, 256, list(range(24, 64)), 44),  # decode: 320 tiles over the SMs
]


@pytest.mark.parametrize("groups, m, n, k, masked, expected_m", SHAPES)
def test_matches_the_reference(groups, m, n, k, masked, expected_m):
    inputs = make_gemm_inputs(groups, m, n, k, masked, seed=groups * 7 + m + n)
    check_f32(inputs, expected_m)


@pytest.mark.parametrize("cluster, turns, split_tail, dynamic", [
    (1, False, False, False), (1, False, True, False), (2, False, False, False),
    (1, True, False, False), (1, True, True, False), (2, True, False, False),
    (1, False, False, True), (1, False, True, True)])
@pytest.mark.parametrize("groups, m, n, k, masked, expected_m", SHAPES)
def test_rounds_pairs_and_turns_match_the_reference(cluster, turns, split_tail, dynamic, groups,
                                                    m, n, k, masked, expected_m):
    """The default tile in whole tiles only, with its last round split into half tiles, in
    clusters of two (b multicast), with its pipelines taking turns (in whole tiles, and
    through a split last round), and with tiles claimed
    at run time, on the same grid: rings that wrap, more tiles than SMs, groups whose rows
    fill only one CTA of a pair, CTAs whose first pipeline has one tile more (or the only
    one), problems made only of half tiles, last rounds of 24 and 56 tiles split in two."""
    inputs = make_gemm_inputs(groups, m, n, k, masked, seed=groups * 7 + m + n + 1)
    with force_config(64, 128, pipes=2, cluster=cluster, turns=turns, split_tail=split_tail,
                      dynamic=dynamic):
        check_f32(inputs, expected_m)


TILE_CONFIGS = [  # block_m, block_n, promote_k, pipes, cluster, split_tail, dynamic
    (64, 128, 64, 1, 1, False, False), (64, 128, 128, 1, 1, False, False),
    (128, 128, 64, 1, 1, False, False), (128, 128, 128, 1, 1, False, False),
    (192, 64, 64, 1, 1, False, False), (192, 64, 128, 1, 1, False, False),
    (64, 128, 64, 2, 1, False, False), (64, 64, 128, 2, 1, False, False),
    (64, 128, 128, 2, 1, False, False),
    # Pairs of CTAs sharing b (multicast): correct on the H200, not faster (log item 26).
    (64, 128, 64, 2, 2, False, False), (64, 128, 64, 1, 2, False, False),
    (64, 64, 128, 2, 2, False, False), (128, 128, 64, 1, 2, False, False),
    # These small problems are one round: split in halves where they fill at most half of
    # it (most with two pipelines), whole tiles otherwise.
    (64, 128, 64, 2, 1, True, False), (128, 128, 64, 1, 1, True, False),
    (64, 128, 128, 1, 1, True, False),
    # Tiles claimed at run time (one round here: the tickets and their ring's end marker).
    (64, 128, 64, 2, 1, False, True), (64, 128, 64, 2, 1, True, True),
    (128, 128, 64, 1, 1, True, True), (192, 64, 64, 1, 1, False, True),
]


@pytest.mark.parametrize("block_m, block_n, promote_k, pipes, cluster, split_tail, dynamic",
                         TILE_CONFIGS)
@pytest.mark.parametrize("groups, m, n, k, masked", [
    (3, 200, 400, 1280, [200, 0, 65]),  # partial n tiles of 64 and 128, 10 k blocks
    (2, 130, 272, 640, [130, 64]),  # a tile mostly past n
    (6, 129, 1152, 256, [129, 128, 127, 63, 1, 65]),
    (3, 300, 208, 384, [300, 257, 191]),  # rows at the 192-row tile edges
    (2, 64, 256, 256, [0, 0]),  # no valid row: no tile at all
])
def test_every_tile_shape(block_m, block_n, promote_k, pipes, cluster, split_tail, dynamic,
                          groups, m, n, k, masked):
    inputs = make_gemm_inputs(groups, m, n, k, masked, seed=block_m + block_n + n)
    with force_config(block_m, block_n, promote_k, pipes=pipes, cluster=cluster,
                      split_tail=split_tail, dynamic=dynamic):
        check_f32(inputs, 64)


@pytest.mark.parametrize("block_m, block_n, pipes, cluster, split_tail", [
    (64, 128, 1, 1, False), (128, 128, 1, 1, False), (192, 64, 1, 1, False),
    (64, 128, 2, 1, False), (64, 128, 2, 2, False), (64, 128, 2, 1, True)])
@pytest.mark.parametrize("dtype_name", ["bfloat16", "float16", "float32"])
def test_out_dtypes_and_poisoned_rows_past_the_mask_stay_untouched(dtype_name, block_m,
                                                                    block_n, pipes, cluster,
                                                                    split_tail):
    import torch

    dtype = getattr(torch, dtype_name)
    masked = [0, 1, 63, 64, 65, 127, 128, 130]
    inputs = make_gemm_inputs(8, 130, 272, 384, masked, seed=3)
    out = torch.empty((8, 130, 272), dtype=dtype, device="cuda")
    bits = out.view(torch.int16 if out.element_size() == 2 else torch.int32)
    bits.fill_(POISON_BITS)
    with force_config(block_m, block_n, pipes=pipes, cluster=cluster,  # out kind: out's
                      split_tail=split_tail):
        result = gemm(**torch_gemm_inputs(inputs), expected_m=70, out=out)  # dtype
    assert result is out
    torch.cuda.synchronize()
    assert_close_to_reference(to_cupy_float64(out), reference_gpu(**inputs), inputs["masked_m"])
    for g, rows in enumerate(masked):
        assert bool((bits[g, rows:] == POISON_BITS).all()), f"group {g}: rows past {rows} written"
        assert not bool((bits[g, :rows] == POISON_BITS).any()), f"group {g}: valid row unwritten"


@pytest.mark.parametrize("dtype_name", ["float32", "float16"])  # 16-bit: 16-byte stores
def test_columns_past_n_and_rows_of_other_views_stay_untouched(dtype_name):
    import cupy as cp

    inputs = make_gemm_inputs(2, 40, 144, 256, [40, 13], seed=4)
    backing = cp.full((2, 48, 160), 7.0, dtype=dtype_name)
    out = backing[:, 4:44, :144]
    gemm(**inputs, expected_m=30, out=out)
    cp.cuda.runtime.deviceSynchronize()
    assert_close_to_reference(out.astype(cp.float64), reference_gpu(**inputs), inputs["masked_m"])
    assert bool((backing[:, :4] == 7).all() and (backing[:, 44:] == 7).all())
    assert bool((backing[:, :, 144:] == 7).all()) and bool((out[1, 13:] == 7).all())


def test_strided_operands_and_scales():
    import cupy as cp

    inputs = make_gemm_inputs(3, 96, 256, 384, [96, 50, 7], seed=5)
    # a and b rows padded (strides of 512 bytes for k = 384), groups padded too.
    for name, rows in (("a", 96), ("b", 256)):
        padded = cp.zeros((3, rows + 8, 512), dtype=cp.uint8)
        padded[:, :rows, :384] = inputs[name]
        inputs[name] = padded[:, :rows, :384]
    mn_major = cp.ascontiguousarray(inputs["a_scale"].transpose(0, 2, 1)).transpose(0, 2, 1)
    inputs["a_scale"] = mn_major
    inputs["b_scale"] = cp.broadcast_to(inputs["b_scale"][:1], inputs["b_scale"].shape)
    check_f32(inputs, 64)


def test_masked_m_out_of_range_is_clamped():
    import cupy as cp

    masked = [-5, 2**31 - 1, 70, 0]
    inputs = make_gemm_inputs(4, 64, 128, 128, masked, seed=6)
    guard = cp.full((5, 64, 128), 1.0, dtype=cp.float32)
    out = guard[:4]
    out.fill(3.0)
    gemm(**inputs, expected_m=32, out=out)
    cp.cuda.runtime.deviceSynchronize()
    assert bool((out[0] == 3).all()) and bool((out[3] == 3).all())
    assert bool((guard[4] == 1).all()), "wrote past the last group"
    assert_close_to_reference(out.astype(cp.float64), reference_gpu(**inputs), inputs["masked_m"])


def test_warm_calls_are_deterministic_and_see_new_data():
    import cupy as cp

    inputs = make_gemm_inputs(4, 256, 512, 1024, [256, 100, 3, 200], seed=7)
    masked = [256, 100, 3, 200]
    valid = lambda out: [out[g, :rows] for g, rows in enumerate(masked)]  # noqa: E731
    first = valid(check_f32(inputs, 140))
    second = valid(check_f32(inputs, 140))
    assert all(bool((x == y).all()) for x, y in zip(first, second))  # rows past the mask
    # of a fresh output are uninitialised, so only valid rows are compared
    inputs["a"][...] = make_gemm_inputs(4, 256, 512, 1024, masked, seed=8)["a"]
    third = valid(check_f32(inputs, 140))  # same pointers, same cached maps, new values
    assert not all(bool((x == y).all()) for x, y in zip(third, first))
    cp.cuda.runtime.deviceSynchronize()


def test_upstream_like_random_masks():
    rng = np.random.default_rng(0)
    for groups, m, n, k in ((4, 256, 512, 128), (8, 128, 4096, 512), (64, 128, 128, 512)):
        masked = rng.integers(0, m, size=groups)
        inputs = make_gemm_inputs(groups, m, n, k, masked, seed=int(masked.sum()) % 1000)
        check_f32(inputs, min(int(np.mean(masked)) + 1, m))


def _counter_value(address: int) -> int:
    import cupy as cp

    memory = cp.cuda.UnownedMemory(address, 8, None, 0)
    return int(cp.ndarray((1,), cp.uint64, cp.cuda.MemoryPointer(memory, 0)).get()[0])


@pytest.mark.parametrize("split_tail", [False, True])
def test_claimed_tiles_on_two_streams_at_once_leave_their_counters_at_zero(split_tail):
    """Tiles claimed at run time: three launches queued back to back on each of two
    streams that run at the same time, into NaN-poisoned outputs (a tile claimed by no
    pipeline stays NaN); each stream's counter is zero again afterwards."""
    import cupy as cp

    from cugroupgemm import tile_counters

    masks = ([512, 500, 447, 1, 384, 129, 64, 0], [3, 300, 511, 512, 77, 0, 65, 250])
    problems = [make_gemm_inputs(8, 512, 2048, 1024, masked, seed=40 + i)
                for i, masked in enumerate(masks)]
    streams = [cp.cuda.Stream(non_blocking=True) for _ in problems]
    cp.cuda.runtime.deviceSynchronize()  # the inputs, made on the legacy stream
    launched = []
    with force_config(64, 128, pipes=2, split_tail=split_tail, dynamic=True):
        for _ in range(3):
            for stream, inputs in zip(streams, problems):
                with stream:
                    out = cp.full((8, 512, 2048), cp.nan, dtype=cp.float32)
                    gemm(**inputs, expected_m=256, out=out)
                launched.append((out, inputs))
    cp.cuda.runtime.deviceSynchronize()
    for out, inputs in launched:
        assert_close_to_reference(out.astype(cp.float64), reference_gpu(**inputs),
                                  inputs["masked_m"])
    for stream in streams:
        assert _counter_value(tile_counters.counter_for(0, stream.ptr)) == 0


def test_claimed_tiles_in_a_cuda_graph_replayed_on_other_streams(monkeypatch):
    """A launch recorded into a CUDA graph has a counter of its own (no stream's), which
    each replay (on any stream, new data and masked_m each time, NaN-poisoned output)
    leaves at zero for the next."""
    import cupy as cp
    import torch

    from cugroupgemm import tile_counters

    handed = []  # (whether the stream was capturing, the counter's address)

    def counter_for(device_id, stream, take=tile_counters.counter_for):
        handed.append((cp.cuda.runtime.streamIsCapturing(stream), take(device_id, stream)))
        return handed[-1][1]

    monkeypatch.setattr(tile_counters, "counter_for", counter_for)
    groups, m, n, k = 8, 512, 2048, 256  # 1024 tiles of 64 x 128: claims past round one
    static = torch_gemm_inputs(make_gemm_inputs(groups, m, n, k, [m] * groups, seed=50))
    static = {name: t.clone() for name, t in static.items()}
    out = torch.empty((groups, m, n), dtype=torch.float32, device="cuda")
    with force_config(64, 128, pipes=2, dynamic=True):
        graph, _ = capture_torch_graph(lambda: gemm(**static, expected_m=256, out=out))
    captured = [address for capturing, address in handed if capturing]
    assert len(captured) == 1 and captured[0] not in tile_counters._per_stream.values()
    rng = np.random.default_rng(6)
    for replay in range(4):
        masked = rng.integers(0, m + 1, size=groups)
        inputs = make_gemm_inputs(groups, m, n, k, masked, seed=60 + replay)
        refill_torch_inputs(static, inputs)
        out.fill_(float("nan"))
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            graph.replay()
        torch.cuda.synchronize()
        assert_close_to_reference(to_cupy_float64(out), reference_gpu(**inputs),
                                  inputs["masked_m"])
