#!/bin/bash
# One sitting: nothing else runs.  BEFORE names a checkout of the code before the change (required), AFTER the
# code after it (default: this repository).  Every output goes to OUT (default: a new folder from mktemp).
# Run from anywhere:  BEFORE=path/to/old/checkout bash benchmarks/2026-12-01/sitting.sh
set -eux
HERE=$(cd "$(dirname "$0")" && pwd)
AFTER=${AFTER:-$(cd "$HERE/../.." && pwd)}
BEFORE=${BEFORE:?give BEFORE, a checkout of the code before the change}
OUT=${OUT:-$(mktemp -d)}
cd "$OUT"
lscpu | grep "Model name" > cpu.txt
for i in 1 2 3; do
  (cd "$AFTER" && PYTHONPATH=$AFTER moco-ref bench step --out "$OUT/step_after_$i.json" > "$OUT/step_after_$i.txt" 2>&1)
  (cd "$BEFORE" && PYTHONPATH=$BEFORE python -m moco_ref.bench step --out "$OUT/step_before_$i.json" > "$OUT/step_before_$i.txt" 2>&1)
done
(cd "$AFTER" && PYTHONPATH=$AFTER moco-ref bench parts --out "$OUT/parts_after.json" > "$OUT/parts_after.txt" 2>&1)
(cd "$AFTER" && PYTHONPATH=$AFTER moco-ref bench memory --out "$OUT/memory_after.json" > "$OUT/memory_after.txt" 2>&1)
(cd "$BEFORE" && PYTHONPATH=$BEFORE python -m moco_ref.bench memory --out "$OUT/memory_before.json" > "$OUT/memory_before.txt" 2>&1)
for i in 1 2 3; do
  (cd "$AFTER" && PYTHONPATH=$AFTER python "$HERE/api_step.py" moco_ref-first >> "$OUT/api.txt" 2>&1)
  (cd "$AFTER" && PYTHONPATH=$AFTER python "$HERE/api_step.py" numpy-first >> "$OUT/api.txt" 2>&1)
done
(cd "$AFTER" && PYTHONPATH=$AFTER moco-ref bench dp --out "$OUT/dp_after.json" > "$OUT/dp_after.txt" 2>&1)
echo finished > "$OUT/done"
