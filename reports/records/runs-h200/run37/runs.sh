#!/bin/bash
# Device run 37 (H200, at c76a517): calibrate with the CPU embedding's host ops timed on pinned
# huge-page memory as a run keeps them, its backward in two passes (EmbedZero beside EmbedBwd);
# this calibration becomes the shipped h200.ron. Then the whole H200 record set under it, every
# run probing before its first step and after its last (the host-ops probe now on pinned memory
# too): the all-on-GPU steps of gpt2-124m and gpt3-1.3b, the 9 gpt3-125m strategies of the
# equivalence test (run 27's schedules) and the planner's 6 plans (run 33's), 10 steps each,
# arena; a run whose probes moved more than 5% (`offplan report` says "run it again") is taken
# once more, the rule.
B=./.carry/offplan
C=models/configs
H=models/hardware/h200.ron
W=$OUT/w
mkdir -p $W/logs $W/r $W/r2 $W/set
pack() { tar czf $OUT/out.tar.gz -C $OUT w; }
mkdir -p target/release && cp .carry/offplan target/release/offplan; [ "$PWD" = /work/main ] || { mkdir -p /work && ln -sfn "$PWD" /work/main; }
timeout 170 $B -v calibrate --out $W/h200-calibrated.ron --name h200 > $W/logs/calibrate.txt 2>&1; echo "calibrate rc=$? at ${SECONDS}s"
python3 .carry/merge_profile.py $W/h200-calibrated.ron $H $W/h200.ron && cp $W/h200.ron $H
grep -v INFO $W/logs/calibrate.txt | sed -n '/pinned copies/,/1024 MiB/p;/host ops/,/probe/p;/profile h200/,$p' | cut -c1-200
pack
summ() { grep -E "step \(median" $W/logs/$1.txt | cut -c1-100; }
one() { # name, schedule or model, timeout, out dir, log suffix
  if [ -f "$2" ]; then timeout $3 $B run $2 --steps 10 --out $4/$1 > $W/logs/$1$5.txt 2>&1
  else timeout $3 $B run --model $C/$2.ron --hardware $H --steps 10 --out $4/$1 > $W/logs/$1$5.txt 2>&1; fi
  echo "$1$5 rc=$? at ${SECONDS}s"; summ $1$5
}
declare -A SRC TO
for m in gpt2-124m gpt3-1.3b; do SRC[gpu-$m]=$m; TO[gpu-$m]=120; done
for d in .carry/p/*/ .carry/p33/*/; do n=$(basename $d); SRC[$n]=$d/schedule.ron; TO[$n]=150; done
for n in $(echo "${!SRC[@]}" | tr ' ' '\n' | sort); do one $n ${SRC[$n]} ${TO[$n]} $W/r ""; cp $W/r/$n/*.ron $W/set/ 2>/dev/null; done
pack
timeout 90 $B report $W/set --out $W/report1 > $W/logs/report1.txt 2>&1; echo "report1 rc=$?"
grep -E "^\| [0-9]" $W/report1/report.md | cut -d'|' -f5,6,12-16
for n in $(echo "${!SRC[@]}" | tr ' ' '\n' | sort); do
  f=$(ls $W/r/$n/*.ron 2>/dev/null | head -1); [ -n "$f" ] || continue
  if grep -F "$(basename $f)" $W/report1/report.md | grep -q "run it again"; then
    one $n ${SRC[$n]} ${TO[$n]} $W/r2 "-again"
    g=$(ls $W/r2/$n/*.ron 2>/dev/null | head -1); [ -n "$g" ] && rm $W/set/$(basename $f) && cp $g $W/set/
  fi
done
timeout 90 $B report $W/set --out $W/report > $W/logs/report.txt 2>&1; echo "report rc=$?"
grep -E "^\| [0-9]" $W/report/report.md | cut -d'|' -f5,6,12-16
pack
