"""The peer benchmark: one GPT training step in PyTorch, five ways:
  plain       eager, bf16 autocast (fp32 weights, bf16 compute), SDPA flash attention, fused AdamW
  checkpoint  the same with torch.utils.checkpoint around every transformer layer
  save_on_cpu the same with torch.autograd.graph.save_on_cpu(pin_memory=True) around the forward
  compile     plain with the model under torch.compile (default mode)
  compile_max plain with the model under torch.compile(mode="max-autotune-no-cudagraphs")
Step = forward + loss + backward + gradient clipping by global norm (--grad-clip, default 1.0 as
GPT-3 and `offplan plan` take it; 0 turns it off) + optimizer step + zero_grad. Median of --iters
steps (CUDA events) after --warmup steps (a compiled mode compiles in its warm-ups, timed apart);
tokens/s = B*T / step; peak = torch.cuda.max_memory_allocated over the timed steps (after a
reset). No dropout, GELU tanh, LN eps 1e-5.

  python3 bench_pytorch.py --config ../../models/configs/gpt2-124m.ron [--batch 8 --seq 1024]
  python3 bench_pytorch.py --config ../../models/configs/gpt3-1.3b.ron --json out.json
"""
import argparse
import json
import math
import re
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp


def parse_ron(path):
    """Reads the scalar fields of a models/configs/*.ron GptConfig (no RON library on the GPU
    machine): name, layers, hidden, heads, vocab, padded_vocab, max_seq, batch, seq,
    tied_embeddings, attention, output_chunks."""
    text = open(path).read()
    text = re.sub(r"//[^\n]*", "", text)
    cfg = {}
    for key in ("layers", "hidden", "heads", "vocab", "padded_vocab", "max_seq", "batch", "seq", "output_chunks"):
        m = re.search(rf"\b{key}\s*:\s*(\d+)", text)
        if m:
            cfg[key] = int(m.group(1))
    m = re.search(r"\bname\s*:\s*\"([^\"]*)\"", text)
    cfg["name"] = m.group(1) if m else path
    m = re.search(r"\btied_embeddings\s*:\s*(true|false)", text)
    cfg["tied_embeddings"] = (m.group(1) == "true") if m else True
    m = re.search(r"\battention\s*:\s*(\w+)", text)
    cfg["attention"] = m.group(1) if m else "Fused"
    return cfg


