#!/bin/bash
# Device run 40 (H200): the all-on-GPU steps with their start probe on the empty device (before
# the step's tensors are taken), gpt2-124m and gpt3-1.3b, 10 steps each, as the record set takes them.
B=./.carry/offplan
W=$OUT/w
mkdir -p $W/logs $W/r
mkdir -p target/release && cp .carry/offplan target/release/offplan; [ "$PWD" = /work/main ] || { mkdir -p /work && ln -sfn "$PWD" /work/main; }
for m in gpt2-124m gpt3-1.3b; do
  timeout 120 $B run --model models/configs/$m.ron --hardware models/hardware/h200.ron --steps 10 --out $W/r/gpu-$m > $W/logs/gpu-$m.txt 2>&1; echo "gpu-$m rc=$? at ${SECONDS}s"
  grep -E "median step|probe (before|after)|device peak|pool USED|time to first" $W/logs/gpu-$m.txt | cut -c1-200
done
rm -f $W/r/*/*.png $W/r/*/*.svg
tar czf $OUT/out.tar.gz -C $OUT w
