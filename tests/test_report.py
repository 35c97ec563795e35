"""`sparseflow report`: a self-contained, escaped HTML file with embedded figures."""

from __future__ import annotations

import base64
import re

from sparseflow.cli import main
from sparseflow.config import load_config
from sparseflow.store.database import Store
from sparseflow.training.run import execute

BASE = ["dataset=synthetic", "model=mlp", "arch.depth=1", "arch.width=16", "train.duration=2ep",
        "data.heldout=64", "train.batch_size=64", "flow.every=2", "sparse.update_every=3",
        "flow.around_updates=1"]


def test_report_is_self_contained_and_escaped(tmp_path, capsys):
    root = tmp_path / "store"
    runs = [execute(load_config(None, BASE + [f"method={m}", f"seed={s}"]), root=root,
                    progress=False) for m in ("dense", "rigl") for s in (0, 1)]
    evil = "<script>alert('x')</script>"
    with Store(root / "sparseflow.db") as st:
        st.start_run("evil00000000", {"method": evil, "dataset": "synthetic", "model": evil})
        st.finish_run("evil00000000", "finished", {"test_accuracy": 0.5})
    capsys.readouterr()
    code = main(["analyze", "interpolate", runs[1]["run_id"], runs[3]["run_id"], "--alphas",
                 "0:1:3", "--mask", "union", "--root", str(root)])
    assert code == 0
    out = tmp_path / "r" / "report.html"
    code = main(["report", "--out", str(out), "--root", str(root)])
    assert code == 0 and out.exists()
    html = out.read_text()
    assert evil not in html and "&lt;script&gt;" in html
    assert not re.search(r"(src|href)=\"(?!data:)", html)  # nothing fetched from anywhere
    assert "http://" not in html and "https://" not in html
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) >= 4  # grad norm, EGF, mask-update deltas, the interpolation
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    for f in ("runs.csv", "accuracy.csv", "grad_norm.png", "grad_norm.svg"):
        assert (out.parent / f).stat().st_size > 0
    assert all(r["run_id"] in html for r in runs)


def test_report_bad_input(tmp_path, capsys):
    code = main(["report", "--root", str(tmp_path / "nothing")])
    err = capsys.readouterr().err
    assert code == 2 and "no run store" in err
