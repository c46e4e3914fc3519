"""``python -m cugroupgemm bench``: argument parsing, shapes and peers discovery (no GPU)."""

import subprocess
import sys

import numpy as np
import pytest

from cugroupgemm import __main__ as cli
from cugroupgemm import bench, bench_peers, bench_shapes, bench_timing, device
from cugroupgemm.bench_shapes import Shape


def options(*argv):
    parser = cli.build_parser()
    args = parser.parse_args(["bench", *argv])
    return cli.bench_options(args, args.parser)


def test_default_is_issue_3s_sixteen_shapes():
    chosen = options()
    assert chosen.shapes == bench_shapes.HOPPER and len(chosen.shapes) == 16
    assert chosen.repeats == 50 and chosen.peers is None and chosen.portable


def test_quick_keeps_working_for_the_gpu_script():
    chosen = options("--quick", "--json", "out.json")
    assert chosen.shapes == bench_shapes.QUICK and chosen.repeats == 20
    assert chosen.json_path == "out.json"


def test_presets_by_name():
    assert options("--preset", "deepseek-v3-decode").shapes == bench_shapes.DECODE
    assert options("--preset", "prefill").shapes == bench_shapes.PREFILL
    assert all(s.groups == 32 and s.m == 1024 for s in bench_shapes.DECODE)


def test_custom_shapes_are_every_combination():
    chosen = options("--groups", "32", "--m", "1024", "--n", "4096", "--k", "7168",
                     "--expected-m", "8,64", "--repeats", "7")
    assert chosen.shapes == [Shape("custom", 32, 1024, 4096, 7168, 8),
                             Shape("custom", 32, 1024, 4096, 7168, 64)]
    assert chosen.repeats == 7


def test_custom_shapes_need_every_flag(capsys):
    with pytest.raises(SystemExit):
        options("--groups", "4", "--n", "256")
    assert "missing --m --k --expected-m" in capsys.readouterr().err


def test_preset_and_custom_flags_do_not_mix(capsys):
    with pytest.raises(SystemExit):
        options("--preset", "decode", "--groups", "4")
    assert "either --preset or custom shape flags" in capsys.readouterr().err


def test_bad_integer_list_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        options("--expected-m", "8,x")
    assert "expected comma-separated integers, got '8,x'" in capsys.readouterr().err


def test_peer_names_are_checked(capsys):
    assert options("--peers", "bf16-bmm,deepgemm").peers == ("bf16-bmm", "deepgemm")
    assert options("--peers", "").peers == ()
    with pytest.raises(SystemExit):
        options("--peers", "cutlass")
    assert "--peers: unknown cutlass; known: cublas-looped, bf16-bmm, deepgemm" in \
        capsys.readouterr().err


def test_int_list():
    assert bench_shapes.int_list("8,32") == (8, 32)
    with pytest.raises(ValueError, match="non-negative"):
        bench_shapes.int_list("-1")


def test_masked_m_draw_follows_issue_3():
    shape = Shape("decode", 32, 1024, 4096, 7168, 64)
    drawn = bench_shapes.draw_masked_m(shape)
    assert drawn.dtype == np.int32 and drawn.shape == (32,)
    assert drawn.min() >= round(0.7 * 64) and drawn.max() <= round(1.3 * 64)
    assert (drawn == bench_shapes.draw_masked_m(shape)).all()  # same routing every run
    assert bench_shapes.draw_masked_m(Shape("x", 4, 10, 128, 128, 10)).max() <= 10


def test_work_counts_valid_rows_and_non_empty_groups_only():
    shape = Shape("x", 3, 64, 256, 512, 16)
    counted = bench_shapes.work(shape, [10, 0, 6], out_itemsize=2)
    assert counted.flops == 2 * 16 * 256 * 512
    assert counted.bytes == (2 * 256 * 512 + 16 * 512 + 16 * 4 * 4 + 2 * 2 * 4 * 4
                             + 16 * 256 * 2)


def test_rotation_sets_keep_reuses_past_l2():
    assert bench_timing.rotation_sets(1 << 30) == 1
    assert bench_timing.rotation_sets(100 << 20) == 3
    assert bench_timing.rotation_sets(1) == bench_timing.MAX_SETS


def test_missing_peers_are_skipped_with_their_reason(monkeypatch):
    def no_torch():
        raise ImportError("No module named 'torch'")

    monkeypatch.setattr(bench_peers, "_torch", no_torch)
    found = bench_peers.find_peers()
    assert set(found) == {"cublas-looped", "bf16-bmm", "deepgemm"}
    assert all("torch not importable" in why for why in found.values())
    assert bench_peers.find_peers(("deepgemm",)).keys() == {"deepgemm"}


def test_deepgemm_is_found_under_either_name(monkeypatch):
    module = type(sys)("deep_gemm")
    module.m_grouped_gemm_fp8_fp8_bf16_nt_masked = lambda *args: "legacy"
    monkeypatch.setitem(sys.modules, "deep_gemm", module)
    assert bench_peers._deepgemm_function()() == "legacy"
    module.m_grouped_fp8_gemm_nt_masked = lambda *args: "head"
    assert bench_peers._deepgemm_function()() == "head"


def test_peer_diff_uses_the_first_and_last_non_empty_groups():
    assert bench._checked_groups(np.array([0, 3, 0, 5, 2, 0])) == [1, 4]
    assert bench._checked_groups(np.array([0, 7])) == [1]
    assert bench._checked_groups(np.array([0, 0])) == []


def test_a_failing_contender_becomes_a_gap_not_a_crash():
    def broken(case):
        raise RuntimeError("cuBLASLt: unsupported\nsecond line")

    measurement, prepared = bench.measure(broken, case=None, repeats=1)
    assert prepared is None and measurement.microseconds is None
    assert measurement.error == "RuntimeError: cuBLASLt: unsupported"


@pytest.mark.skipif(device.gpu_count() > 0, reason="this checks the GPU-less path")
def test_bench_without_a_gpu_says_so(capsys):
    assert cli.main(["bench", "--quick"]) == 2
    assert "bench needs a GPU" in capsys.readouterr().err


def test_cli_modules_import_no_framework():
    code = ("import sys, cugroupgemm.__main__, cugroupgemm.bench_peers, cugroupgemm.warmup, "
            "cugroupgemm.bench_report; "
            "print(sorted(m for m in ('torch', 'jax', 'jaxlib', 'deep_gemm', 'matplotlib') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"
