#!/usr/bin/env bash
# Side-by-side benchmark on one GPU: `offplan run` (everything on the GPU) against PyTorch eager
# (executor/reference/bench_pytorch.py: plain bf16 autocast, activation checkpointing,
# save_on_cpu) on gpt2-124m (B8, T1024) and gpt3-1.3b (B4, T2048). Prints median step ms,
# tokens/s and peak memory of each, and the ratios offplan / PyTorch.
#
# usage: executor/bench.sh [OFFPLAN_BINARY] [OUT_DIR]     (run from the repository root)
set -u -o pipefail
BIN=${1:-./target/release/offplan}
OUT=${2:-bench-out}
STEPS=${STEPS:-12}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)  # absolute: bench_pytorch.py runs in executor/reference
run_one() { # name config batch seq
  local name=$1 cfg=$2 b=$3 t=$4
  "$BIN" run --model "$cfg" --batch "$b" --seq "$t" --steps "$STEPS" --out "$OUT/rec" 2>&1 | tee "$OUT/offplan-$name.log"
  (cd executor/reference && python3 bench_pytorch.py --config "../../$cfg" --batch "$b" --seq "$t" --json "$OUT/pytorch-$name.json") 2>&1 | tee "$OUT/pytorch-$name.log"
}
run_one gpt2-124m models/configs/gpt2-124m.ron 8 1024
run_one gpt3-1.3b models/configs/gpt3-1.3b.ron 4 2048
python3 - "$OUT" <<'PY'
import json, os, re, sys
out = sys.argv[1]
print(f"\n{'model':10s} {'runner':22s} {'step ms':>9s} {'tok/s':>10s} {'peak GiB':>9s} {'offplan tok/s ratio':>20s}")
for name in ("gpt2-124m", "gpt3-1.3b"):
    try:
        log = open(os.path.join(out, f"offplan-{name}.log")).read()
        m = re.search(r"median step \(after the first\): ([\d.]+) ms, ([\d.]+) tok/s", log)
        p = re.search(r"pool USED_MEM_HIGH\s+([\d.]+) MiB", log)
        ms, tps = float(m.group(1)), float(m.group(2))
        peak = float(p.group(1)) / 1024
        print(f"{name:10s} {'offplan (all on GPU)':22s} {ms:9.2f} {tps:10.0f} {peak:9.2f}")
    except Exception as e:  # noqa: BLE001
        print(f"{name:10s} offplan: no result ({e})")
        tps = None
    try:
        res = json.load(open(os.path.join(out, f"pytorch-{name}.json")))["results"]
    except Exception as e:  # noqa: BLE001
        print(f"{name:10s} pytorch: no result ({e})")
        continue
    for r in res:
        ratio = f"{tps / r['tokens_per_s']:.3f}x" if tps else "-"
        print(f"{name:10s} {'pytorch ' + r['mode']:22s} {r['step_ms_median']:9.2f} {r['tokens_per_s']:10.0f} {r['peak_allocated_gib']:9.2f} {ratio:>20s}")
PY
