#!/usr/bin/env bash
# The peers on one GPU, side by side in one run: `offplan run` (everything on the GPU) against
# PyTorch (executor/reference/bench_pytorch.py): eager, torch.compile (default mode) and, where
# asked, torch.compile(mode="max-autotune-no-cudagraphs"), on gpt2-124m (B8, T1024), gpt3-1.3b
# (B4, T2048) and gpt3-2.7b (B2, T2048), the step clipped at 1.0 on both sides (GPT-3's setup).
# Writes OUT_DIR/bench.json: rows of {model, runner, step_ms, tokens_per_s, peak_gib} (offplan's
# peak is its pool's high-water mark, PyTorch's torch.cuda.max_memory_allocated), and prints
# them with offplan's tokens/s over each runner's.
#
# usage: executor/bench.sh [OFFPLAN_BINARY] [OUT_DIR] [STEPS] [PYTORCH_MODES]   (from the repository root)
#        PYTORCH_MODES defaults to plain,compile; add compile_max for max-autotune.
set -u -o pipefail
BIN=${1:-./target/release/offplan}
OUT=${2:-bench-out}
STEPS=${3:-12}
MODES=${4:-plain,compile}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)  # absolute: bench_pytorch.py runs in executor/reference
run_one() { # name config batch seq
  local name=$1 cfg=$2 b=$3 t=$4
  timeout 300 "$BIN" run --model "$cfg" --batch "$b" --seq "$t" --steps "$STEPS" --out "$OUT/rec-$name" > "$OUT/offplan-$name.log" 2>&1
  echo "offplan $name rc=$? at ${SECONDS}s"
  for mode in ${MODES//,/ }; do
    (cd executor/reference && timeout 600 python3 bench_pytorch.py --config "../../$cfg" --batch "$b" --seq "$t" \
      --modes "$mode" --json "$OUT/pytorch-$name-$mode.json") > "$OUT/pytorch-$name-$mode.log" 2>&1
    echo "pytorch $name $mode rc=$? at ${SECONDS}s"
  done
}
run_one gpt2-124m models/configs/gpt2-124m.ron 8 1024
run_one gpt3-1.3b models/configs/gpt3-1.3b.ron 4 2048
run_one gpt3-2.7b models/configs/gpt3-2.7b.ron 2 2048
python3 - "$OUT" "$MODES" <<'PY'
import glob, json, os, re, sys
out, modes = sys.argv[1], sys.argv[2].split(",")
rows = []
for name in ("gpt2-124m", "gpt3-1.3b", "gpt3-2.7b"):
    try:
        log = open(os.path.join(out, f"offplan-{name}.log")).read()
        m = re.search(r"median step \(after the first\): ([\d.]+) ms, ([\d.]+) tok/s", log)
        p = re.search(r"pool USED_MEM_HIGH\s+([\d.]+) MiB", log)
        rows.append({"model": name, "runner": "offplan", "step_ms": float(m.group(1)),
                     "tokens_per_s": float(m.group(2)), "peak_gib": float(p.group(1)) / 1024})
    except Exception as e:  # noqa: BLE001
        print(f"{name}: offplan gave no result ({e})")
    for mode in modes:
        try:
            res = json.load(open(os.path.join(out, f"pytorch-{name}-{mode}.json")))
        except Exception as e:  # noqa: BLE001
            print(f"{name}: pytorch {mode} gave no result ({e})")
            continue
        for r in res["results"]:
            runner = {"plain": "pytorch eager", "compile": "torch.compile",
                      "compile_max": "torch.compile max-autotune-no-cudagraphs"}.get(r["mode"], "pytorch " + r["mode"])
            rows.append({"model": name, "runner": runner, "step_ms": r["step_ms_median"],
                         "tokens_per_s": r["tokens_per_s"], "peak_gib": r["peak_allocated_gib"],
                         "warmup_s": r["warmup_s"], "torch": res["torch"], "device": res["device"]})
json.dump(rows, open(os.path.join(out, "bench.json"), "w"), indent=1)
print(f"\n{'model':10s} {'runner':42s} {'step ms':>9s} {'tok/s':>10s} {'peak GiB':>9s} {'offplan / it':>13s}")
for r in rows:
    mine = next((x for x in rows if x["model"] == r["model"] and x["runner"] == "offplan"), None)
    ratio = f"{mine['tokens_per_s'] / r['tokens_per_s']:.3f}x" if mine else "-"
    print(f"{r['model']:10s} {r['runner']:42s} {r['step_ms']:9.2f} {r['tokens_per_s']:10.0f} {r['peak_gib']:9.2f} {ratio:>13s}")
PY
