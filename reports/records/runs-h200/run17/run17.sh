#!/bin/bash
# Device run 17 (H200): AdamW with the host's scalars and explicitly rounded operations (no
# FMA), so host AdamW is bitwise the kernel's: kernels against PyTorch, the reference step, the
# equivalence test (its printed loss differences per strategy).
B=./.carry/offplan
W=$OUT/w
mkdir -p $W/logs $W/r
pack() { tar czf $OUT/out.tar.gz -C $OUT w; }
step() { echo "== $1 at ${SECONDS}s"; }
step kernels
(cd executor/reference && timeout 150 python3 test_kernels.py --quick) > $W/logs/kernels.txt 2>&1; echo "kernels rc=$?"
grep -E "adamw|SUMMARY|FAIL" $W/logs/kernels.txt | head -12; pack
step reference
timeout 120 $B run --model models/configs/gpt2-124m.ron --hardware models/hardware/h200.ron --steps 10 --out $W/r/ref124 --export /tmp/exp124 > $W/logs/ref124-run.txt 2>&1; echo "ref run rc=$?"
(cd executor/reference && timeout 120 python3 gpt_reference.py /tmp/exp124) > $W/logs/ref124-check.txt 2>&1; echo "ref check rc=$?"
grep -cE "PASS" $W/logs/ref124-check.txt; grep -E "FAIL" $W/logs/ref124-check.txt | head -5; tail -2 $W/logs/ref124-check.txt; pack
step equivalence
timeout 200 ./.carry/offload_equivalence --test-threads 1 --nocapture > $W/logs/equivalence.txt 2>&1; echo "equivalence rc=$?"
grep -E "max \|loss diff\||planner|test result" $W/logs/equivalence.txt | head -20; pack
step done
