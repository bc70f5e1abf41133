#!/bin/bash
# Device run 21 (H200): the exact gradient checksums beside the partial norms. grad_norm.cu
# against its torch replica (partials and checksums bitwise); the PyTorch reference of 10
# clipped steps; the equivalence test (losses, gradient norms, gradient checksums, final state).
B=./.carry/offplan
W=$OUT/w
mkdir -p $W/logs $W/r
pack() { tar czf $OUT/out.tar.gz -C $OUT w; }
step() { echo "== $1 at ${SECONDS}s"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
mkdir -p target/release && cp .carry/offplan target/release/offplan; [ "$PWD" = /work/main ] || { mkdir -p /work && ln -sfn "$PWD" /work/main; }
step kernels
(cd executor/reference && timeout 90 python3 -c "
import test_kernels as T
for n, tag in [(0, 'empty'), (100, 'small (empty blocks)'), (1000, 'small'), (2**20 + 7, '1M'), (85_000_011, '85M')]:
    T.test_grad_norm(n, tag)
bad = [r for r in T.results if not r[1]]
print('KERNEL CHECKS', len(T.results) - len(bad), 'of', len(T.results), 'passed')
") > $W/logs/kernels.txt 2>&1; echo "kernels rc=$?"; grep -E "KERNEL CHECKS|FAIL|Error" $W/logs/kernels.txt | head; pack
step reference
timeout 60 $B run --model models/configs/gpt2-124m.ron --hardware models/hardware/h200.ron --steps 10 --out $W/r/ref124 --export /tmp/exp124 > $W/logs/ref124-run.txt 2>&1; echo "ref run rc=$?"
(cd executor/reference && timeout 60 python3 gpt_reference.py /tmp/exp124) > $W/logs/ref124-check.txt 2>&1; echo "ref check rc=$?"; grep -E "SUMMARY|FAILED" $W/logs/ref124-check.txt; pack
step equivalence
timeout 330 ./.carry/offload_equivalence --test-threads 1 --nocapture > $W/logs/equivalence.txt 2>&1; echo "equivalence rc=$?"
grep -E "^test |test result|panicked" $W/logs/equivalence.txt | cut -c1-120; grep -A4 panicked $W/logs/equivalence.txt | head -20; pack
step done
