"""The HTML report opened in a real headless Chromium: not blank, every image decoded, and
every figure with a title and labelled axes (read from its SVG, where text stays text).

Skipped with a reason only when no Chromium is installed; CI installs Debian's chromium and
sets CI=true, where a missing browser is a failure instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import pytest

from sparseflow.config import load_config
from sparseflow.report.html import build_report
from sparseflow.training.run import execute

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which(
    "google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
PROBE = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images', imgs.length);
  document.body.setAttribute('data-decoded', ok);
});
</script></body>"""


def _png_pixels_not_uniform(path: Path) -> bool:
    """True when the screenshot has more than one colour (decoded with zlib, no PIL)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, i = [], 8
    while i < len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        kind = data[i + 4:i + 8]
        if kind == b"IDAT":
            chunks.append(data[i + 8:i + 8 + n])
        i += 12 + n
    raw = zlib.decompress(b"".join(chunks))
    return len(set(raw[1:4000])) > 3 or len(set(raw[len(raw) // 2:len(raw) // 2 + 4000])) > 3


def test_report_renders_in_chromium(tmp_path):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install chromium (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    root = tmp_path / "store"
    base = ["dataset=synthetic", "model=mlp", "arch.depth=1", "arch.width=16",
            "train.duration=2ep", "data.heldout=64", "train.batch_size=64", "flow.every=2",
            "sparse.update_every=3", "flow.around_updates=1"]
    for m in ("dense", "rigl"):
        execute(load_config(None, base + [f"method={m}"]), root=root, progress=False)
    report = build_report(root, out=tmp_path / "out")
    probe = report.with_name("probe.html")
    probe.write_text(report.read_text().replace("</body>", PROBE))
    profile = tmp_path / "profile"
    common = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}"]
    shot = tmp_path / "shot.png"
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1200,1600",
                    probe.as_uri()], capture_output=True, timeout=120, check=False)
    assert shot.exists() and shot.stat().st_size > 1000
    assert _png_pixels_not_uniform(shot)
    dom = subprocess.run([*common, "--dump-dom", "--virtual-time-budget=5000", probe.as_uri()],
                         capture_output=True, text=True, timeout=120, check=False).stdout
    images = re.search(r'data-images="(\d+)"', dom)
    decoded = re.search(r'data-decoded="(\d+)"', dom)
    assert images and decoded, dom[:500]
    assert int(images.group(1)) >= 3 and decoded.group(1) == images.group(1)
    svgs = sorted((tmp_path / "out" / "figures").glob("*.svg"))
    assert len(svgs) == int(images.group(1))  # each embedded figure also as SVG (and PDF)
    for svg in svgs:
        assert svg.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
        words = _svg_texts(svg)
        axes = [t for t in words if t in ("training step", "sparsity", "test accuracy")
                or "||g||" in t or "EGF" in t or "training step" in t]
        assert len(axes) >= 2, (svg.name, words)  # an x and a y label
        assert any(len(t.split()) >= 3 and t[0].isupper() for t in words), (svg.name, words)


def _svg_texts(path: Path) -> list[str]:
    """The text runs of an SVG drawn with svg.fonttype none (matplotlib keeps text as text)."""
    root = ET.parse(path).getroot()
    return [" ".join("".join(el.itertext()).split()) for el in root.iter()
            if el.tag.endswith("}text")]
