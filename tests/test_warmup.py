"""``python -m cugroupgemm warmup``: shape specs, planning without a GPU, the fresh-process check."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cugroupgemm import __main__ as cli
from cugroupgemm import device, dispatch, warmup
from cugroupgemm.families import portable, sm90
from cugroupgemm.bench_shapes import Shape
from cugroupgemm.dtypes import OutKind
from cugroupgemm.errors import ArgumentTypeError, ArgumentValueError

ROOT = Path(__file__).resolve().parents[1]


def test_spec_with_one_expected_m_and_an_output_dtype():
    assert warmup.parse_shapes("32,1024,4096,7168,64,f32") == [
        (Shape("warmup", 32, 1024, 4096, 7168, 64), OutKind.F32)]


def test_spec_ranges_and_star_cover_every_expected_m():
    assert [s.expected_m for s, _ in warmup.parse_shapes("2,64,256,512,8-11")] == [8, 9, 10, 11]
    every = warmup.parse_shapes("2,6,256,512,*")
    assert [s.expected_m for s, _ in every] == list(range(7))
    assert all(kind is OutKind.BF16 for _, kind in every)


@pytest.mark.parametrize("text, message", [
    ("32,1024,4096", r"expected G,m,n,k,EXPECTED_M\[,OUT\], got 3 fields"),
    ("a,1,2,3,4", "G, m, n and k must be integers"),
    ("2,64,256,512,x", "EXPECTED_M must be a number, LO-HI or \\*, got 'x'"),
    ("2,64,256,512,9-3", "the EXPECTED_M range '9-3' is empty"),
])
def test_bad_specs_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        warmup.parse_shapes(text)


def test_bad_output_dtype_names_the_field():
    with pytest.raises(ArgumentTypeError, match="^OUT: expected bfloat16, float16 or float32"):
        warmup.parse_shapes("2,64,256,512,8,int8")


@pytest.mark.parametrize("text, arch", [("sm_90a", 90), ("sm90", 90), ("90", 90),
                                        ("SM_80", 80), ("sm_100a", 100)])
def test_arch_names_pick_a_reference_device(text, arch):
    assert warmup.device_for_arch(text).arch == arch


def test_unknown_arch_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"--arch: expected one of sm_80, .*sm_90.*got 'sm_70'"):
        warmup.device_for_arch("sm_70")


def test_shapes_are_checked_by_the_library_rules():
    with pytest.raises(ArgumentValueError, match="k to be a positive multiple of 128"):
        warmup.problem_for(Shape("x", 2, 64, 256, 500, 8), OutKind.BF16)
    assert warmup.plan_for(Shape("x", 2, 0, 256, 512, 0), OutKind.BF16,
                           warmup.device_for_arch("sm_90a")) is None  # nothing to launch


def test_planning_for_hopper_without_a_gpu_dedupes_instances(monkeypatch):
    monkeypatch.setenv("CUGROUPGEMM_SELFCHECK", "0")  # as if sm90 were validated
    h100 = warmup.device_for_arch("sm_90a")
    shapes = warmup.parse_shapes("32,1024,4096,7168,*")
    kernels = warmup.plan_kernels(shapes, h100, quantizers=False)
    assert {k.family for k in kernels} == {"sm90"}
    assert {k.spec.target for k in kernels} == {"sm_90a"}
    assert 1 <= len(kernels) < len(shapes) and sum(k.shapes for k in kernels) == len(shapes)
    with_quantizers = warmup.plan_kernels(shapes, h100, quantizers=True)
    assert [k.family for k in with_quantizers[len(kernels):]] == ["quantize"] * 12


def test_an_unvalidated_family_also_warms_its_fallback_and_its_self_check(monkeypatch):
    monkeypatch.delenv("CUGROUPGEMM_SELFCHECK", raising=False)
    h100 = warmup.device_for_arch("sm_90a")
    unvalidated = dataclasses.replace(sm90.FAMILY, validated_archs=())
    monkeypatch.setattr(dispatch, "families",
                        lambda: {"portable": portable.FAMILY, "sm90": unvalidated})
    kernels = warmup.plan_kernels(warmup.parse_shapes("32,1024,4096,7168,8"), h100, False)
    families = [k.family for k in kernels]
    assert families[:2] == ["sm90", "portable (fallback)"]
    assert set(families[2:]) == {"self-check"} and len(families) > 2
    assert any(k.spec.source == sm90.SOURCE for k in kernels[2:])
    assert any(k.spec.source == portable.SOURCE for k in kernels[2:])
    monkeypatch.setenv("CUGROUPGEMM_SELFCHECK", "0")  # no check, nothing extra
    assert [k.family for k in warmup.plan_kernels(
        warmup.parse_shapes("32,1024,4096,7168,8"), h100, False)] == ["sm90"]


def test_overriding_env_restores_the_environment(monkeypatch):
    monkeypatch.setenv("CUGROUPGEMM_KERNEL", "sm90")
    with warmup.overriding_env("CUGROUPGEMM_KERNEL", "portable"):
        assert os.environ["CUGROUPGEMM_KERNEL"] == "portable"
    assert os.environ["CUGROUPGEMM_KERNEL"] == "sm90"
    monkeypatch.delenv("CUGROUPGEMM_KERNEL")
    with warmup.overriding_env("CUGROUPGEMM_KERNEL", "portable"):
        pass
    assert "CUGROUPGEMM_KERNEL" not in os.environ


def test_planning_follows_a_forced_family(monkeypatch):
    monkeypatch.setenv("CUGROUPGEMM_KERNEL", "portable")
    kernels = warmup.plan_kernels(warmup.parse_shapes("4,100,512,1024,8-64"),
                                  warmup.device_for_arch("sm_90a"), quantizers=False)
    assert {k.family for k in kernels} == {"portable"} and {k.spec.target for k in kernels} == {
        "sm_90"}


def test_planning_errors_name_the_shape():
    with pytest.raises(ArgumentValueError, match=r"^warmup G=2 m=64 em=65 .*expected_m"):
        warmup.plan_kernels(warmup.parse_shapes("2,64,256,512,65"),
                            warmup.device_for_arch("sm_90a"), quantizers=False)


def test_warmup_table():
    kernel = warmup.Kernel("sm90", warmup.KernelSpec("s.cu", "k<1>", "sm_90a"), 3)
    text = warmup.format_warmed([warmup.Warmed(kernel, 1.234, 0.0021, 0),
                                 warmup.Warmed(kernel, None, 0.0004, 2)])
    lines = text.splitlines()
    assert lines[1].split() == ["sm90", "sm_90a", "3", "1.23", "s", "2.1", "ms", "k<1>"]
    assert "cached" in lines[2] and "(2 compiles!)" in lines[2]


def test_cli_needs_shapes_and_a_gpu_or_an_arch(capsys):
    with pytest.raises(SystemExit):
        cli.main(["warmup"])
    assert "give --shapes and/or --preset" in capsys.readouterr().err
    if device.gpu_count() == 0:
        with pytest.raises(SystemExit):
            cli.main(["warmup", "--preset", "quick"])
        assert "pass --arch" in capsys.readouterr().err


def test_warmup_for_an_arch_fills_the_cache_and_a_fresh_process_compiles_nothing(tmp_path):
    environment = {**os.environ, "CUGROUPGEMM_CACHE_DIR": str(tmp_path / "cache"),
                   "CUGROUPGEMM_SELFCHECK": "0"}  # one kernel: no self-check instances
    command = [sys.executable, "-m", "cugroupgemm", "warmup", "--arch", "sm_90a",
               "--no-quantizers", "--shapes", "2,64,256,512,8", "--json", str(tmp_path / "w.json")]
    first = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "fresh process: 0 compiles for 1 kernels" in first.stdout
    report = json.loads((tmp_path / "w.json").read_text())
    assert report["kernels"][0]["cold_seconds"] > 0 and report["kernels"][0]["fresh_compiles"] == 0
    again = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True)
    assert again.returncode == 0 and "cached" in again.stdout  # nothing compiled the second time
    assert warmup.cache_summary(tmp_path / "cache")[0] == 1


def test_cache_summary_of_a_missing_directory(tmp_path):
    assert warmup.cache_summary(tmp_path / "none") == (0, 0)
