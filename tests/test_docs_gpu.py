"""Every Python example in README.md and docs/ runs (on a GPU), so none of them rots."""

import re
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = [(path.relative_to(ROOT), index, code) for path in DOCS
            for index, code in enumerate(re.findall(r"```python\n(.*?)```", path.read_text(),
                                                    re.S))]


@pytest.mark.gpu
@pytest.mark.parametrize("where, index, code", EXAMPLES,
                         ids=[f"{where}-{index}" for where, index, _ in EXAMPLES])
def test_example_runs(where, index, code, capsys, monkeypatch):
    # NOTE: a real module, since torch.compile imports the module of the code it traces.
    module = types.ModuleType(f"doc_example_{index}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(compile(code, f"{where} example {index}", "exec"), module.__dict__)
    assert capsys.readouterr().out  # each example prints what it shows


def test_examples_were_found():
    assert len(EXAMPLES) >= 3
