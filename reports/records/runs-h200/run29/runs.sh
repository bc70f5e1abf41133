#!/bin/bash
# Device run 29 (H200): calibrate again at 6451d25 (run 28's machine showed a noisy duplex copy table and slow host issue).
B=./.carry/offplan
W=$OUT/w
mkdir -p $W/logs
mkdir -p target/release && cp .carry/offplan target/release/offplan; [ "$PWD" = /work/main ] || { mkdir -p /work && ln -sfn "$PWD" /work/main; }
timeout 240 $B -v calibrate --out $W/h200-calibrated.ron --name h200 > $W/logs/calibrate.txt 2>&1; echo "calibrate rc=$?"
python3 .carry/merge_profile.py $W/h200-calibrated.ron models/hardware/h200.ron $W/h200.ron
grep -v INFO $W/logs/calibrate.txt | sed -n "5,13p"; grep -v INFO $W/logs/calibrate.txt | tail -16
tar czf $OUT/out.tar.gz -C $OUT w
