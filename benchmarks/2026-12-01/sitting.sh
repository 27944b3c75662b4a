#!/bin/bash
# One sitting: nothing else runs.  Before = /tmp/base (the code at the session's start), after = /work/main.
set -x
cd /tmp/measure
lscpu | grep "Model name" > cpu.txt
for i in 1 2 3; do
  (cd /work/main && moco-ref bench step --out /tmp/measure/step_after_$i.json > /tmp/measure/step_after_$i.txt 2>&1)
  (cd /tmp/base && PYTHONPATH=/tmp/base python -m moco_ref.bench step --out /tmp/measure/step_before_$i.json > /tmp/measure/step_before_$i.txt 2>&1)
done
(cd /work/main && moco-ref bench parts --out /tmp/measure/parts_after.json > /tmp/measure/parts_after.txt 2>&1)
(cd /work/main && moco-ref bench memory --out /tmp/measure/memory_after.json > /tmp/measure/memory_after.txt 2>&1)
(cd /tmp/base && PYTHONPATH=/tmp/base python -m moco_ref.bench memory --out /tmp/measure/memory_before.json > /tmp/measure/memory_before.txt 2>&1)
for i in 1 2 3; do
  (cd /work/main && python /tmp/measure/api_step.py moco_ref-first >> /tmp/measure/api.txt 2>&1)
  (cd /work/main && python /tmp/measure/api_step.py numpy-first >> /tmp/measure/api.txt 2>&1)
done
(cd /work/main && moco-ref bench dp --out /tmp/measure/dp_after.json > /tmp/measure/dp_after.txt 2>&1)
echo finished > /tmp/measure/done