class Block(nn.Module):
    def __init__(self, C, NH):
        super().__init__()
        self.NH = NH
        self.ln1 = nn.LayerNorm(C, eps=1e-5)
        self.qkv = nn.Linear(C, 3 * C)
        self.proj = nn.Linear(C, C)
        self.ln2 = nn.LayerNorm(C, eps=1e-5)
        self.fc = nn.Linear(C, 4 * C)
        self.fcproj = nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = [t.view(B, T, self.NH, C // self.NH).transpose(1, 2) for t in (q, k, v)]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        x = x + self.fcproj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))
        return x


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, Vp = cfg["hidden"], cfg["padded_vocab"]
        self.V = cfg["vocab"]
        self.wte = nn.Embedding(Vp, C)
        self.wpe = nn.Embedding(cfg["max_seq"], C)
        self.blocks = nn.ModuleList([Block(C, cfg["heads"]) for _ in range(cfg["layers"])])
        self.lnf = nn.LayerNorm(C, eps=1e-5)
        self.lm_head = nn.Linear(C, Vp, bias=False)
        if cfg["tied_embeddings"]:
            self.lm_head.weight = self.wte.weight
        self.checkpoint = False
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, idx, targets):
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for blk in self.blocks:
            x = cp.checkpoint(blk, x, use_reentrant=False) if self.checkpoint else blk(x)
        logits = self.lm_head(self.lnf(x))
        return F.cross_entropy(logits[..., : self.V].float().reshape(B * T, -1), targets.reshape(-1))


COMPILE_MODES = {"compile": "default", "compile_max": "max-autotune-no-cudagraphs"}


def run_mode(cfg, mode, warmup, iters, grad_clip, seed=0):
    torch.manual_seed(seed)
    dev = torch.device("cuda")
    model = GPT(cfg).to(dev)
    model.checkpoint = mode == "checkpoint"
    forward = torch.compile(model, mode=COMPILE_MODES[mode]) if mode in COMPILE_MODES else model
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=3e-4, betas=(0.9, 0.95), eps=1e-8, fused=True)
    B, T = cfg["batch"], cfg["seq"]
    idx = torch.randint(0, cfg["vocab"], (B, T), device=dev)
    tgt = torch.randint(0, cfg["vocab"], (B, T), device=dev)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            if mode == "save_on_cpu":
                with torch.autograd.graph.save_on_cpu(pin_memory=True):
                    loss = forward(idx, tgt)
            else:
                loss = forward(idx, tgt)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    t0 = time.time()
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    warmup_s = time.time() - t0
    torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for _ in range(iters):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        loss = step()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
        losses.append(loss.item())
    peak = torch.cuda.max_memory_allocated()
    ms = statistics.median(times)
    nparams = sum(p.numel() for p in model.parameters())
    del model, forward, opt
    torch.cuda.empty_cache()
    return {
        "model": cfg["name"], "mode": mode, "batch": B, "seq": T, "params": nparams,
        "step_ms_median": ms, "step_ms_all": times, "tokens_per_s": B * T / (ms / 1e3),
        "peak_allocated_bytes": peak, "peak_allocated_gib": peak / 2**30, "last_loss": losses[-1],
        "grad_clip": grad_clip, "warmup_s": warmup_s,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True, help="models/configs/*.ron")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--seq", type=int)
    ap.add_argument("--modes", default="plain,checkpoint,save_on_cpu")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--grad-clip", type=float, default=1.0, help="clip by global norm (0: off)")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    ap.add_argument("--budget-gib", type=float,
                    help="cap the caching allocator at this many GiB (set_per_process_memory_fraction); "
                         "a mode that needs more is reported as OOM. The CUDA context is not counted, so "
                         "PyTorch gets about 0.5 GiB more than an offplan schedule of the same budget")
    args = ap.parse_args()
    cfg = parse_ron(args.config)
    if args.batch:
        cfg["batch"] = args.batch
    if args.seq:
        cfg["seq"] = args.seq
    torch.backends.cuda.matmul.allow_tf32 = True
    props = torch.cuda.get_device_properties(0)
    if args.budget_gib:
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.budget_gib * 2**30 / props.total_memory))
        print(f"# budget: caching allocator capped at {args.budget_gib} GiB", flush=True)
    print(f"# device: {props.name} ({props.total_memory / 2**30:.1f} GiB), torch {torch.__version__}, "
          f"cuda {torch.version.cuda}, date {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}", flush=True)
    print(f"# model {cfg['name']}: L{cfg['layers']} C{cfg['hidden']} NH{cfg['heads']} V{cfg['vocab']} "
          f"Vp{cfg['padded_vocab']} tied={cfg['tied_embeddings']} B{cfg['batch']} T{cfg['seq']}; "
          f"median of {args.iters} steps after {args.warmup} warm-ups; grad clip {args.grad_clip}", flush=True)
    out = []
    for mode in args.modes.split(","):
        try:
            if mode not in ("plain", "checkpoint", "save_on_cpu") and mode not in COMPILE_MODES:
                print(f"unknown mode {mode!r}", file=sys.stderr)
                return 2
            r = run_mode(cfg, mode, args.warmup, args.iters, args.grad_clip)
        except torch.cuda.OutOfMemoryError as e:
            print(f"{cfg['name']:12s} {mode:12s} OOM: {str(e)[:120]}", flush=True)
            torch.cuda.empty_cache()
            continue
        out.append(r)
        print(f"{r['model']:12s} {mode:12s} step {r['step_ms_median']:9.2f} ms  "
              f"{r['tokens_per_s']:10.0f} tok/s  peak {r['peak_allocated_gib']:6.2f} GiB  "
              f"loss {r['last_loss']:.4f}  (warm-ups {r['warmup_s']:.1f} s)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": props.name, "torch": torch.__version__, "budget_gib": args.budget_gib, "results": out}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
