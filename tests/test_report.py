"""`sparseflow report`: a self-contained, escaped HTML file with embedded figures."""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
import statistics
import xml.etree.ElementTree as ET

import pytest

from sparseflow.cli import main
from sparseflow.config import load_config
from sparseflow.report.html import build_report
from sparseflow.store.database import Store
from sparseflow.training.run import execute

BASE = ["dataset=synthetic", "model=mlp", "arch.depth=1", "arch.width=16", "train.duration=2ep",
        "data.heldout=64", "train.batch_size=64", "flow.every=2", "sparse.update_every=3",
        "flow.around_updates=1"]


@pytest.fixture(scope="module")
def store_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("report") / "store"
    runs = [execute(load_config(None, BASE + [f"method={m}", f"seed={s}"]), root=root,
                    progress=False) for m in ("dense", "rigl") for s in (0, 1)]
    return root, runs


def test_report_is_self_contained_and_escaped(store_root, tmp_path, capsys):
    src, runs = store_root
    root = tmp_path / "store"
    shutil.copytree(src, root)
    evil = "<script>alert('x')</script>"
    with Store(root / "sparseflow.db") as st:
        st.start_run("evil00000000", {"method": evil, "dataset": "synthetic", "model": evil})
        st.finish_run("evil00000000", "finished", {"test_accuracy": 0.5})
    capsys.readouterr()
    code = main(["analyze", "interpolate", runs[1]["run_id"], runs[3]["run_id"], "--alphas",
                 "0:1:3", "--mask", "union", "--root", str(root)])
    assert code == 0
    out = tmp_path / "r"
    code = main(["report", "--out", str(out), "--root", str(root)])
    assert code == 0
    html = (out / "index.html").read_text()
    assert evil not in html and "&lt;script&gt;" in html
    assert not re.search(r"(src|href)=\"(?!data:)", html)  # nothing fetched from anywhere
    assert "http://" not in html and "https://" not in html
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) >= 4  # grad norm, EGF, mask-update changes, the interpolation
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    for f in ("tables/runs.csv", "tables/runs.tex", "tables/accuracy.csv", "tables/accuracy.tex",
              "figures/grad_norm.png", "figures/grad_norm.svg", "figures/grad_norm.pdf"):
        assert (out / f).stat().st_size > 0, f
    assert (out / "figures/grad_norm.pdf").read_bytes()[:5] == b"%PDF-"
    assert all(r["run_id"] in html for r in runs)
    assert "[" not in html.split("<h2>Analyses</h2>")[1].split("</table>")[0]  # no hashes
    assert "RigL -&gt; RigL" in html or "RigL" in html


def test_report_pools_seeds_with_sample_std_and_interval(store_root, tmp_path):
    root, runs = store_root
    out = build_report(root, out=tmp_path / "rep").parent
    with open(out / "tables" / "accuracy.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_label = {r["label"]: r for r in rows}
    assert set(by_label) == {"dense", "RigL"}
    for label, method in (("dense", "dense"), ("RigL", "rigl")):
        accs = [r["test_accuracy"] for r in runs if r["method"] == method]
        row = by_label[label]
        assert int(row["n"]) == 2
        assert float(row["mean"]) == pytest.approx(statistics.mean(accs))
        assert float(row["std"]) == pytest.approx(statistics.stdev(accs))
        assert float(row["95% CI low"]) <= float(row["mean"]) <= float(row["95% CI high"])
    assert by_label["dense"]["sparsity"] == ""  # no mask: no sparsity
    tex = (out / "tables" / "accuracy.tex").read_text()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    svg = (out / "figures" / "grad_norm.svg").read_text()
    root_el = ET.fromstring(svg)
    texts = " ".join(t for t in root_el.itertext())
    assert "Gradient norm during training" in texts and "training step" in texts
    assert "||g||_2" in texts and "RigL" in texts and "dense" in texts


def test_report_never_replaces_a_file_it_did_not_write(store_root, tmp_path, capsys):
    root, _ = store_root
    out = tmp_path / "mine"
    (out / "tables").mkdir(parents=True)
    (out / "tables" / "runs.csv").write_text("my own table")
    capsys.readouterr()
    code = main(["report", "--out", str(out), "--root", str(root)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "runs.csv" in err and "--force" in err
    assert (out / "tables" / "runs.csv").read_text() == "my own table"
    assert sorted(p.name for p in out.rglob("*")) == ["runs.csv", "tables"]  # nothing added
    assert main(["report", "--out", str(out), "--root", str(root), "--force"]) == 0
    assert (out / "tables" / "runs.csv").read_text() != "my own table"
    assert main(["report", "--out", str(out), "--root", str(root)]) == 0  # its own files
    code = main(["report", "--out", str(tmp_path / "r.html"), "--root", str(root)])
    err = capsys.readouterr().err
    assert code == 2 and "a report is a folder" in err and not (tmp_path / "r.html").exists()


def test_report_bad_input(tmp_path, capsys):
    code = main(["report", "--root", str(tmp_path / "nothing")])
    err = capsys.readouterr().err
    assert code == 2 and "no run store" in err


def test_report_touches_nothing_outside_its_folder(store_root, tmp_path):
    root, _ = store_root

    def snapshot(base):
        return {str(p.relative_to(base)): (p.stat().st_size, p.stat().st_mtime_ns)
                for p in base.rglob("*") if p.is_file()}

    before_store, before_tmp = snapshot(root.parent), snapshot(tmp_path)
    out = build_report(root, out=tmp_path / "deep" / "rep").parent
    assert snapshot(root.parent) == before_store  # the store is only read
    after = snapshot(tmp_path)
    new = {k for k in after if k not in before_tmp}
    assert new and all(k.startswith("deep/rep/") for k in new)
    listed = json.loads((out / ".sparseflow-report.json").read_text())["files"]
    assert sorted(listed) == sorted(k.removeprefix("deep/rep/") for k in new
                                    if not k.endswith(".sparseflow-report.json"))
