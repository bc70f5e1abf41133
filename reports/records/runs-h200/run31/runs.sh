#!/bin/bash
# Device run 31 (H200, at 0eb2864): the 9 gpt3-125m strategies of run 27's schedules again, each
# 10 steps (arena); `offplan report` under the shipped profile flags any whose probes moved >5%,
# and those are run once more (the rule). Then the equivalence test at this commit.
B=./.carry/offplan
W=$OUT/w
mkdir -p $W/logs $W/r $W/r2
pack() { tar czf $OUT/out.tar.gz -C $OUT w; }
mkdir -p target/release && cp .carry/offplan target/release/offplan; [ "$PWD" = /work/main ] || { mkdir -p /work && ln -sfn "$PWD" /work/main; }
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu --format=csv > $W/logs/gpu.txt
for d in .carry/p/*/; do n=$(basename $d)
  timeout 60 $B run $d/schedule.ron --steps 10 --out $W/r/$n > $W/logs/$n.txt 2>&1; echo "$n rc=$? at ${SECONDS}s"
  grep -E "step \(median" $W/logs/$n.txt | cut -c1-160
done
mkdir -p $W/set; cp $W/r/*/*.ron $W/set/ 2>/dev/null; ls $W/set | head -20
timeout 60 $B report $W/set --out $W/report > $W/logs/report.txt 2>&1; echo "report rc=$?"
grep -E "^\| [0-9]" $W/report/report.md | cut -d'|' -f3,5,12-16
pack
# the rule: a run whose probes moved more than 5% is run again
for d in .carry/p/*/; do n=$(basename $d)
  f=$(ls $W/r/$n/*.ron 2>/dev/null | head -1); [ -n "$f" ] || continue
  if grep -F "$(basename $f)" $W/report/report.md | grep -q "run it again"; then
    timeout 60 $B run $d/schedule.ron --steps 10 --out $W/r2/$n > $W/logs/$n-again.txt 2>&1; echo "again $n rc=$? at ${SECONDS}s"
    grep -E "step \(median" $W/logs/$n-again.txt | cut -c1-160
  fi
done
pack
timeout 420 ./.carry/offload_equivalence --test-threads 1 --nocapture > $W/logs/equivalence.txt 2>&1; echo "equivalence rc=$? at ${SECONDS}s"
grep -E "^test |test result" $W/logs/equivalence.txt | tail -20
pack
