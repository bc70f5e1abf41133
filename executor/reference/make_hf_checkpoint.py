"""Writes a Hugging Face GPT-2 checkpoint with transformers itself, shaped as a models/configs/*.ron
GptConfig and randomly initialised by transformers from a fixed torch seed, for
`offplan run --model CONFIG --init-from DIR`; and prints transformers' loss of it on the first
batch of an offplan export or a token file, to compare with the first loss of offplan's record.

  python3 make_hf_checkpoint.py --config CONFIG.ron --out DIR [--seed S]
  python3 make_hf_checkpoint.py --config CONFIG.ron --out DIR --export EXP [--dtype bf16|fp32]
  python3 make_hf_checkpoint.py --config CONFIG.ron --out DIR --tokens FILE --batch B --seq T [--format llmc|raw]

--out DIR: written by GPT2LMHeadModel(GPT2Config(...)).save_pretrained(DIR, safe_serialization=True)
  (config.json, model.safetensors: fp32, tied embeddings). A DIR that already holds a checkpoint
  is not rewritten: it must hold exactly the weights this config and seed give (so the command
  can be run again with --export once offplan has made one), or the script stops.
--export EXP: a folder written by `offplan run --model CONFIG --init-from DIR --steps 1 --export EXP`;
  its step-1 batch is used and offplan's step-1 loss (DIR's weights, before the update) is
  printed beside transformers'.
--tokens FILE: the first B rows of T+1 tokens of a token file (as check_checkpoint.py reads it).
The loss is the mean cross-entropy over all B*T tokens, DIR loaded back with from_pretrained.
"""
import argparse
import os
import shutil
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_pytorch import parse_ron  # noqa: E402
from check_checkpoint import batch_from_export, batch_from_tokens  # noqa: E402
from export_format import read_manifest  # noqa: E402


def gpt2_config(cfg, path):
    from transformers import GPT2Config

    missing = [k for k in ("layers", "hidden", "heads", "vocab", "max_seq") if k not in cfg]
    if missing:
        sys.exit(f"{path}: no {', '.join(missing)}: not a GptConfig")
    # offplan reads and writes tied GPT-2-shaped checkpoints with GPT-2's vocabulary only.
    if not cfg["tied_embeddings"] or cfg["vocab"] != 50257:
        sys.exit(f"{path}: a GPT-2 checkpoint needs tied embeddings and vocab 50257 (got {cfg['vocab']})")
    return GPT2Config(
        n_layer=cfg["layers"],
        n_embd=cfg["hidden"],
        n_head=cfg["heads"],
        n_positions=cfg["max_seq"],
        vocab_size=cfg["vocab"],
        n_inner=None,  # 4 * n_embd, as offplan's MLP
        activation_function="gelu_new",  # GELU's tanh form, as offplan's kernel
        layer_norm_epsilon=1e-5,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=True,
    )


def load(out, dtype):
    from transformers import GPT2LMHeadModel

    try:
        return GPT2LMHeadModel.from_pretrained(out, torch_dtype=dtype).eval()
    except Exception as e:  # a broken or foreign folder: say which, not a traceback
        sys.exit(f"{out}: transformers cannot load it as GPT-2: {e}")


def fresh_model(config, seed):
    from transformers import GPT2LMHeadModel

    # Built on the CPU: the same seed gives the same weights on any machine with these versions.
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config).eval()


def write_or_check(out, config, seed):
    model = fresh_model(config, seed)
    if os.path.isfile(os.path.join(out, "model.safetensors")):
        saved = load(out, torch.float32).state_dict()
        mine = model.state_dict()
        if saved.keys() != mine.keys() or any(not torch.equal(saved[k], mine[k]) for k in mine):
            sys.exit(f"{out} holds another checkpoint than this config and --seed {seed} write: give another --out")
        print(f"{out} already holds this checkpoint (config and --seed {seed}); not rewritten")
        return
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        sys.exit(f"{out} exists and is not an empty folder: give a new --out")
    # Saved into a sibling and renamed, so a failed save leaves no half-written DIR.
    tmp = f"{os.path.abspath(out).rstrip(os.sep)}.tmp-{os.getpid()}"
    try:
        model.save_pretrained(tmp, safe_serialization=True)
    except Exception as e:  # a full disk: nothing half-written is left
        shutil.rmtree(tmp, ignore_errors=True)
        sys.exit(f"cannot write {out}: {e}")
    if os.path.isdir(out):
        os.rmdir(out)
    os.rename(tmp, out)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out}: GPT-2 {config.n_layer} layers, n_embd {config.n_embd}, {n / 1e6:.1f}M parameters, seed {seed}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="models/configs/*.ron")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--export")
    ap.add_argument("--tokens")
    ap.add_argument("--format", choices=["llmc", "raw"], default="llmc")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    a = ap.parse_args()
    if a.export and a.tokens:
        sys.exit("give --export EXP or --tokens FILE, not both")
    if a.batch < 1 or a.seq < 1:
        sys.exit("--batch and --seq must be at least 1")
    if not os.path.isfile(a.config):
        sys.exit(f"{a.config}: no such config file")
    cfg = parse_ron(a.config)
    config = gpt2_config(cfg, a.config)
    write_or_check(a.out, config, a.seed)
    if not (a.export or a.tokens):
        return

    if a.export:
        if not os.path.isfile(os.path.join(a.export, "manifest.json")):
            sys.exit(f"{a.export}: no manifest.json: not an export of `offplan run --export`")
        # Another model's export would compare losses of different weights.
        got = read_manifest(a.export)["config"]
        if any(got.get(k) != cfg[k] for k in ("layers", "hidden", "heads", "vocab")):
            sys.exit(f"{a.export} is an export of {got.get('name')}, not of {a.config}'s shape")
        tokens, targets, offplan_loss = batch_from_export(a.export)
    else:
        tokens, targets, offplan_loss = batch_from_tokens(a.tokens, a.format, a.batch, a.seq)
    if tokens.shape[1] > config.n_positions or int(tokens.max()) >= config.vocab_size:
        sys.exit(f"the batch {tuple(tokens.shape)} does not fit {a.config} (positions {config.n_positions}, vocab {config.vocab_size})")

    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load(a.out, dtype).to(dev)
    with torch.no_grad():
        logits = model(tokens.to(dev)).logits.float()
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.to(dev).reshape(-1)).item()
    print(f"transformers ({a.dtype}) loss of {a.out} on the first batch {tuple(tokens.shape)}: {loss:.6f}")
    if offplan_loss is not None:
        d = loss - offplan_loss
        print(f"offplan's step-1 loss on the same batch: {offplan_loss:.6f} (difference {d:+.6f}, {100 * d / offplan_loss:+.3f}%)")


if __name__ == "__main__":
    main()
