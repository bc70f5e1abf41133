#!/bin/bash
# Device run 36 (H200): calibrate with the CPU embedding's backward timed in its two passes (the
# table's zeroing and the step's rows apart, `EmbedZero` beside `EmbedBwd`); this calibration
# becomes the shipped h200.ron; then, under it, the CPU-embedding strategy twice and the
# host-optimizer strategy up to four times (run 27's schedules, 10 steps each, arena), every run
# probing before its first step and after its last.
B=./.carry/offplan
W=$OUT/w
mkdir -p $W/logs $W/r
pack() { tar czf $OUT/out.tar.gz -C $OUT w; }
mkdir -p target/release && cp .carry/offplan target/release/offplan; [ "$PWD" = /work/main ] || { mkdir -p /work && ln -sfn "$PWD" /work/main; }
timeout 170 $B -v calibrate --out $W/h200-calibrated.ron --name h200 > $W/logs/calibrate.txt 2>&1; echo "calibrate rc=$? at ${SECONDS}s"
python3 .carry/merge_profile.py $W/h200-calibrated.ron models/hardware/h200.ron $W/h200.ron && cp $W/h200.ron models/hardware/h200.ron
grep -v INFO $W/logs/calibrate.txt | sed -n '/pinned copies/,/1024 MiB/p;/host ops/,/probe/p;/profile h200/,$p' | cut -c1-200
pack
summ() { grep -E "step \(median" $W/logs/$1.txt | cut -c1-100; grep -E "probe (before|after)" $W/logs/$1.txt | cut -c1-220; }
for i in 1 2; do n=gpt3-125m-cpu-embedding
  timeout 60 $B run .carry/p/$n/schedule.ron --steps 10 --out $W/r/$n-$i > $W/logs/$n-$i.txt 2>&1; echo "$n-$i rc=$? at ${SECONDS}s"; summ $n-$i
done
for i in 1 2 3 4; do n=gpt3-125m-host-optimizer
  timeout 60 $B run .carry/p/$n/schedule.ron --steps 10 --out $W/r/$n-$i > $W/logs/$n-$i.txt 2>&1; echo "$n-$i rc=$? at ${SECONDS}s"; summ $n-$i
done
mkdir -p $W/set; cp $W/r/*/*.ron $W/set/
timeout 60 $B report $W/set --out $W/report > $W/logs/report.txt 2>&1; echo "report rc=$?"
grep -E "^\| [0-9]" $W/report/report.md | cut -d'|' -f5,6,12-16
pack
