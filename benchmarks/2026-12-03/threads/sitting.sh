#!/bin/bash
# The before/after sitting of 2026-12-03 (issue 27): "before" is 48c2df4 (Numba's workqueue threads), "after" this
# commit (OpenMP's threads with GOMP_SPINCOUNT=10000, the two-plane ∂W).  Run from the repository root, nothing else
# running:  BEFORE=/path/to/a/worktree/at/48c2df4 bash benchmarks/2026-12-03/threads/sitting.sh
set -u
out=benchmarks/2026-12-03/threads
log=$out/sitting_log.txt
: > "$log"
stamp() { echo "$(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg) $*" >> "$log"; }
for i in 1 2 3; do
  stamp "step after $i";  moco-ref bench step --out "$out/step_after_$i.json" --force > "$out/step_after_$i.txt" 2>&1
  stamp "step before $i"; (cd "$BEFORE" && PYTHONPATH="$BEFORE" python -m moco_ref.bench step --out "/tmp/step_before_$i.json" --force) > "$out/step_before_$i.txt" 2>&1
  cp "/tmp/step_before_$i.json" "$out/step_before_$i.json"
done
stamp "parts after";  moco-ref bench parts --out "$out/parts_after.json" --force > "$out/parts_after.txt" 2>&1
stamp "memory after"; moco-ref bench memory --out "$out/memory_after.json" --force > "$out/memory_after.txt" 2>&1
stamp "train after, fresh Numba cache"
run=$(mktemp -d)
( cd "$run" && NUMBA_CACHE_DIR="$run/cache" /usr/bin/time -f "%e s wall, %U s user, %M KB peak RSS" moco-ref train --out "$run/run" ) > "$out/train_after_cold.txt" 2>&1
stamp "train after, warm cache"
( cd "$run" && NUMBA_CACHE_DIR="$run/cache" /usr/bin/time -f "%e s wall, %U s user, %M KB peak RSS" moco-ref train --out "$run/run2" ) > "$out/train_after_warm.txt" 2>&1
stamp "train before (workqueue: the layer 48c2df4 chose), warm cache"
( cd "$run" && NUMBA_CACHE_DIR="$run/cache" NUMBA_THREADING_LAYER=workqueue /usr/bin/time -f "%e s wall, %U s user, %M KB peak RSS" moco-ref train --out "$run/run3" ) > "$out/train_workqueue_warm.txt" 2>&1
stamp "done"
rm -rf "$run"
