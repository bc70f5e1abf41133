#!/bin/bash
# Device run 16 (H200): larger probes (256 MiB copies, 64 M parameters of host AdamW, 5 rounds);
# start-up with them, cold kernel cache.
B=./.carry/offplan
W=$OUT/w
mkdir -p $W/logs $W/r
pack() { tar czf $OUT/out.tar.gz -C $OUT w; }
step() { echo "== $1 at ${SECONDS}s"; }
step runs
rm -rf $HOME/.cache/offplan
for c in gpt3-1.3b gpt3-2.7b; do
  timeout 150 $B -v run .carry/s/$c/schedule.ron --steps 10 --hardware models/hardware/h200.ron --out $W/r/$c > $W/logs/run-$c.txt 2>&1; echo "run $c rc=$?"
  grep -E "start-up|probe|moved|median step|step \(median|error|Error|WARN" $W/logs/run-$c.txt | head -8; pack
done
step reference
timeout 120 $B run --model models/configs/gpt2-124m.ron --hardware models/hardware/h200.ron --steps 10 --out $W/r/ref124 > $W/logs/ref124-run.txt 2>&1; echo "ref run rc=$?"
grep -E "start-up|probe|moved|step   10" $W/logs/ref124-run.txt
pack
step done
