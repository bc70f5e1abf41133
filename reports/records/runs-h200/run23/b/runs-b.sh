#!/bin/bash
# Device run 23b (H200): the equivalence test at this commit (the cost model changed the
# planner's plans), and any record of run 23 to take again (names in .carry/again).
B=./.carry/offplan
C=models/configs
W=$OUT/w
mkdir -p $W/logs $W/r
pack() { tar czf $OUT/out.tar.gz -C $OUT w; }
step() { echo "== $1 at ${SECONDS}s"; }
mkdir -p target/release && cp .carry/offplan target/release/offplan; [ "$PWD" = /work/main ] || { mkdir -p /work && ln -sfn "$PWD" /work/main; }
[ -f .carry/h200.ron ] && cp .carry/h200.ron models/hardware/h200.ron
H=models/hardware/h200.ron
summ() { grep -E "^step +(1|10|11)/" $W/logs/$1.txt | cut -c1-150; grep -E "step \(median|compute busy|issued a timed" $W/logs/$1.txt; }
gpu() { step "$1"; timeout 120 $B run --model $C/$2.ron --hardware $H --steps 10 --out $W/r/$1 > $W/logs/$1.txt 2>&1; echo "$1 rc=$?"; summ $1; pack; }
sched() { step "$1"; timeout $2 $B run .carry/p/$1/schedule.ron --steps 10 --out $W/r/$1 > $W/logs/$1.txt 2>&1; echo "$1 rc=$?"; summ $1; pack; }
[ -f .carry/again ] && . .carry/again
step equivalence
timeout 360 ./.carry/offload_equivalence --test-threads 1 --nocapture > $W/logs/equivalence.txt 2>&1; echo "equivalence rc=$?"
grep -E "^test |test result|panicked" $W/logs/equivalence.txt | cut -c1-200 | head -20; grep -A4 panicked $W/logs/equivalence.txt | head -20; pack
step done
