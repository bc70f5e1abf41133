#!/bin/bash
# Device run 19 (H200): validation under a schedule and resume under another budget (the GPU
# part of tests/run_data_cli.rs); fine-tuning from transformers-written checkpoints (random
# init and, if the machine's cache has it, pretrained gpt2) with a record and loss chart, all on
# the GPU and under a 1GiB schedule, compared bitwise; the equivalence test alone.
B=./.carry/offplan
W=$OUT/w
mkdir -p $W/logs $W/r
pack() { tar czf $OUT/out.tar.gz -C $OUT w; }
step() { echo "== $1 at ${SECONDS}s"; }
losses() { grep -ohE "loss: [-0-9.e]+" $1/run-*.ron; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
mkdir -p target/release && cp .carry/offplan target/release/offplan; [ "$PWD" = /work/main ] || { mkdir -p /work && ln -sfn "$PWD" /work/main; }
step data-cli
timeout 90 ./.carry/run_data_cli --test-threads 1 --nocapture > $W/logs/run_data_cli.txt 2>&1; echo "run_data_cli rc=$?"
grep -E "^test |test result|panicked" $W/logs/run_data_cli.txt | head -30; pack
step tokenize
$B tokenize executor/corpus/*.txt --out /tmp/hf/shards --val-fraction 0.2 --shard-tokens 20000 > $W/logs/tokenize.txt 2>&1; echo "tokenize rc=$?"; tail -3 $W/logs/tokenize.txt
M="--model models/configs/gpt2-124m.ron --hardware models/hardware/h200.ron --batch 4 --seq 256"
D="--data /tmp/hf/shards/train_*.bin --val-data /tmp/hf/shards/val_*.bin --val-every 5 --val-batches 4"
step hf-random
python3 executor/reference/make_hf_checkpoint.py --config models/configs/gpt2-124m.ron --out /tmp/hf/gpt2-rand --seed 0 > $W/logs/hf-rand-make.txt 2>&1; echo "make rc=$?"
timeout 60 $B run $M --init-from /tmp/hf/gpt2-rand --data '/tmp/hf/shards/train_*.bin' --steps 1 --export /tmp/hf/exp --out /tmp/hf/run1 > $W/logs/hf-rand-run.txt 2>&1; echo "run rc=$?"
for d in bf16 fp32; do python3 executor/reference/make_hf_checkpoint.py --config models/configs/gpt2-124m.ron --out /tmp/hf/gpt2-rand --seed 0 --export /tmp/hf/exp --dtype $d > $W/logs/hf-rand-check-$d.txt 2>&1; echo "check $d rc=$?"; tail -3 $W/logs/hf-rand-check-$d.txt; done
pack
step hf-pretrained
INIT=/tmp/hf/gpt2-rand; KIND=random
python3 - > $W/logs/hf-pre-save.txt 2>&1 <<'PY'
from transformers import GPT2LMHeadModel
m = GPT2LMHeadModel.from_pretrained("gpt2", local_files_only=True)
m.save_pretrained("/tmp/hf/gpt2-pre", safe_serialization=True)
print("saved pretrained gpt2 from the local cache")
PY
if [ $? = 0 ]; then
  timeout 60 $B run $M --init-from /tmp/hf/gpt2-pre --data '/tmp/hf/shards/train_*.bin' --steps 1 --export /tmp/hf/exp-pre --out /tmp/hf/run-pre > $W/logs/hf-pre-run.txt 2>&1; echo "run rc=$?"; tail -3 $W/logs/hf-pre-run.txt
  (cd executor/reference && python3 check_checkpoint.py /tmp/hf/gpt2-pre --export /tmp/hf/exp-pre) > $W/logs/hf-pre-check.txt 2>&1; echo "check rc=$?"; tail -3 $W/logs/hf-pre-check.txt
  grep -q "rc=0" /dev/null; [ -d /tmp/hf/run-pre ] && INIT=/tmp/hf/gpt2-pre && KIND=pretrained
else
  echo "no pretrained gpt2 in the cache"; tail -2 $W/logs/hf-pre-save.txt
fi
echo "fine-tuning from $KIND ($INIT)"; pack
step finetune-model
timeout 90 $B run $M --init-from $INIT $D --steps 30 --out $W/r/finetune-$KIND > $W/logs/finetune-model.txt 2>&1; echo "rc=$?"; grep -E "validation loss|step +(1|30) " $W/logs/finetune-model.txt | head; tail -3 $W/logs/finetune-model.txt
step finetune-schedule
$B plan $M --budget 1GiB --out /tmp/hf/plan1g > $W/logs/plan1g.txt 2>&1; echo "plan rc=$?"; cp /tmp/hf/plan1g/schedule.ron $W/logs/plan1g-schedule.ron 2>/dev/null
timeout 120 $B run /tmp/hf/plan1g/schedule.ron --init-from $INIT $D --steps 30 --out $W/r/finetune-$KIND-1GiB > $W/logs/finetune-sched.txt 2>&1; echo "rc=$?"; tail -4 $W/logs/finetune-sched.txt
losses $W/r/finetune-$KIND > /tmp/a; losses $W/r/finetune-$KIND-1GiB | head -30 > /tmp/b
cmp -s /tmp/a /tmp/b && echo "SCHEDULE LOSSES BITWISE the --model run's (30 steps)" || { echo "SCHEDULE LOSSES DIFFER"; paste /tmp/a /tmp/b | head -5; }
grep -h "validation loss" $W/logs/finetune-model.txt > /tmp/va; grep -h "validation loss" $W/logs/finetune-sched.txt | head -$(wc -l < /tmp/va) > /tmp/vb
cmp -s /tmp/va /tmp/vb && echo "VALIDATION BITWISE ($(wc -l < /tmp/va) points)" || { echo "VALIDATION DIFFERS"; paste /tmp/va /tmp/vb; }
pack
step equivalence
timeout 280 ./.carry/offload_equivalence --test-threads 1 --nocapture > $W/logs/equivalence.txt 2>&1; echo "equivalence rc=$?"
grep -E "^test |test result|panicked" $W/logs/equivalence.txt | cut -c1-200 | head -40; pack
step done
