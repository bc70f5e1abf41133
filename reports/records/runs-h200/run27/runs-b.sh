#!/bin/bash
# Device run 27b (at 0fb0735): the equivalence test at this commit.
W=$OUT/w; mkdir -p $W/logs
mkdir -p target/release && cp .carry/offplan target/release/offplan; [ "$PWD" = /work/main ] || { mkdir -p /work && ln -sfn "$PWD" /work/main; }
timeout 560 ./.carry/offload_equivalence --test-threads 1 --nocapture > $W/logs/equivalence.txt 2>&1; echo "equivalence rc=$?"
tail -30 $W/logs/equivalence.txt
tar czf $OUT/out.tar.gz -C $OUT w
