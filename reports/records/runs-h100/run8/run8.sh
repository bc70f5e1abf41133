#!/bin/bash
# Device run 8 (commit 055133e): calibrate writes host_sharing and host_adam_call_overhead; the
# schedules again on this instance, and two run 4 configs.
B=./.carry/offplan
mkdir -p $OUT/w/r $OUT/w/logs
pack() { tar czf $OUT/out.tar.gz -C $OUT/w r logs; }
(nproc; cat /proc/loadavg; lscpu; free -g; cat /sys/kernel/mm/transparent_hugepage/enabled) > $OUT/w/logs/host.txt 2>&1
cal() {
  timeout 120 $B calibrate --out $OUT/w/r/$1.ron > $OUT/w/logs/$1.txt 2>&1; echo "$1 rc=$? ${SECONDS}s"
  grep -A8 "host AdamW on pinned memory beside" $OUT/w/logs/$1.txt; grep "check:" $OUT/w/logs/$1.txt | cut -c1-200; pack
}
run() {
  n=$1; t=$2; shift 2
  echo "== $n $*"
  s=${n%%_*}
  timeout $t $B run .carry/sched/$s/schedule.ron --steps 10 --out $OUT/w/r/$n "$@" > $OUT/w/logs/run-$n.txt 2>&1; echo "rc=$? ${SECONDS}s $(cat /proc/loadavg)"
  grep -E "median of|host work|host-to-device busy|device-to-host busy|compute waiting" $OUT/w/logs/run-$n.txt | cut -c1-120
  pack
}
cal calibrate
run gpt2-124m-1.65GiB_a 60
run gpt3-2.7b-24GiB 150
run gpt2-124m-1.65GiB_b 60
run gpt2-774m-8GiB 90
run gpt3-1.3b-4GiB 120
run gpt2-124m-1.65GiB_c 60
run gpt3-6.7b-40GiB 230
