#!/bin/bash
# Device run 20 (H200): the clipped step (GPT-3's setup: global norm clipped at 1.0). The
# PyTorch reference of 10 clipped steps (losses and gradient norms); the equivalence test of
# the clipped step (every strategy, planner plans at three budgets, all slowed: losses,
# gradient norms, final state bitwise); validation under a schedule and resume under another
# budget (tests/run_data_cli.rs); fine-tuning from a transformers-written checkpoint all on
# the GPU and under a 1GiB schedule with validation (record + loss chart); gpt3-2.7b under
# 24GiB, 30 steps with a 10-step warmup.
B=./.carry/offplan
W=$OUT/w
mkdir -p $W/logs $W/r
pack() { tar czf $OUT/out.tar.gz -C $OUT w; }
step() { echo "== $1 at ${SECONDS}s"; }
losses() { grep -ohE "loss: [-0-9.e]+" $1/run-*.ron; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
mkdir -p target/release && cp .carry/offplan target/release/offplan; [ "$PWD" = /work/main ] || { mkdir -p /work && ln -sfn "$PWD" /work/main; }
step reference
timeout 60 $B run --model models/configs/gpt2-124m.ron --hardware models/hardware/h200.ron --steps 10 --out $W/r/ref124 --export /tmp/exp124 > $W/logs/ref124-run.txt 2>&1; echo "ref run rc=$?"; grep -E "^step +(1|10)/" $W/logs/ref124-run.txt
(cd executor/reference && timeout 60 python3 gpt_reference.py /tmp/exp124) > $W/logs/ref124-check.txt 2>&1; echo "ref check rc=$?"
grep -E "loss step|grad norm|SUMMARY|FAILED" $W/logs/ref124-check.txt | head -30; pack
step data-cli
timeout 60 ./.carry/run_data_cli --test-threads 1 --nocapture > $W/logs/run_data_cli.txt 2>&1; echo "run_data_cli rc=$?"
grep -E "^test |test result|panicked" $W/logs/run_data_cli.txt | head; grep -A3 panicked $W/logs/run_data_cli.txt | head; pack
step equivalence
timeout 300 ./.carry/offload_equivalence --test-threads 1 --nocapture > $W/logs/equivalence.txt 2>&1; echo "equivalence rc=$?"
grep -E "^test |test result|panicked|max \|loss" $W/logs/equivalence.txt | cut -c1-200 | head -40; grep -A4 panicked $W/logs/equivalence.txt | head -20; pack
step finetune
$B tokenize executor/corpus/*.txt --out /tmp/hf/shards --val-fraction 0.2 --shard-tokens 20000 > $W/logs/tokenize.txt 2>&1; echo "tokenize rc=$?"
python3 executor/reference/make_hf_checkpoint.py --config models/configs/gpt2-124m.ron --out /tmp/hf/gpt2-rand --seed 0 > $W/logs/hf-rand-make.txt 2>&1; echo "make rc=$?"
M="--model models/configs/gpt2-124m.ron --hardware models/hardware/h200.ron --batch 4 --seq 256"
D=(--data '/tmp/hf/shards/train_*.bin' --val-data '/tmp/hf/shards/val_*.bin' --val-every 5 --val-batches 4)
timeout 90 $B run $M --init-from /tmp/hf/gpt2-rand "${D[@]}" --steps 30 --out $W/r/finetune > $W/logs/finetune-model.txt 2>&1; echo "model rc=$?"; grep -E "^step +(1|30)/|validation loss" $W/logs/finetune-model.txt | head -12
$B plan $M --budget 1GiB --out $W/r/plan1g > $W/logs/plan1g.txt 2>&1; echo "plan rc=$?"
timeout 120 $B run $W/r/plan1g/schedule.ron --init-from /tmp/hf/gpt2-rand "${D[@]}" --steps 30 --out $W/r/finetune-1GiB > $W/logs/finetune-sched.txt 2>&1; echo "schedule rc=$?"; tail -3 $W/logs/finetune-sched.txt
losses $W/r/finetune > /tmp/a; losses $W/r/finetune-1GiB | head -30 > /tmp/b; wc -l < /tmp/a
[ -s /tmp/a ] && cmp -s /tmp/a /tmp/b && echo "SCHEDULE LOSSES BITWISE the --model run's ($(wc -l < /tmp/a) steps)" || { echo "SCHEDULE LOSSES DIFFER OR MISSING"; paste /tmp/a /tmp/b | head -5; }
grep -h "validation loss" $W/logs/finetune-model.txt > /tmp/va; grep -h "validation loss" $W/logs/finetune-sched.txt | head -$(wc -l < /tmp/va) > /tmp/vb
[ -s /tmp/va ] && cmp -s /tmp/va /tmp/vb && echo "VALIDATION BITWISE ($(wc -l < /tmp/va) points)" || { echo "VALIDATION DIFFERS OR MISSING"; paste /tmp/va /tmp/vb; }
pack
step loss-falls
$B plan --model models/configs/gpt3-2.7b.ron --hardware models/hardware/h200.ron --budget 24GiB --warmup 10 --out $W/r/plan27 > $W/logs/plan27.txt 2>&1; echo "plan rc=$?"; grep -E "^step time|^live peak" $W/logs/plan27.txt
timeout 150 $B run $W/r/plan27/schedule.ron --steps 30 --out $W/r/gpt3-2.7b-24GiB > $W/logs/run27.txt 2>&1; echo "run rc=$?"; grep -E "^step +[0-9]+/" $W/logs/run27.txt | awk '{print $2, $5, $9}' | tr '\n' ';'; echo; tail -4 $W/logs/run27.txt
pack
step done
