"""Loads an offplan checkpoint with Hugging Face transformers and prints its loss on one batch,
to compare with offplan's loss on the same batch.

  python3 check_checkpoint.py CKPT --export EXP [--dtype bf16|fp32]
  python3 check_checkpoint.py CKPT --tokens FILE --batch B --seq T [--format llmc|raw] [--dtype ...]

CKPT: a checkpoint folder written by `offplan run --save` (DIR/step_NNNNNNNN, or the --save
folder itself: its `latest` is followed), loaded with GPT2LMHeadModel.from_pretrained.
--export EXP: a folder written by `offplan run --model ... --init-from CKPT --steps 1 --export EXP`;
  its step-1 batch (tokens, targets) is used, and offplan's step-1 loss (the loss of CKPT's
  weights on that batch, before the update) is printed beside transformers' for comparison.
--tokens FILE: the first B rows of T+1 tokens of a token file (llm.c shard as `offplan tokenize`
  writes, or raw uint16), inputs the first T of each row, targets the last T.
The loss is the mean cross-entropy of the logits over the real vocabulary against the targets.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F


def resolve(d):
    if os.path.isfile(os.path.join(d, "model.safetensors")):
        return d
    latest = os.path.join(d, "latest")
    if os.path.isfile(latest):
        with open(latest) as f:
            return os.path.join(d, f.read().strip())
    sys.exit(f"{d}: no model.safetensors and no latest file: not an offplan checkpoint")


def batch_from_export(exp):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import export_format as X

    m = X.read_manifest(exp)
    by = {e["name"]: e for e in m["tensors"]}
    tokens = X.load_tensor(exp, by["tokens"], "cpu").long()
    targets = X.load_tensor(exp, by["targets"], "cpu").long()
    loss = m["losses"][0] if m.get("losses") else None
    return tokens, targets, loss


def batch_from_tokens(path, fmt, B, T):
    raw = np.fromfile(path, dtype=np.uint8)
    if fmt == "llmc":
        header = raw[:1024].view(np.int32)
        if header[0] != 20240520 or header[1] != 1:
            sys.exit(f"{path}: not an llm.c shard (magic {header[0]}, version {header[1]})")
        toks = raw[1024:].view(np.uint16)[: header[2]]
    else:
        toks = raw.view(np.uint16)
    need = B * (T + 1)
    if toks.size < need:
        sys.exit(f"{path}: {toks.size} tokens, one batch of {B} x ({T} + 1) needs {need}")
    rows = torch.from_numpy(toks[:need].astype(np.int64)).view(B, T + 1)
    return rows[:, :T].contiguous(), rows[:, 1:].contiguous(), None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpt")
    ap.add_argument("--export")
    ap.add_argument("--tokens")
    ap.add_argument("--format", choices=["llmc", "raw"], default="llmc")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    a = ap.parse_args()
    if (a.export is None) == (a.tokens is None):
        sys.exit("give one of --export EXP or --tokens FILE")

    from transformers import GPT2LMHeadModel

    ckpt = resolve(a.ckpt)
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = GPT2LMHeadModel.from_pretrained(ckpt, torch_dtype=dtype).to(dev).eval()
    with open(os.path.join(ckpt, "config.json")) as f:
        vocab = json.load(f)["vocab_size"]
    if a.export:
        tokens, targets, offplan_loss = batch_from_export(a.export)
    else:
        tokens, targets, offplan_loss = batch_from_tokens(a.tokens, a.format, a.batch, a.seq)
    with torch.no_grad():
        logits = model(tokens.to(dev)).logits.float()
    loss = F.cross_entropy(logits[..., :vocab].reshape(-1, vocab), targets.to(dev).reshape(-1)).item()
    print(f"transformers ({a.dtype}) loss of {ckpt} on a batch of {tuple(tokens.shape)}: {loss:.6f}")
    if offplan_loss is not None:
        d = loss - offplan_loss
        print(f"offplan's step-1 loss on the same batch: {offplan_loss:.6f} (difference {d:+.6f}, {100 * d / offplan_loss:+.3f}%)")


if __name__ == "__main__":
    main()
