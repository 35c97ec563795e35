"""The README's Python examples run as written (doc tests)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_block_runs(code, tmp_path, monkeypatch, capsys):
    from sparseflow.methods import registry

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(registry, "METHODS", dict(registry.METHODS))  # an example registers
    exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert out.strip(), "each example prints its result"
    if "sparseflow.rigl" in code:
        assert float(out.split()[-1]) == pytest.approx(0.9, abs=1e-3)
    if "sparseflow.track" in code:  # the recorded loop is a finished, named run of the store
        from sparseflow.store.database import Store

        with Store(tmp_path / "my-runs" / "sparseflow.db", readonly=True) as st:
            (run,) = st.list_runs()
        assert run["status"] == "finished" and run["name"] == "my loop"
        assert run["run_id"] == out.split()[-2]
