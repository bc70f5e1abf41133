#!/bin/bash
# Device run 35 (H200, at e7e3708): run 34's host-optimizer, noisy twice, taken a third time (the
# issue's rule), and a calibration of this machine.
B=./.carry/offplan
W=$OUT/w
mkdir -p $W/logs $W/r
pack() { tar czf $OUT/out.tar.gz -C $OUT w; }
mkdir -p target/release && cp .carry/offplan target/release/offplan; [ "$PWD" = /work/main ] || { mkdir -p /work && ln -sfn "$PWD" /work/main; }
timeout 60 $B run .carry/p/gpt3-125m-host-optimizer/schedule.ron --steps 10 --out $W/r/gpt3-125m-host-optimizer > $W/logs/gpt3-125m-host-optimizer.txt 2>&1; echo "host-optimizer rc=$? at ${SECONDS}s"
grep -E "step \(median|probe (before|after)" $W/logs/gpt3-125m-host-optimizer.txt | cut -c1-250
pack
timeout 150 $B -v calibrate --out $W/h200-calibrated.ron --name h200 > $W/logs/calibrate.txt 2>&1; echo "calibrate rc=$? at ${SECONDS}s"
python3 .carry/merge_profile.py $W/h200-calibrated.ron models/hardware/h200.ron $W/h200.ron
grep -v INFO $W/logs/calibrate.txt | grep -E "host issue|host function|copies of 1024|host ops' probe|1024 MiB" | cut -c1-200
pack
