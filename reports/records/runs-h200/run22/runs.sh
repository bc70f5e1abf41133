#!/bin/bash
# Device run 22 (H200): issue 13's record set, 10 steps each, arena allocator, with probes.
B=./.carry/offplan
H=models/hardware/h200.ron
C=models/configs
W=$OUT/w
mkdir -p $W/logs $W/r
pack() { tar czf $OUT/out.tar.gz -C $OUT w; }
step() { echo "== $1 at ${SECONDS}s"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
free -g | head -2
mkdir -p target/release && cp .carry/offplan target/release/offplan; [ "$PWD" = /work/main ] || { mkdir -p /work && ln -sfn "$PWD" /work/main; }
summ() { grep -E "^step +(1|10|11)/" $W/logs/$1.txt | cut -c1-150; tail -2 $W/logs/$1.txt | cut -c1-200; }
gpu() { step "$1"; timeout 120 $B run --model $C/$2.ron --hardware $H --steps 10 --out $W/r/$1 > $W/logs/$1.txt 2>&1; echo "$1 rc=$?"; summ $1; pack; }
sched() { step "$1"; timeout $2 $B run .carry/p/$1/schedule.ron --steps 10 --out $W/r/$1 > $W/logs/$1.txt 2>&1; echo "$1 rc=$?"; summ $1; pack; }
gpu gpu-gpt2-124m gpt2-124m
gpu gpu-gpt3-1.3b gpt3-1.3b
for d in .carry/p/gpt3-125m-*/; do sched $(basename $d) 60; done
sched gpt3-1.3b-16GiB 90
sched gpt3-1.3b-4GiB 120
sched gpt3-2.7b-24GiB 120
sched gpt3-6.7b-40GiB 150
sched gpt3-6.7b-b1-24GiB 150
sched gpt3-13b-139GiB 200
step done
