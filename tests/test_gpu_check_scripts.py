"""The GPU check scripts keep working where there is no GPU: benchmarks/sparse_gpu.py (sparse
execution's kernels against dense) and benchmarks/gpu_methods.py (one epoch of every method in
bf16) run on CPU in their quick modes; a missing CUDA device is a clear exit."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCHMARKS / "sparse_gpu.py"


def _module():
    spec = importlib.util.spec_from_file_location("sparse_gpu", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quick_run_on_cpu_prints_both_tables() -> None:
    out = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick",
                          "--semi-structured"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    diff = float(text.split("largest relative difference ")[1].split()[0])
    assert diff < 1e-5
    assert "| 64x128 | 32 |" in text  # a CSR row
    assert "2:4 semi-structured" in text
    assert "| 30x50 | | | | | skipped: sides must be multiples of 64 | |" in text
    # on CPU torch has no semi-structured kernels: said in the table, not a crash
    assert "not supported here" in text or "| 64x128 | 32 | float16 |" in text


def test_two_four_masks_keep_two_of_every_four_inputs() -> None:
    mask = _module().two_four_mask(6, 16, torch.Generator().manual_seed(0))
    assert mask.shape == (6, 16)
    assert bool((mask.reshape(6, 4, 4).sum(-1) == 2).all())


def test_no_cuda_is_a_clear_exit() -> None:
    if torch.cuda.is_available():
        return
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0 and "no CUDA device" in out.stderr


def test_every_method_trains_an_epoch_in_bf16_on_cpu() -> None:
    from sparseflow.methods.registry import method_names

    out = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_methods.py"), "--device", "cpu",
                          "--quick"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    rows = {line.split("|")[1].strip(): line for line in out.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| method")}
    assert set(rows) == set(method_names())
    assert "skipped: reads another run" in rows["lottery"]
    for name in ("static", "rigl", "snip", "ste", "snfs"):
        cells = [c.strip() for c in rows[name].split("|")[1:-1]]
        assert cells[3] == "0.900" and cells[4] == "yes", rows[name]
    assert int(rows["rigl"].split("|")[6]) >= 1  # mask updates happened in bf16


def test_paper_runs_time_the_first_runs_of_a_preset() -> None:
    out = subprocess.run([sys.executable, str(BENCHMARKS / "paper_runs.py"), "--device", "cpu",
                          "--duration", "5it", "--runs", "2", "--set", "threads=1"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in out.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| run")]
    assert [r[1].strip() for r in rows] == ["static", "dense"]  # the first SC-SDC pair
    for r in rows:
        assert int(r[5]) == 5 and int(r[7]) == 500  # 5 steps here; the preset's 500 epochs
        assert float(r[8]) > 0 and 0.0 <= float(r[9]) <= 1.0


def test_the_device_script_parses_and_names_scripts_that_exist() -> None:
    script = BENCHMARKS / "gpu_checks.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    for name in ("sparse_gpu.py", "gpu_methods.py", "throughput.py", "paper_runs.py"):
        assert f"benchmarks/{name}" in text and (BENCHMARKS / name).is_file()
    assert "tests/test_semi_structured.py" in text
