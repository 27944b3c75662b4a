#!/bin/bash
# The second part of the sitting: the after runs again with the rule read off the quiet layer table (shapes.txt):
# direct where C·O ≤ 32·32 and the image is at least 16 wide.  Before and after alternate once more for the step.
set -u
AFTER=$PWD
MAIN=${MAIN:?give MAIN, a checkout of the code before the change}
SCRATCH=$(mktemp -d)  # the default runs' directories
OUT=$AFTER/benchmarks/2026-12-02/direct_seam
export OPENBLAS_THREAD_TIMEOUT=4
stamp() { echo "$(date -u +%H:%M:%S) $1 (load $(cut -d' ' -f1-3 /proc/loadavg))" | tee -a "$OUT/sitting_log.txt"; }
echo "second part: after = $(git rev-parse --short HEAD) (rule: C·O ≤ 1024, width ≥ 16)" >> "$OUT/sitting_log.txt"
stamp "warm the Numba cache of the after tree"
(cd "$SCRATCH" && PYTHONPATH=$AFTER moco-ref train --max-steps 1 --knn-every 0 --out "$SCRATCH/warm_after" > /dev/null 2>&1)
for round in 3 4; do
  stamp "step after $round"
  PYTHONPATH=$AFTER moco-ref bench step --out "$OUT/step_after_$round.json" --force > "$OUT/step_after_$round.txt" 2>&1
  stamp "step before $round"
  PYTHONPATH=$MAIN moco-ref bench step --out "$OUT/step_before_$round.json" --force > "$OUT/step_before_$round.txt" 2>&1
done
stamp "parts after (rule 2)"
PYTHONPATH=$AFTER moco-ref bench parts --out "$OUT/parts_after2.json" --force > "$OUT/parts_after2.txt" 2>&1
stamp "memory after (rule 2)"
PYTHONPATH=$AFTER moco-ref bench memory --out "$OUT/memory_after2.json" --force > "$OUT/memory_after2.txt" 2>&1
stamp "default run after (rule 2)"
mkdir -p "$SCRATCH/default_run_after2"
(cd "$SCRATCH/default_run_after2" && PYTHONPATH=$AFTER /usr/bin/time -v moco-ref train > "$OUT/train_after2.txt" 2>&1)
stamp "end"
