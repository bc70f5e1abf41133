#!/bin/bash
# Device run 15 (H200): the runs' probes; the reference step after the head-size-only attention
# build; the equivalence test.
B=./.carry/offplan
W=$OUT/w
mkdir -p $W/logs $W/r
pack() { tar czf $OUT/out.tar.gz -C $OUT w; }
step() { echo "== $1 at ${SECONDS}s"; }
step runs
for c in gpt3-1.3b gpt3-2.7b; do
  timeout 150 $B -v run .carry/s/$c/schedule.ron --steps 10 --hardware models/hardware/h200.ron --out $W/r/$c > $W/logs/run-$c.txt 2>&1; echo "run $c rc=$?"
  grep -E "start-up|probe|moved|median step|step \(median|error|Error|WARN" $W/logs/run-$c.txt | head -8; pack
done
step reference
timeout 120 $B run --model models/configs/gpt2-124m.ron --steps 10 --out $W/r/ref124 --export /tmp/exp124 > $W/logs/ref124-run.txt 2>&1; echo "ref run rc=$?"
grep -E "start-up|probe|moved|step   10" $W/logs/ref124-run.txt
(cd executor/reference && timeout 120 python3 gpt_reference.py /tmp/exp124) > $W/logs/ref124-check.txt 2>&1; echo "ref check rc=$?"
grep -cE "PASS" $W/logs/ref124-check.txt; grep -E "FAIL" $W/logs/ref124-check.txt | head -5; tail -2 $W/logs/ref124-check.txt; pack
step equivalence
timeout 200 ./.carry/offload_equivalence --test-threads 1 > $W/logs/equivalence.txt 2>&1; echo "equivalence rc=$?"
grep -E "test result" $W/logs/equivalence.txt | head -3; pack
step done
