#!/bin/bash
# Device run 32a (H200): the probe and calibrate now time layer 0's ops issued in step order and
# scale the back-to-back issue costs by it. Calibrate (its profile becomes the shipped one, as in
# run 30), then the all-on-GPU steps and the 9 gpt3-125m strategies (run 27's schedules).
B=./.carry/offplan
C=models/configs
W=$OUT/w
mkdir -p $W/logs $W/r
pack() { tar czf $OUT/out.tar.gz -C $OUT w; }
mkdir -p target/release && cp .carry/offplan target/release/offplan; [ "$PWD" = /work/main ] || { mkdir -p /work && ln -sfn "$PWD" /work/main; }
timeout 150 $B -v calibrate --out $W/h200-calibrated.ron --name h200 > $W/logs/calibrate.txt 2>&1; echo "calibrate rc=$? at ${SECONDS}s"
python3 .carry/merge_profile.py $W/h200-calibrated.ron models/hardware/h200.ron $W/h200.ron && cp $W/h200.ron models/hardware/h200.ron
grep -v INFO $W/logs/calibrate.txt | grep -E "host issue|step order" | cut -c1-200
H=models/hardware/h200.ron
pack
summ() { grep -E "step \(median|issued a timed|probe (before|after)" $W/logs/$1.txt | cut -c1-200; }
for m in gpt2-124m gpt3-1.3b; do
  timeout 120 $B run --model $C/$m.ron --hardware $H --steps 10 --out $W/r/gpu-$m > $W/logs/gpu-$m.txt 2>&1; echo "gpu-$m rc=$? at ${SECONDS}s"; summ gpu-$m
done
for d in .carry/p/*/; do n=$(basename $d)
  timeout 60 $B run $d/schedule.ron --steps 10 --out $W/r/$n > $W/logs/$n.txt 2>&1; echo "$n rc=$? at ${SECONDS}s"; summ $n
done
mkdir -p $W/set; cp $W/r/*/*.ron $W/set/
timeout 60 $B report $W/set --out $W/report > $W/logs/report.txt 2>&1; echo "report rc=$?"
grep -E "^\| [0-9]" $W/report/report.md | cut -d'|' -f3,5,12-16
pack
