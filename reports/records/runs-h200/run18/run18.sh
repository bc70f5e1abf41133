#!/bin/bash
# Device run 18 (H200): the equivalence test with the per-step learning rate, final weights and
# optimizer state, the planner's plans at three budgets and every schedule with its lanes
# slowed; the reference step under GPT-3's schedule; save/resume/init-from on tokenized shards;
# transformers loading a saved checkpoint.
B=./.carry/offplan
W=$OUT/w
mkdir -p $W/logs $W/r
pack() { tar czf $OUT/out.tar.gz -C $OUT w; }
step() { echo "== $1 at ${SECONDS}s"; }
losses() { grep -ohE "loss: [-0-9.e]+" $1/run-*.ron; }
step equivalence
timeout 100 ./.carry/offload_equivalence --test-threads 1 --nocapture > $W/logs/equivalence.txt 2>&1; echo "equivalence rc=$?"
grep -E "max \|loss diff\||test result|panicked" $W/logs/equivalence.txt | cut -c1-150 | head -40; pack
step reference
timeout 60 $B run --model models/configs/gpt2-124m.ron --hardware models/hardware/h200.ron --steps 10 --out $W/r/ref124 --export /tmp/exp124 > $W/logs/ref124-run.txt 2>&1; echo "ref run rc=$?"
(cd executor/reference && timeout 60 python3 gpt_reference.py /tmp/exp124) > $W/logs/ref124-check.txt 2>&1; echo "ref check rc=$?"
grep -cE "PASS" $W/logs/ref124-check.txt; grep -E "FAIL" $W/logs/ref124-check.txt | head -5; tail -2 $W/logs/ref124-check.txt; pack
step data-cli
# The test binary runs offplan from where it was built: the same paths here.
mkdir -p target/release && cp .carry/offplan target/release/offplan; [ "$PWD" = /work/main ] || { mkdir -p /work && ln -sfn "$PWD" /work/main; }
timeout 60 ./.carry/run_data_cli --test-threads 1 --nocapture > $W/logs/run_data_cli.txt 2>&1; echo "run_data_cli rc=$?"
grep -E "^test |test result|panicked" $W/logs/run_data_cli.txt | head -30; pack
step checkpoints
$B tokenize executor/corpus/*.txt --out /tmp/sh --val-fraction 0.3 --shard-tokens 20000 > $W/logs/tokenize.txt 2>&1; echo "tokenize rc=$?"
M="--model models/configs/gpt2-124m.ron --hardware models/hardware/h200.ron --batch 4 --seq 256"
timeout 40 $B run $M --steps 20 --out $W/r/full --data '/tmp/sh/train_*.bin' --save /tmp/ck --save-every 10 --val-data '/tmp/sh/val_*.bin' --val-every 10 --val-batches 4 > $W/logs/full.txt 2>&1; echo "full rc=$?"
timeout 40 $B run $M --steps 10 --out $W/r/res --data '/tmp/sh/train_*.bin' --resume /tmp/ck/step_00000010 > $W/logs/res.txt 2>&1; echo "resume rc=$?"
losses $W/r/full | head -20 | tail -10 > /tmp/a; losses $W/r/res | head -10 > /tmp/b; paste /tmp/a /tmp/b
cmp -s /tmp/a /tmp/b && echo "RESUME BITWISE (recorded f64 losses of steps 11-20)" || echo "RESUME DIFFERS"
timeout 40 $B run $M --steps 1 --out $W/r/hf --init-from /tmp/ck/step_00000010 --export /tmp/exphf > $W/logs/hf.txt 2>&1; echo "init-from rc=$?"
(cd executor/reference && timeout 60 python3 check_checkpoint.py /tmp/ck/step_00000010 --export /tmp/exphf) > $W/logs/check_checkpoint.txt 2>&1; echo "check_checkpoint rc=$?"
tail -5 $W/logs/check_checkpoint.txt; pack
step done
