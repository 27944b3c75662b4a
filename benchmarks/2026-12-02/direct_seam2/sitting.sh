#!/bin/bash
# Issue 27, items 2 and 3: the downsampling direct kernels (3×3 at stride 2, the 1×1 shortcut) against im2col + GEMM,
# layer by layer, the table the rule of backends/numba_fast.py (DIRECT_RULE) is read from.
# Run from the branch's root:  bash benchmarks/2026-12-02/direct_seam2/sitting.sh   (outputs land beside it)
set -u
OUT=$PWD/benchmarks/2026-12-02/direct_seam2
export OPENBLAS_THREAD_TIMEOUT=4  # as `import moco_ref` sets it, for the script that imports NumPy first
stamp() { echo "$(date -u +%H:%M:%S) $1 (load $(cut -d' ' -f1-3 /proc/loadavg))" | tee -a "$OUT/sitting_log.txt"; }
echo "tree: $(git rev-parse --short HEAD) $(git status --short | wc -l) files changed" > "$OUT/sitting_log.txt"
stamp "layers: 3x3/2 and 1x1/2, direct against im2col + GEMM"
PYTHONPATH=$PWD python benchmarks/direct_conv/shapes.py --reps "${REPS:-15}" --kinds 3x3/2,1x1/2 > "$OUT/shapes.txt" 2>&1
stamp "the rows closest to a win, 41 rounds each"
PYTHONPATH=$PWD python benchmarks/2026-12-02/direct_seam2/candidates.py 41 > "$OUT/candidates.txt" 2>&1
stamp "end"
