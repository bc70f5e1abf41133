#!/bin/bash
# Device run 14 (H200): pinning as huge-page mappings registered with the driver; flash attention
# built for the run's head size only.
B=./.carry/offplan
W=$OUT/w
mkdir -p $W/logs $W/r
pack() { tar czf $OUT/out.tar.gz -C $OUT w; }
step() { echo "== $1 at ${SECONDS}s"; }
(nproc; free -g; ls -laL /usr/local/cuda/lib64/libnvrtc* /usr/local/cuda/lib64/libcublasLt.so* 2>&1; df -h / /usr/local/cuda 2>&1; mount | grep -E " / | /usr" ) > $W/logs/host.txt 2>&1
cat /sys/kernel/mm/transparent_hugepage/enabled /sys/kernel/mm/transparent_hugepage/defrag >> $W/logs/host.txt 2>&1; tail -2 $W/logs/host.txt
step kernels
(cd executor/reference && timeout 150 python3 test_kernels.py --quick) > $W/logs/kernels.txt 2>&1; echo "kernels rc=$?"
grep -E "SUMMARY|FAIL" $W/logs/kernels.txt | head -6
step startup-1.3b
rm -rf $HOME/.cache/offplan
for k in cold warm; do
  timeout 120 $B -vv run .carry/s/gpt3-1.3b/schedule.ron --steps 3 --hardware models/hardware/h200.ron --out $W/r/run-1.3b-$k > $W/logs/run-1.3b-$k.txt 2>&1; echo "run 1.3b $k rc=$?"
  grep -E "start-up|NVRTC|compiled |pinned|read |median step|error|Error" $W/logs/run-1.3b-$k.txt | head -16
done
pack
step startup-6.7b
rm -rf $HOME/.cache/offplan
timeout 200 $B -v run .carry/s/gpt3-6.7b/schedule.ron --steps 3 --hardware models/hardware/h200.ron --out $W/r/run-6.7b-cold > $W/logs/run-6.7b-cold.txt 2>&1; echo "run 6.7b rc=$?"
grep -E "start-up|pinned|median step|error|Error" $W/logs/run-6.7b-cold.txt | head -6; pack
step equivalence
timeout 200 ./.carry/offload_equivalence --test-threads 1 > $W/logs/equivalence.txt 2>&1; echo "equivalence rc=$?"
grep -E "^test |test result" $W/logs/equivalence.txt | head -20; pack
step calibrate
timeout 170 $B -v calibrate --out $W/r/h200-run14.ron --name h200 > $W/logs/calibrate.txt 2>&1; echo "calibrate rc=$?"
grep -E "pinning" $W/logs/calibrate.txt | head -4; pack
step done
