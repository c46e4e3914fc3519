"""The benchmark's table, JSON and plot, on fake rows (no GPU)."""

import json
import sys
import types
from importlib import metadata

import pytest

from cugroupgemm import bench_report
from cugroupgemm.bench_report import Measurement, Report, Row
from cugroupgemm.bench_shapes import Shape, Work

DECODE = Shape("decode", 32, 1024, 4096, 7168, 8)
PREFILL = Shape("prefill", 1, 4096, 4096, 7168, 1024)


def fake_report(fp8_tflops=1300.0, **contenders) -> Report:
    contenders = contenders or {"portable": None, "cublas-looped": None,
                                "deepgemm": "deep_gemm not importable"}
    rows = [
        Row(DECODE, "sm90", "sm90_fp8_masked_gemm<64, ...>", Work(flops=10**10, bytes=10**9),
            Measurement(350.0),
            {"portable": Measurement(700.0), "cublas-looped": Measurement(525.0, diff=2e-6)}),
        Row(PREFILL, "sm90", "sm90_fp8_masked_gemm<128, ...>", Work(6 * 10**10, 45 * 10**6),
            Measurement(60.0, host_bound=True),
            {"portable": Measurement(error="RuntimeError: boom"),
             "cublas-looped": Measurement(72.0, diff=0.5)}),
    ]
    return Report("NVIDIA H200 (132 SMs)", copy_gbps=4000.0, fp8_tflops=fp8_tflops,
                  contenders=contenders, legend={"cublas-looped": "looped _scaled_mm"},
                  rows=rows, environment={"date": "2026-12-01"})


def test_table_has_rates_ceiling_ratios_and_a_column_per_timed_peer():
    lines = bench_report.format_table(fake_report()).splitlines()
    header = lines[0].split()
    assert header[:11] == ["shape", "G", "m", "em", "n", "k", "family", "us", "TFLOP/s", "GB/s",
                           "bw/copy"]
    assert "TF/fp8" in header and "deepgemm" not in lines[0]  # missing peer: no column
    decode = lines[1].split()
    assert decode[7:12] == ["350.0", "29", "2857", "0.71", "0.02"]
    assert decode[-2:] == ["2.00x", "1.50x"]  # portable, cublas-looped: their time / ours


def test_table_marks_failures_suspects_and_host_bound_times():
    text = bench_report.format_table(fake_report())
    prefill = text.splitlines()[2].split()
    assert prefill[7] == "60.0*" and prefill[-2:] == ["n/a", "1.20x!"]
    assert "skipped deepgemm: deep_gemm not importable" in text
    assert "n/a prefill G=1 m=4096 em=1024 n=4096 k=7168 portable: RuntimeError: boom" in text
    assert "!: that result differs from ours" in text
    assert "*: the host could not queue calls" in text
    assert "copy 4000 GB/s" in text and "FP8 matmul 1300 TFLOP/s" in text


def test_without_torch_the_fp8_column_is_skipped_and_said_so():
    text = bench_report.format_table(fake_report(fp8_tflops=None, deepgemm="no torch"))
    assert "TF/fp8" not in text.splitlines()[0]
    assert "FP8 matmul not measured" in text
    assert "vs" not in text.splitlines()[0]  # no peer ran: no ratio column


def test_our_failure_leaves_the_row_readable():
    report = fake_report()
    report.rows[0] = Row(DECODE, "sm90", "-", Work(1, 1), Measurement(error="CUDAError: x"),
                         {"portable": Measurement(1.0)})
    line = bench_report.format_table(report).splitlines()[1]
    assert "failed" in line and "n/a" in line


def test_json_is_complete_and_strict():
    data = bench_report.to_json(fake_report())
    text = json.dumps(data, allow_nan=False)  # strict JSON
    assert json.loads(text)["ceilings"] == {"copy_gbps": 4000.0, "fp8_tflops": 1300.0}
    assert data["contenders"]["deepgemm"]["skipped"] == "deep_gemm not importable"
    row = data["rows"][0]
    assert row["kernel"].startswith("sm90_fp8") and row["groups"] == 32
    assert row["microseconds"] == 350.0 and row["copy_ratio"] == pytest.approx(2857.14 / 4000,
                                                                               rel=1e-4)
    assert row["others"]["cublas-looped"]["speedup"] == 1.5
    assert data["rows"][1]["others"]["portable"]["error"] == "RuntimeError: boom"


def test_nan_diff_is_written_as_text_and_flagged():
    report = fake_report()
    report.rows[0].others["cublas-looped"] = Measurement(1.0, diff=float("nan"))
    assert report.rows[0].others["cublas-looped"].suspect
    data = bench_report.to_json(report)
    assert data["rows"][0]["others"]["cublas-looped"]["diff"] == "nan"


def test_write_json(tmp_path):
    path = tmp_path / "bench.json"
    bench_report.write_json(fake_report(), str(path))
    assert json.loads(path.read_text())["device"] == "NVIDIA H200 (132 SMs)"


def test_plot_without_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now raises ImportError
    assert "pip install 'cugroupgemm[plot]'" in bench_report.plot_available()


def test_roofline_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "roofline.png"
    bench_report.write_plot(fake_report(), str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_versions_name_the_toolchain_without_importing_frameworks():
    found = bench_report.versions()
    assert found["cugroupgemm"] and found["cupy"] and found["nvrtc"]
    assert set(bench_report.OPTIONAL_PACKAGES) <= set(found)


def test_a_peer_run_from_its_source_tree_reports_its_module_version(monkeypatch):
    # No installed metadata (a source tree on PYTHONPATH), but imported by the peers' check.
    installed = metadata.version

    def version(name):
        if name == "deep_gemm":
            raise metadata.PackageNotFoundError(name)
        return installed(name)

    monkeypatch.setattr(metadata, "version", version)
    monkeypatch.setitem(sys.modules, "deep_gemm", types.SimpleNamespace(__version__="9.8.7"))
    assert bench_report.versions()["deep_gemm"] == "9.8.7"
