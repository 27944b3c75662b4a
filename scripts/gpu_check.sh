#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU and CuPy (cupy-cuda12x or cupy-cuda13x), run
#   1. the GPU tests (NumPy/CuPy parity, float64 gradient checks on the GPU) and the CPU-side guard,
#   2. one short epoch of `moco-ref train --backend cupy` on the built-in data, then eval knn, a short
#      eval linear and export on that checkpoint, all on CuPy,
#   3. the GPU benchmark (CIFAR demo config, ours vs PyTorch eager, float32 and TF32),
#   4. where our GPU step's time goes (the `parts` suite on CuPy, CIFAR demo config, float32),
#   5. data parallel on the GPU, where mpi4py and mpiexec are there: 2 processes sharing the GPU through the
#      host-staged MPI path, then NCCL if there are 2 GPUs, each compared with one process and --bn-splits 2,
# writing everything to one results file. Usage: scripts/gpu_check.sh [RESULTS_DIR]  (default: $OUT or gpu-results)
# Needs no network and no install: it runs from the checkout with PYTHONPATH (numpy, pillow, click, pytest,
# hypothesis, cupy and torch must already be there, as on the lent GPU machines). About 2 minutes on an H200;
# each part has its own time limit, so one stuck part cannot eat the others' time.
set -uo pipefail
cd "$(dirname "$0")/.."
dir=${1:-${OUT:-gpu-results}}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
results="$dir/gpu_results.txt"
run_dir=$(mktemp -d)/run          # checkpoints stay out of RESULTS_DIR (they are large)
py=${PYTHON:-python3}
moco() { "$py" -m moco_ref "$@"; }
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 CUPY_TF32=0
status=0
exec > >(tee "$results") 2>&1   # everything below goes to the terminal and to the results file
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit + uncommitted changes"
echo "# moco-ref GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $commit"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$py" - <<'PY'
import numpy
try:
    import cupy
    print("cupy", cupy.__version__, "| CUDA runtime", cupy.cuda.runtime.runtimeGetVersion(), end=" | ")
except Exception as error:  # reported, not fatal: the parts below say what they could not do
    print(f"CuPy is not usable here ({error})", end=" | ")
try:
    import torch
    print("torch", torch.__version__, end=" | ")
except ImportError:
    print("no torch", end=" | ")
print("numpy", numpy.__version__)
PY

echo; echo "## 1. GPU tests and the CPU-side guard"
SECONDS=0
timeout 150 "$py" -m pytest tests/gpu tests/test_device_guard.py -q -rs --tb=short -p no:cacheprovider || status=1
echo "(part 1: ${SECONDS} s)"

echo; echo "## 2. One short epoch on CuPy (built-in data, resnet18 width 32, batch 256), then eval and export"
SECONDS=0
if timeout 150 "$py" -m moco_ref train --backend cupy --arch resnet18 --width 32 -b 256 --epochs 1 \
        --knn-every 1 --log-every 2 --out "$run_dir"; then
    tail -n 2 "$run_dir/metrics.jsonl"
    timeout 60 "$py" -m moco_ref eval knn --checkpoint "$run_dir" --backend cupy || status=1
    timeout 60 "$py" -m moco_ref eval linear --checkpoint "$run_dir" --epochs 2 --backend cupy || status=1
    timeout 60 "$py" -m moco_ref export --checkpoint "$run_dir" --out "$run_dir/encoder.npz" || status=1
else
    status=1
fi
echo "(part 2: ${SECONDS} s)"

echo; echo "## 3. GPU benchmark: CIFAR demo config (resnet18 w64, batch 512, K 4096, 32x32), ours vs PyTorch"
SECONDS=0
timeout 200 "$py" -m moco_ref bench gpu --out "$dir/gpu_bench.json" --force || status=1
echo "(part 3: ${SECONDS} s)"

echo; echo "## 4. Where our GPU step's time goes (float32)"
SECONDS=0
timeout 90 "$py" -m moco_ref bench gpu --parts || status=1
echo "(part 4: ${SECONDS} s)"
echo; echo "## 5. Data parallel on the GPU (resnet10 w8, batch 64, float64, 4 steps), against one process"
SECONDS=0
mpiexec_bin=$(dirname "$(command -v "$py")")/mpiexec; [ -x "$mpiexec_bin" ] || mpiexec_bin=$(command -v mpiexec || true)
if [ -z "$mpiexec_bin" ] || ! "$py" -c "import mpi4py" 2>/dev/null; then
    echo "skipped: needs mpi4py and mpiexec (pip install 'moco-ref[mpi]')"
else
    quick=(--backend cupy --dtype float64 --width 8 -b 64 --moco-k 256 --knn-every 0 --epochs 1 --max-steps 4 --log-every 1)
    timeout 120 "$py" -m moco_ref train "${quick[@]}" --bn-splits 2 --out "$run_dir-one" || status=1
    gpus=$("$py" -c "import cupy; print(cupy.cuda.runtime.getDeviceCount())" 2>/dev/null || echo 0)
    for comm in mpi nccl; do
        if [ "$comm" = nccl ] && [ "$gpus" -lt 2 ]; then echo "NCCL: skipped, $gpus GPU(s) (one GPU per process)"; continue; fi
        MOCO_REF_COMM=$comm OPENBLAS_NUM_THREADS=1 timeout 180 "$mpiexec_bin" -n 2 "$py" -m moco_ref train \
            "${quick[@]}" --bn-splits 1 --out "$run_dir-$comm" || { status=1; continue; }
        "$py" - "$run_dir-one" "$run_dir-$comm" "$comm" <<'PY' || status=1
import json, sys
from moco_ref.run.checkpoint import load_checkpoint
from moco_ref.tools.gradcheck import relative_error
(one, _), (two, _) = (load_checkpoint(f"{d}/checkpoint_last.npz") for d in sys.argv[1:3])
worst = max((relative_error(two[n], one[n])[0], n) for n in one)
rate = [json.loads(l) for l in open(f"{sys.argv[2]}/metrics.jsonl") if '"step"' in l][-1]["images_per_s"]
print(f"{sys.argv[3]}: 2 processes vs 1 process with 2 BN splits: worst relative difference {worst[0]:.2e} "
      f"({worst[1]}); {rate:.0f} images/s")
sys.exit(0 if worst[0] <= 1e-9 else 1)
PY
    done
fi
echo "(part 5: ${SECONDS} s)"
echo; echo "gpu_check status: $status (results in $results)"
exit $status
