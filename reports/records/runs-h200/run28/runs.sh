#!/bin/bash
# Device run 28 (H200): calibrate at HEAD (the embedding's ops on the corpus's tokens, host ops after idle).
B=./.carry/offplan
W=$OUT/w
mkdir -p $W/logs
mkdir -p target/release && cp .carry/offplan target/release/offplan; [ "$PWD" = /work/main ] || { mkdir -p /work && ln -sfn "$PWD" /work/main; }
timeout 240 $B -v calibrate --out $W/h200-calibrated.ron --name h200 > $W/logs/calibrate.txt 2>&1; echo "calibrate rc=$?"
python3 .carry/merge_profile.py $W/h200-calibrated.ron models/hardware/h200.ron $W/h200.ron
grep -v INFO $W/logs/calibrate.txt | grep -E "Embed|GradNorm|queued|in step order|host issue|FLOP-weighted|host AdamW"
timeout 90 $B -v calibrate --model models/configs/gpt3-125m.ron --batch 2 --seq 256 --out $W/h200-125m.ron --name h200 > $W/logs/calibrate-125m.txt 2>&1; echo "calibrate-125m rc=$?"
grep -v INFO $W/logs/calibrate-125m.txt | grep -E "Embed|GradNorm|in step order"
tar czf $OUT/out.tar.gz -C $OUT w
