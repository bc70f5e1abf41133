#!/bin/bash
# Device run 33 (H200): calibrate with the host lane's hand-off (a host function between two
# kernels that wait on it), every run probing it too; then the whole H200 record set: the
# all-on-GPU steps, the 9 gpt3-125m strategies (run 27's schedules) and the planner's plans,
# planned here under this calibration. 10 steps each, arena.
B=./.carry/offplan
C=models/configs
W=$OUT/w
mkdir -p $W/logs $W/r $W/p
pack() { tar czf $OUT/out.tar.gz -C $OUT w; }
mkdir -p target/release && cp .carry/offplan target/release/offplan; [ "$PWD" = /work/main ] || { mkdir -p /work && ln -sfn "$PWD" /work/main; }
timeout 150 $B -v calibrate --out $W/h200-calibrated.ron --name h200 > $W/logs/calibrate.txt 2>&1; echo "calibrate rc=$? at ${SECONDS}s"
python3 .carry/merge_profile.py $W/h200-calibrated.ron models/hardware/h200.ron $W/h200.ron && cp $W/h200.ron models/hardware/h200.ron
grep -v INFO $W/logs/calibrate.txt | grep -E "host issue|step order|host function|copies of 1024" | cut -c1-200
H=models/hardware/h200.ron
pack
summ() { grep -E "step \(median|issued a timed" $W/logs/$1.txt | cut -c1-120; grep -E "probe (before|after)" $W/logs/$1.txt | grep -oE "issue .*" ; }
for m in gpt2-124m gpt3-1.3b; do
  timeout 120 $B run --model $C/$m.ron --hardware $H --steps 10 --out $W/r/gpu-$m > $W/logs/gpu-$m.txt 2>&1; echo "gpu-$m rc=$? at ${SECONDS}s"; summ gpu-$m
done
for d in .carry/p/*/; do n=$(basename $d)
  timeout 60 $B run $d/schedule.ron --steps 10 --out $W/r/$n > $W/logs/$n.txt 2>&1; echo "$n rc=$? at ${SECONDS}s"; summ $n
done
mkdir -p $W/set; cp $W/r/*/*.ron $W/set/
timeout 60 $B report $W/set --out $W/report-small > $W/logs/report-small.txt 2>&1; echo "report rc=$?"
grep -E "^\| [0-9]" $W/report-small/report.md | cut -d'|' -f5,12-16
pack
plan() { timeout 120 $B plan --hardware $H --out $W/p/$1 "${@:2}" > $W/p/$1.txt 2>&1; echo "plan $1 rc=$? at ${SECONDS}s"; }
plan gpt3-1.3b-16GiB --model $C/gpt3-1.3b.ron --budget 16GiB
plan gpt3-1.3b-4GiB --model $C/gpt3-1.3b.ron --budget 4GiB
plan gpt3-2.7b-24GiB --model $C/gpt3-2.7b.ron --budget 24GiB
plan gpt3-6.7b-40GiB --model $C/gpt3-6.7b.ron --budget 40GiB
plan gpt3-6.7b-b1-24GiB --model $C/gpt3-6.7b.ron --batch 1 --budget 24GiB
plan gpt3-13b-139GiB --model $C/gpt3-13b.ron --budget 139GiB
pack
for n in gpt3-1.3b-16GiB gpt3-1.3b-4GiB gpt3-2.7b-24GiB gpt3-6.7b-40GiB gpt3-6.7b-b1-24GiB gpt3-13b-139GiB; do
  [ -f $W/p/$n/schedule.ron ] || continue
  timeout 150 $B run $W/p/$n/schedule.ron --steps 10 --out $W/r/$n > $W/logs/$n.txt 2>&1; echo "$n rc=$? at ${SECONDS}s"; summ $n
  cp $W/r/$n/*.ron $W/set/; pack
done
timeout 90 $B report $W/set --out $W/report > $W/logs/report.txt 2>&1; echo "report rc=$?"
grep -E "^\| [0-9]" $W/report/report.md | cut -d'|' -f5,6,12-16
pack
