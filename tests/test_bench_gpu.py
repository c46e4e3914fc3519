"""On the GPU: a small ``bench`` run writes its table and JSON, with the peers found installed."""

import importlib.util
import json

import pytest

from cugroupgemm import __main__ as cli

SMALL = ["--groups", "2", "--m", "128", "--n", "512", "--k", "1024", "--expected-m", "64",
         "--repeats", "5"]


@pytest.mark.gpu
def test_small_bench_writes_table_and_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert cli.main(["bench", *SMALL, "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "TFLOP/s" in out and "copy" in out
    data = json.loads(path.read_text())
    row = data["rows"][0]
    assert row["error"] is None and row["microseconds"] > 0 and row["flops"] > 0
    assert data["ceilings"]["copy_gbps"] > 100
    for name, contender in data["contenders"].items():
        if contender["skipped"] is None:  # every contender that ran agrees with us
            result = row["others"][name]
            assert result["error"] is None, f"{name}: {result['error']}"
            assert result["diff"] is not None and result["diff"] < 1e-3, name


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="the peers need torch")
def test_torch_peers_and_the_fp8_ceiling_are_measured(tmp_path):
    path = tmp_path / "bench.json"
    assert cli.main(["bench", *SMALL, "--peers", "cublas-looped,bf16-bmm", "--json",
                     str(path)]) == 0
    data = json.loads(path.read_text())
    assert data["ceilings"]["fp8_tflops"] > 10
    timed = [name for name, c in data["contenders"].items() if c["skipped"] is None]
    assert {"cublas-looped", "bf16-bmm"} <= set(timed)
    assert all(data["rows"][0]["others"][name]["speedup"] > 0 for name in timed)


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib")
def test_plot_is_written(tmp_path):
    path = tmp_path / "roofline.png"
    assert cli.main(["bench", *SMALL, "--peers", "", "--no-portable", "--plot", str(path)]) == 0
    assert path.read_bytes()[:4] == b"\x89PNG"
