#!/bin/bash
# Issue 27, item 2: direct convolutions behind the seam, before (main's code) and after (this branch), in one
# sitting on a quiet machine.  Run from the branch's root:  bash benchmarks/2026-12-02/direct_seam/sitting.sh
# MAIN names a checkout of the "before" code (required).  Every output lands beside this script; the
# default runs' directories go to a new folder from mktemp.
set -u
AFTER=$PWD
MAIN=${MAIN:?give MAIN, a checkout of the code before the change}
SCRATCH=$(mktemp -d)  # the default runs' directories
OUT=$AFTER/benchmarks/2026-12-02/direct_seam
export OPENBLAS_THREAD_TIMEOUT=4  # as `import moco_ref` sets it, for the script that imports NumPy first
stamp() { echo "$(date -u +%H:%M:%S) $1 (load $(cut -d' ' -f1-3 /proc/loadavg))" | tee -a "$OUT/sitting_log.txt"; }
echo "before: $MAIN at $(git -C "$MAIN" rev-parse --short HEAD); after: $(git rev-parse --short HEAD)" > "$OUT/sitting_log.txt"

stamp "layers: direct against im2col + GEMM and PyTorch"
PYTHONPATH=$AFTER python benchmarks/direct_conv/shapes.py --reps 9 --torch > "$OUT/shapes.txt" 2>&1
for round in 1 2; do  # before and after alternating
  stamp "step before $round"
  PYTHONPATH=$MAIN moco-ref bench step --out "$OUT/step_before_$round.json" --force > "$OUT/step_before_$round.txt" 2>&1
  stamp "step after $round"
  PYTHONPATH=$AFTER moco-ref bench step --out "$OUT/step_after_$round.json" --force > "$OUT/step_after_$round.txt" 2>&1
done
stamp "parts before"
PYTHONPATH=$MAIN moco-ref bench parts --out "$OUT/parts_before.json" --force > "$OUT/parts_before.txt" 2>&1
stamp "parts after"
PYTHONPATH=$AFTER moco-ref bench parts --out "$OUT/parts_after.json" --force > "$OUT/parts_after.txt" 2>&1
stamp "memory after"
PYTHONPATH=$AFTER moco-ref bench memory --out "$OUT/memory_after.json" --force > "$OUT/memory_after.txt" 2>&1
for which in before after; do
  stamp "default run $which"
  tree=$MAIN; [ "$which" = after ] && tree=$AFTER
  mkdir -p "$SCRATCH/default_run_$which"  # its run directory goes under runs/ there
  (cd "$SCRATCH/default_run_$which" && PYTHONPATH=$tree /usr/bin/time -v moco-ref train > "$OUT/train_$which.txt" 2>&1)
done
stamp "end"
