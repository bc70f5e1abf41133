#!/bin/bash
# Device run 10 (H200): calibrate the H200; check the restructured executor against PyTorch
# (kernels, the reference step) and the offload equivalence test; two planner schedules.
B=./.carry/offplan
W=$OUT/w
mkdir -p $W/logs $W/r
pack() { tar czf $OUT/out.tar.gz -C $OUT w; }
step() { echo "== $1 at ${SECONDS}s"; }
(nproc; free -g; head -5 /proc/meminfo; nvidia-smi; lscpu | head -16; cat /sys/fs/cgroup/memory.max 2>/dev/null) > $W/logs/host.txt 2>&1
step calibrate
timeout 150 $B -v calibrate --out $W/r/h200.ron --name h200 > $W/logs/calibrate.txt 2>&1; echo "calibrate rc=$?"
grep -E "pinning|meminfo|GB/s|TFLOP|launch overhead|fixed overhead" $W/logs/calibrate.txt | head -30; pack
step kernels
(cd executor/reference && timeout 150 python3 test_kernels.py --quick) > $W/logs/kernels.txt 2>&1; echo "kernels rc=$?"
grep -cE "PASS" $W/logs/kernels.txt; grep -E "FAIL|Error|error" $W/logs/kernels.txt | head -5; tail -2 $W/logs/kernels.txt; pack
step reference
timeout 120 $B run --model models/configs/gpt2-124m.ron --steps 3 --out $W/r/ref124 --export /tmp/exp124 > $W/logs/ref124-run.txt 2>&1; echo "ref run rc=$?"
tail -4 $W/logs/ref124-run.txt
(cd executor/reference && timeout 120 python3 gpt_reference.py /tmp/exp124) > $W/logs/ref124-check.txt 2>&1; echo "ref check rc=$?"
grep -cE "PASS" $W/logs/ref124-check.txt; grep -E "FAIL" $W/logs/ref124-check.txt | head -5; tail -3 $W/logs/ref124-check.txt; pack
step equivalence
timeout 200 ./.carry/offload_equivalence --test-threads 1 > $W/logs/equivalence.txt 2>&1; echo "equivalence rc=$?"
grep -E "^test |test result" $W/logs/equivalence.txt | head -20; pack
step schedules
for c in "gpt3-1.3b 16GiB" "gpt3-2.7b 24GiB"; do
  set -- $c
  $B plan --model models/configs/$1.ron --hardware $W/r/h200.ron --budget $2 --out /tmp/p-$1 > $W/logs/plan-$1.txt 2>&1; echo "plan $1 rc=$?"
  timeout 100 $B run /tmp/p-$1/schedule.ron --steps 5 --hardware $W/r/h200.ron --out $W/r/run-$1 > $W/logs/run-$1.txt 2>&1; echo "run $1 rc=$?"
  grep -E "median step|pool USED|device in use|WARNING|error" $W/logs/run-$1.txt | head -6; pack
done
step done
