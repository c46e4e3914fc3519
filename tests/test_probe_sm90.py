"""scripts/probe_sm90.py without a GPU: every variant still applies to today's kernel and
compiles, so a kernel change that moves an edited line shows up here, not on the device."""

import importlib.util
import shutil
from pathlib import Path

import pytest

from cugroupgemm import build, kernel_report, nvrtc
from cugroupgemm.families import sm90

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "probe_sm90.py"


@pytest.fixture(scope="module")
def probe():
    spec = importlib.util.spec_from_file_location("probe_sm90", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_unknown_variant_is_refused(probe):
    with pytest.raises(SystemExit, match="unknown variant 'no_such'"):
        probe.edited({}, "no_such")


def test_configs_that_claim_tiles_take_no_edit(probe, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["probe_sm90.py", "base,no_barriers",
                                     "--configs", "64x128x64x2x1x0x0x1"])
    with pytest.raises(SystemExit):
        probe.main()
    assert "take only 'base'" in capsys.readouterr().err


def test_an_edit_whose_text_moved_is_refused(probe):
    with pytest.raises(SystemExit, match="is no longer in"):
        probe.edited({probe.SOURCE: "// not the kernel"}, "loads_only")


@pytest.mark.parametrize("variant", ["loads_only", "consumers_only", "no_scales", "b_only",
                                     "promote_once", "no_wgmma", "no_barriers", "no_epilogue",
                                     "nonuniform_k", "tile_pairs", "unhooked", "timeline",
                                     "no_scale_warp", "scale_pad",
                                     "consumers_only+promote_once"])
def test_every_variant_applies_and_compiles(probe, tmp_path, monkeypatch, variant):
    originals = probe.kernel_sources(build.KERNEL_DIR)
    sources = probe.edited(originals, variant)
    assert sources != originals
    shutil.copytree(build.KERNEL_DIR, tmp_path / "kernels_cu")
    for file, text in sources.items():
        (tmp_path / "kernels_cu" / file).write_text(text)
    monkeypatch.setattr(build, "KERNEL_DIR", tmp_path / "kernels_cu")
    split = sm90.reference_configs()[-1]  # instantiates the whole and the half tile paths
    spec = build.KernelSpec(probe.SOURCE, split.expression(), sm90.TARGET)
    result = nvrtc.compile_program(sources[probe.SOURCE], probe.SOURCE, spec.options(),
                                   [spec.expression])
    assert result.cubin
    # A variant that spills times the spills too. unhooked does on today's kernel (its
    # docstring; docs/performance.md, log item 48).
    report = kernel_report.resources(
        build.Binary(result.cubin, result.lowered_names[spec.expression], result.log))
    assert (report.spill_store_bytes > 0) == ("unhooked" in variant), report


def test_trees_are_named_by_the_folder_that_holds_them(probe):
    assert probe.tree_label(probe.ROOT / "kernels_cu") == "worktree"
    assert probe.tree_label(Path("ab/main/kernels_cu")) == "ab/main"
    assert probe.tree_label(Path("/tmp/other/kernels_cu")) == "/tmp/other"
