#!/bin/bash
# Device run 27c (H200, the binary of 0fb0735): gpt3-6.7b at 24 GiB (batch 1) again, whose run-27 probes moved 6.5%.
B=./.carry/offplan
W=$OUT/w
mkdir -p $W/logs $W/r
mkdir -p target/release && cp .carry/offplan target/release/offplan; [ "$PWD" = /work/main ] || { mkdir -p /work && ln -sfn "$PWD" /work/main; }
timeout 200 $B run .carry/p6/schedule.ron --steps 10 --out $W/r/gpt3-6.7b-b1-24GiB > $W/logs/gpt3-6.7b-b1-24GiB.txt 2>&1; echo "rc=$?"
grep -E "step \(median|probe|moved" $W/logs/gpt3-6.7b-b1-24GiB.txt
tar czf $OUT/out.tar.gz -C $OUT w
