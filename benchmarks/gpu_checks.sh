#!/usr/bin/env bash
# Every GPU check of sparse execution, the paper scale and GPU training, in one command for a
# machine with a CUDA GPU whose python3 holds a CUDA torch (and numpy, pyyaml, tqdm, pytest):
# sparseflow runs from src/ without installing. At most 9 minutes (the parts' limits add up to
# 540 s, so it fits a 10-minute GPU job); a failing part does not stop the others.
# Results go to $OUT (default /tmp/gpu-checks): one .md per part and the combined log.
#
#   bash benchmarks/gpu_checks.sh
#
# Fashion-MNIST for the paper-scale runs: copy /usr/share/datasets/fashion-mnist/*.gz into
# .gpu-data/ in this repository's root first (30 MB; ignored by git: send it along with the
# tree) when the GPU machine has no copy; without it that part reports the missing files and
# the rest runs.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/gpu-checks}"
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_checks.log") 2>&1
PY="${PY:-python3}"  # the python that holds a CUDA torch

part() {  # part NAME SECONDS COMMAND...: one check, its output in $OUT/NAME.md
  local name=$1 limit=$2
  shift 2
  echo "== $name (at most ${limit}s): $*"
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.md" 2>&1
  local rc=$?
  tail -n 60 "$OUT/$name.md"
  echo "== $name: exit $rc after $((SECONDS - t0))s"
  echo
}

nvidia-smi -L || true
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'devices', torch.cuda.device_count(), torch.cuda.get_device_name(0))"
echo

# sparse execution: cuSPARSE CSR and 2:4 semi-structured against dense (issue: sparse execution)
part sparse_gpu 120 $PY benchmarks/sparse_gpu.py
part semi_structured_test 45 $PY -m pytest -q -p no:cacheprovider tests/test_semi_structured.py
# every method for one epoch of CIFAR-shaped data in bf16 (mixed precision on the device)
part methods_bf16 120 $PY benchmarks/gpu_methods.py --precision bf16
# images/s: dense and 90% RigL, fp32 / bf16, eager / compiled, and the presets' wall clocks
part throughput 180 $PY benchmarks/throughput.py --device cuda \
  --variants fp32,bf16,fp32+compile,bf16+compile --compile-models resnet20 --repeats 3
# the smallest paper-scale configuration: the first SC-SDC pair for 5 epochs, data on the GPU
DATA=()
[ -d .gpu-data ] && DATA=(--set "data.root=$PWD/.gpu-data")
part paper_runs 75 $PY benchmarks/paper_runs.py --device cuda --paper tessera2021 --runs 2 \
  --duration 5ep "${DATA[@]}"
# DDP with NCCL needs two devices
if [ "$($PY -c 'import torch; print(torch.cuda.device_count())')" -gt 1 ]; then
  part ddp_nccl 120 $PY -m pytest -q -p no:cacheprovider tests/test_ddp.py
else
  echo "== ddp_nccl: one CUDA device here: the NCCL DDP test needs two (not run)"
fi
echo "results: $OUT"
