#!/bin/bash
# Device run 30 (H200): calibrate with the host ops' probe, then the 9 gpt3-125m strategies of
# run 27 again (their schedules as run 27 planned them), each run probing the host ops too.
B=./.carry/offplan
W=$OUT/w
mkdir -p $W/logs $W/r
pack() { tar czf $OUT/out.tar.gz -C $OUT w; }
mkdir -p target/release && cp .carry/offplan target/release/offplan; [ "$PWD" = /work/main ] || { mkdir -p /work && ln -sfn "$PWD" /work/main; }
timeout 120 $B -v calibrate --out $W/h200-calibrated.ron --name h200 > $W/logs/calibrate.txt 2>&1; echo "calibrate rc=$? at ${SECONDS}s"
python3 .carry/merge_profile.py $W/h200-calibrated.ron models/hardware/h200.ron $W/h200.ron && cp $W/h200.ron models/hardware/h200.ron
grep -v INFO $W/logs/calibrate.txt | sed -n "5,12p"; grep -v INFO $W/logs/calibrate.txt | grep -E "host ops' probe|host issue:"
pack
for d in .carry/p/*/; do n=$(basename $d)
  timeout 60 $B run $d/schedule.ron --steps 10 --out $W/r/$n > $W/logs/$n.txt 2>&1; echo "$n rc=$? at ${SECONDS}s"
  grep -E "step \(median|host ops" $W/logs/$n.txt | cut -c1-200; pack
done
