"""scripts/device_session.sh without a GPU: its bookkeeping (summary, one archive, exit
status), with a step that cannot pass."""

import os
import subprocess
import tarfile
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "device_session.sh"


def test_a_failed_step_is_summarised_archived_and_fails_the_session(tmp_path):
    done = subprocess.run(["bash", str(SCRIPT), str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "SESSION_STEPS": "no_such_step"}, timeout=60)
    assert done.returncode == 1
    summary = (tmp_path / "summary.txt").read_text()
    assert "unknown step 'no_such_step'" in summary
    with tarfile.open(tmp_path / "logs.tgz") as archive:
        assert "./summary.txt" in archive.getnames()


def test_a_deepgemm_tree_that_is_not_there_fails_its_step(tmp_path):
    done = subprocess.run(["bash", str(SCRIPT), str(tmp_path)], capture_output=True, text=True,
                          env={**os.environ, "SESSION_STEPS": "deepgemm",
                               "DEEPGEMM_DIR": str(tmp_path / "no_such_tree")}, timeout=60)
    assert done.returncode == 1
    assert "deepgemm: exit 1" in (tmp_path / "summary.txt").read_text()
