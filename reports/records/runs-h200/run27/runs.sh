#!/bin/bash
# Device run 27 (H200, at 0fb0735): calibrate (queued copy latency, host ops, gradient norms, layer 0 in step order), plan with the new profile, issue 13's record set with host-op tables.
B=./.carry/offplan
C=models/configs
W=$OUT/w
mkdir -p $W/logs $W/r $W/p
pack() { tar czf $OUT/out.tar.gz -C $OUT w; }
step() { echo "== $1 at ${SECONDS}s"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
free -g | head -2
mkdir -p target/release && cp .carry/offplan target/release/offplan; [ "$PWD" = /work/main ] || { mkdir -p /work && ln -sfn "$PWD" /work/main; }
step calibrate
timeout 240 $B -v calibrate --out $W/h200-calibrated.ron --name h200 > $W/logs/calibrate.txt 2>&1; echo "calibrate rc=$?"
grep -v INFO $W/logs/calibrate.txt | tail -80
python3 .carry/merge_profile.py $W/h200-calibrated.ron models/hardware/h200.ron $W/h200.ron && cp $W/h200.ron models/hardware/h200.ron
H=models/hardware/h200.ron
pack
plan() { step "plan $1"; timeout 120 $B plan --hardware $H --out $W/p/$1 "${@:2}" > $W/p/$1.txt 2>&1; echo "plan $1 rc=$?"; }
for s in cpu-embedding host-optimizer offload-all "offload-all,host-optimizer,cpu-embedding,stream-output" "offload-first=3,recompute-all" recompute-all stream-output stream-weights streamed-optimizer; do
  n=gpt3-125m-$(echo $s | tr ',=' '+-'); [ ${#n} -gt 40 ] && n=gpt3-125m-mix
  plan $n --model $C/gpt3-125m.ron --batch 2 --seq 256 --budget 40GiB --strategy $s
done
plan gpt3-1.3b-16GiB --model $C/gpt3-1.3b.ron --budget 16GiB
plan gpt3-1.3b-4GiB --model $C/gpt3-1.3b.ron --budget 4GiB
plan gpt3-2.7b-24GiB --model $C/gpt3-2.7b.ron --budget 24GiB
plan gpt3-6.7b-40GiB --model $C/gpt3-6.7b.ron --budget 40GiB
plan gpt3-6.7b-b1-24GiB --model $C/gpt3-6.7b.ron --batch 1 --budget 24GiB
plan gpt3-13b-139GiB --model $C/gpt3-13b.ron --budget 139GiB
pack
summ() { grep -E "^step +(1|10|11)\/" $W/logs/$1.txt | cut -c1-150; grep -E "step \(median|compute busy|issued a timed" $W/logs/$1.txt; sed -n "/^host ops by kind/,/^wrote/p" $W/logs/$1.txt | grep -v "^wrote"; }
gpu() { step "$1"; timeout 120 $B run --model $C/$2.ron --hardware $H --steps 10 --out $W/r/$1 > $W/logs/$1.txt 2>&1; echo "$1 rc=$?"; summ $1; pack; }
sched() { step "$1"; timeout $2 $B run $W/p/$1/schedule.ron --steps 10 --out $W/r/$1 > $W/logs/$1.txt 2>&1; echo "$1 rc=$?"; summ $1; pack; }
gpu gpu-gpt2-124m gpt2-124m
gpu gpu-gpt3-1.3b gpt3-1.3b
for d in $W/p/gpt3-125m-*/; do sched $(basename $d) 60; done
sched gpt3-1.3b-16GiB 90
sched gpt3-1.3b-4GiB 120
sched gpt3-2.7b-24GiB 120
sched gpt3-6.7b-40GiB 150
sched gpt3-6.7b-b1-24GiB 150
sched gpt3-13b-139GiB 200
step calibrate-125m
timeout 90 $B -v calibrate --model $C/gpt3-125m.ron --batch 2 --seq 256 --out $W/h200-125m.ron --name h200 > $W/logs/calibrate-125m.txt 2>&1; echo "calibrate-125m rc=$?"
grep -E "in step order|queued behind|fit:" $W/logs/calibrate-125m.txt | tail -40
pack
step done
