#!/bin/bash
# Device run 38 (H200, at 336c928): the whole H200 record set under the shipped h200.ron (run
# 37's calibration), every run probing before its first step and after its last, the probes now
# with host AdamW beside copies (host_sharing): the all-on-GPU steps of gpt2-124m and gpt3-1.3b, the 9 gpt3-125m strategies of the
# equivalence test (run 27's schedules) and the planner's 6 plans (run 33's), 10 steps each,
# arena; a run whose probes moved more than 5% (`offplan report` says "run it again") is taken
# again, at most twice more, the rule.
B=./.carry/offplan
C=models/configs
H=models/hardware/h200.ron
W=$OUT/w
mkdir -p $W/logs $W/r $W/r2 $W/set
pack() { tar czf $OUT/out.tar.gz -C $OUT w; }
mkdir -p target/release && cp .carry/offplan target/release/offplan; [ "$PWD" = /work/main ] || { mkdir -p /work && ln -sfn "$PWD" /work/main; }
pack
summ() { grep -E "step \(median" $W/logs/$1.txt | cut -c1-100; grep -E "^probe" $W/logs/$1.txt | grep -oE "beside host AdamW.*" | cut -c1-120; }
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
timeout 90 $B report $W/set --out $W/report2 > $W/logs/report2.txt 2>&1; echo "report2 rc=$?"
mkdir -p $W/r3
for n in $(echo "${!SRC[@]}" | tr ' ' '\n' | sort); do
  f=$(ls $W/r2/$n/*.ron 2>/dev/null | head -1); [ -n "$f" ] || continue
  if grep -F "$(basename $f)" $W/report2/report.md | grep -q "run it again"; then
    one $n ${SRC[$n]} ${TO[$n]} $W/r3 "-third"
    g=$(ls $W/r3/$n/*.ron 2>/dev/null | head -1); [ -n "$g" ] && rm $W/set/$(basename $f) && cp $g $W/set/
  fi
done
timeout 90 $B report $W/set --out $W/report > $W/logs/report.txt 2>&1; echo "report rc=$?"
grep -E "^\| [0-9]" $W/report/report.md | cut -d'|' -f5,6,12-16
pack
