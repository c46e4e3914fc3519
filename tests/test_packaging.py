"""The wheel ``pip install .`` builds: kernel sources, the typing marker, the extras."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    # NOTE: built from a copy, so no build/ or egg-info lands in the working tree.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    for name in ("cugroupgemm", "kernels_cu"):
        shutil.copytree(ROOT / name, source / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    # NOTE: with build isolation, as `pip install .` builds: a venv's own setuptools may
    # lack bdist_wheel. Offline (the GPU machine), with the environment's own instead.
    command = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w",
               str(source / "dist")]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 and "name resolution" in done.stderr:
        done = subprocess.run([*command, "--no-build-isolation"], capture_output=True,
                              text=True, check=False)
    if done.returncode != 0 and "No module named pip" in done.stderr:
        pytest.skip("pip is not available")
    assert done.returncode == 0, done.stderr
    return zipfile.ZipFile(next((source / "dist").glob("cugroupgemm-*.whl")))


def test_wheel_ships_every_kernel_source(wheel):
    names = set(wheel.namelist())
    for path in (ROOT / "kernels_cu").rglob("*"):
        if path.suffix in (".cu", ".cuh"):
            assert f"cugroupgemm/kernels_cu/{path.relative_to(ROOT / 'kernels_cu')}" in names


def test_wheel_is_typed_and_offers_the_plot_extra(wheel):
    assert "cugroupgemm/py.typed" in wheel.namelist()
    metadata = wheel.read(next(n for n in wheel.namelist() if n.endswith("METADATA"))).decode()
    assert "Provides-Extra: plot" in metadata
    assert "matplotlib; extra == \"plot\"" in metadata
