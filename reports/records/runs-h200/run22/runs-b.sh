#!/bin/bash
# Device run 22b (H200): the three records whose start and end probes moved by more than 5%, again;
# then the equivalence test at today's planner.
B=./.carry/offplan
H=models/hardware/h200.ron
C=models/configs
W=$OUT/w
mkdir -p $W/logs $W/r
pack() { tar czf $OUT/out.tar.gz -C $OUT w; }
step() { echo "== $1 at ${SECONDS}s"; }
mkdir -p target/release && cp .carry/offplan target/release/offplan; [ "$PWD" = /work/main ] || { mkdir -p /work && ln -sfn "$PWD" /work/main; }
summ() { grep -E "^step +(1|10|11)/" $W/logs/$1.txt | cut -c1-150; tail -1 $W/logs/$1.txt | cut -c1-200; }
gpu() { step "$1"; timeout 120 $B run --model $C/$2.ron --hardware $H --steps 10 --out $W/r/$1 > $W/logs/$1.txt 2>&1; echo "$1 rc=$?"; summ $1; pack; }
sched() { step "$1"; timeout $2 $B run .carry/p/$1/schedule.ron --steps 10 --out $W/r/$1 > $W/logs/$1.txt 2>&1; echo "$1 rc=$?"; summ $1; pack; }
gpu gpu-gpt3-1.3b gpt3-1.3b
sched gpt3-125m-host-optimizer 60
sched gpt3-6.7b-40GiB 150
step equivalence
timeout 330 ./.carry/offload_equivalence --test-threads 1 --nocapture > $W/logs/equivalence.txt 2>&1; echo "equivalence rc=$?"
grep -E "^test |test result|panicked" $W/logs/equivalence.txt | cut -c1-200 | head -20; grep -A4 panicked $W/logs/equivalence.txt | head -20; pack
step done
