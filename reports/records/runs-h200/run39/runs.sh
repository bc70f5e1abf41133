#!/bin/bash
# Device run 39 (H200): the peers of issue 19, side by side in one run (executor/bench.sh):
# offplan all-on-GPU against PyTorch eager and torch.compile (default mode), gpt2-124m B8 T1024,
# gpt3-1.3b B4 T2048, gpt3-2.7b B2 T2048, clipped at 1.0 on both sides.
mkdir -p target/release && cp .carry/offplan target/release/offplan; [ "$PWD" = /work/main ] || { mkdir -p /work && ln -sfn "$PWD" /work/main; }
timeout 500 bash executor/bench.sh ./.carry/offplan $OUT/b 12 plain,compile; echo "bench rc=$? at ${SECONDS}s"
rm -rf $OUT/b/rec-*/*.png $OUT/b/rec-*/*.svg
tar czf $OUT/out.tar.gz -C $OUT b
