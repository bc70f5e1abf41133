"""PyTorch reference for one offplan training step, checked against an executor export.

  python3 gpt_reference.py DIR            compare DIR (written by `offplan run ... --export DIR`)
  python3 gpt_reference.py --selftest CONFIG.ron [--layers L --batch B --seq T --steps N]
                                          build an export with kernel_step.py (the CUDA kernels of
                                          executor/kernels + torch matrix products, in program.rs
                                          order) and compare it: an end-to-end check of the
                                          kernels before the Rust runtime exists.

The model (same as models/src/program.rs and inventory.rs): token + position embedding; per layer
x_mid = x + attproj(attn(ln1(x))), x_out = x_mid + fcproj(gelu_tanh(fc(ln2(x_mid)))); lnf; logits
= lnf @ W^T with W = the output chunks' rows stacked (Vp x C; tied: also the token table);
loss = mean cross-entropy over the real vocabulary V (padded ids excluded). Linear weights are
(out, in) as in nn.Linear: y = x W^T + b. Layer norm eps 1e-5, causal attention with scale
1/sqrt(D), no dropout. Gradient clipping by the global norm when the manifest's "grad_clip" is
positive (PyTorch's clip_grad_norm_: scale min(1, clip / (norm + 1e-6)) applied to every gradient
before the update; the executor's per-step norms, "grad_norms", are compared). AdamW as PyTorch's (decoupled decay, bias
correction) with weight decay on 2-D views only (qkv_w, attproj_w, fc_w, fcproj_w, wte, wpe,
chunk w) and none on 1-D views (biases, layer-norm weights).

Two references are computed from the exported bf16 weights and batch:
  fp32: every op in fp32 (TF32 off): the "true" values;
  bf16: the executor's precision (bf16 weights and activations, fp32 accumulation, layer norm
        and softmax statistics in fp32, fp32 loss) in PyTorch eager (SDPA flash attention).
Tolerances (relative L2 error ||x - ref|| / ||ref|| against the fp32 reference, per tensor):
  gradient of each parameter view, logits: max(2e-2, 2 x PyTorch-bf16's own error);
  loss of step 1: |delta| <= 1e-2;  losses of steps 1..N (vs the bf16 reference run with AdamW
  from the exported optimizer state, each step at the manifest's learning rate for it, "lrs"):
  |delta| <= 2e-2 + 1e-2 * |loss|; gradient norms of steps 1..N (clipped exports) against the
  same run's: relative 5e-2 (a norm over bf16 gradients, each within the gradient tolerance).
"""
import argparse
import math
import os
import sys
import tempfile

import torch
import torch.nn.functional as F

import export_format as X

dev = torch.device("cuda")


def views_of(flat, views):
    out = {}
    for v in views:
        n = math.prod(v["shape"])
        out[v["name"]] = flat[v["offset"]:v["offset"] + n].view(*v["shape"])
    return out


def leaves(weights, views, dtype):
    """{owner: {view: leaf tensor requiring grad}} from the flat bf16 weights."""
    L = {}
    for name, flat in weights.items():
        owner = name[: -len(".weights")]
        L[owner] = {k: t.detach().to(dtype).clone().requires_grad_(True) for k, t in views_of(flat, views[name]).items()}
    return L


def forward(L, tokens, targets, cfg, mode):
    B, T = tokens.shape
    C, NH, V, k = cfg["hidden"], cfg["heads"], cfg["vocab"], cfg["output_chunks"]
    D = C // NH
    W_out = torch.cat([L[f"chunk{c}"]["w"] for c in range(k)], 0)
    wte = W_out if cfg["tied_embeddings"] else L["embedding"]["wte"]
    x = F.embedding(tokens.long(), wte) + L["embedding"]["wpe"][:T]
    for l in range(cfg["layers"]):
        P = L[f"layer{l}"]
        h = F.layer_norm(x, (C,), P["ln1_w"], P["ln1_b"], 1e-5)
        qkv = F.linear(h, P["qkv_w"], P["qkv_b"])
        q, kk, v = [t.view(B, T, NH, D).transpose(1, 2) for t in qkv.split(C, dim=2)]
        if mode == "fp32":
            with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
                y = F.scaled_dot_product_attention(q, kk, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, kk, v, is_causal=True)
        x = x + F.linear(y.transpose(1, 2).reshape(B, T, C), P["attproj_w"], P["attproj_b"])
        h = F.layer_norm(x, (C,), P["ln2_w"], P["ln2_b"], 1e-5)
        f = F.gelu(F.linear(h, P["fc_w"], P["fc_b"]), approximate="tanh")
        x = x + F.linear(f, P["fcproj_w"], P["fcproj_b"])
    Fn = L["final_norm"]
    h = F.layer_norm(x, (C,), Fn["lnf_w"], Fn["lnf_b"], 1e-5)
    logits = h @ W_out.t()
    loss = F.cross_entropy(logits[..., :V].float().reshape(B * T, V), targets.long().reshape(-1))
    return loss, logits


def rel(a, b):
    a, b = a.double(), b.double()
    if not torch.isfinite(a).all():
        return float("inf")
    n = b.norm().item()
    return (a - b).norm().item() / (n if n > 0 else 1.0)


class Report:
    def __init__(self):
        self.rows = []

    def line(self, ok, what, detail):
        self.rows.append((ok, what))
        print(f"{'PASS' if ok else 'FAIL'}  {what:40s} {detail}", flush=True)


def adamw_step(master, m, v, g, lr, b1, b2, eps, wd, step):
    master.mul_(1 - lr * wd)
    m.mul_(b1).add_(g, alpha=1 - b1)
    v.mul_(b2).addcmul_(g, g, value=1 - b2)
    denom = v.sqrt() / math.sqrt(1 - b2 ** step) + eps
    master.addcdiv_(m, denom, value=-lr / (1 - b1 ** step))


def compare(d):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    man, T_, views = X.load_all(d)
    cfg, hp = man["config"], man["adamw"]
    R = Report()
    weights = {n: t for n, t in T_.items() if n.endswith(".weights")}
    tokens, targets = T_["tokens"], T_["targets"]
    print(f"# export {d}: {cfg['name']} L{cfg['layers']} C{cfg['hidden']} NH{cfg['heads']} B{cfg['batch']} "
          f"T{cfg['seq']} k{cfg['output_chunks']} tied={cfg['tied_embeddings']} attention={cfg['attention']}", flush=True)
    refs = {}
    for mode, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        L = leaves(weights, views, dt)
        loss, logits = forward(L, tokens, targets, cfg, mode)
        loss.backward()
        refs[mode] = (L, loss.detach(), logits.detach())
    L32, loss32, logits32 = refs["fp32"]
    L16, loss16, logits16 = refs["bf16"]
    if "loss" in T_:
        le = T_["loss"].float().reshape(-1)[0].item()
        dl = abs(le - loss32.item())
        R.line(dl <= 1e-2, "loss (step 1)", f"executor {le:.6f} fp32-ref {loss32.item():.6f} pytorch-bf16 {loss16.item():.6f} |delta| {dl:.2e} (tol 1e-2)")
    if "logits" in T_:
        lg = T_["logits"].float()
        Vc = lg.shape[-1]
        e = rel(lg.reshape(-1, Vc), logits32.reshape(-1, logits32.shape[-1])[:, :Vc])
        e16 = rel(logits16.reshape(-1, logits16.shape[-1])[:, :Vc], logits32.reshape(-1, logits32.shape[-1])[:, :Vc])
        tol = max(2e-2, 2 * e16)
        R.line(e <= tol, "logits (chunk 0)", f"rel_l2 {e:.3e} (tol {tol:.1e}; pytorch-bf16 {e16:.3e})")
    for name in sorted(n for n in T_ if n.endswith(".grads")):
        owner = name[: -len(".grads")]
        got = views_of(T_[name], views[name])
        for vname, g in got.items():
            r32 = L32[owner][vname].grad
            r16 = L16[owner][vname].grad
            if r32 is None:
                r32 = torch.zeros_like(L32[owner][vname])
                r16 = torch.zeros_like(r32)
            e = rel(g.float(), r32)
            e16 = rel(r16.float(), r32)
            tol = max(2e-2, 2 * e16)
            R.line(e <= tol, f"grad {owner}.{vname}", f"rel_l2 {e:.3e} (tol {tol:.1e}; pytorch-bf16 {e16:.3e})")
    losses = man.get("losses", [])
    if losses:
        # bf16 reference run of len(losses) steps with AdamW from the exported optimizer state
        Ls = leaves(weights, views, torch.bfloat16)
        opt = {}
        for wname in weights:
            owner = wname[: -len(".weights")]
            o = T_[f"{owner}.optimizer"].float().reshape(3, -1).clone()
            vs = views[wname]
            ma, mm, vv = views_of(o[0], vs), views_of(o[1], vs), views_of(o[2], vs)
            opt[owner] = {k: (ma[k], mm[k], vv[k]) for k in ma}
        # Each step's learning rate as the executor used it (the setup's warmup and cosine
        # decay); exports written before the schedule carry one constant "lr".
        lrs = man.get("lrs") or [hp["lr"]] * len(losses)
        if len(lrs) != len(losses):
            raise SystemExit(f"manifest: {len(lrs)} learning rates for {len(losses)} losses")
        clip = man.get("grad_clip", 0.0)
        ref_losses, ref_norms = [], []
        for step in range(1, len(losses) + 1):
            tk = T_.get(f"tokens_step{step - 1}", tokens)
            tg = T_.get(f"targets_step{step - 1}", targets)
            for owner in Ls:
                for p in Ls[owner].values():
                    p.grad = None
            loss, _ = forward(Ls, tk, tg, cfg, "bf16")
            loss.backward()
            ref_losses.append(loss.item())
            with torch.no_grad():
                coef = 1.0
                if clip > 0:
                    norm = math.sqrt(sum(float((p.grad.float() ** 2).sum()) for ps in Ls.values() for p in ps.values()))
                    ref_norms.append(norm)
                    coef = min(1.0, clip / (norm + 1e-6))
                for owner, ps in Ls.items():
                    for vname, p in ps.items():
                        master, m_, v_ = opt[owner][vname]
                        wd = hp["weight_decay"] if p.dim() == 2 else 0.0
                        g = p.grad.float() * coef
                        adamw_step(master, m_, v_, g, lrs[step - 1], hp["beta1"], hp["beta2"], hp["eps"], wd, step)
                        p.copy_(master.to(torch.bfloat16))
        for i, (a, b) in enumerate(zip(losses, ref_losses)):
            tol = 2e-2 + 1e-2 * abs(b)
            R.line(abs(a - b) <= tol, f"loss step {i + 1}", f"executor {a:.5f} pytorch-bf16 {b:.5f} |delta| {abs(a - b):.2e} (tol {tol:.1e})")
        if clip > 0:
            norms = man.get("grad_norms", [])
            if len(norms) != len(losses):
                raise SystemExit(f"manifest: grad_clip {clip} but {len(norms)} gradient norms for {len(losses)} steps")
            for i, (a, b) in enumerate(zip(norms, ref_norms)):
                e = abs(a - b) / max(abs(b), 1e-12)
                R.line(e <= 5e-2, f"grad norm step {i + 1}", f"executor {a:.5f} pytorch-bf16 {b:.5f} rel {e:.2e} (tol 5.0e-2; clip {clip})")
    n_ok = sum(1 for ok, _ in R.rows if ok)
    print(f"SUMMARY {n_ok}/{len(R.rows)} passed", flush=True)
    for ok, what in R.rows:
        if not ok:
            print(f"  FAILED: {what}")
    return n_ok == len(R.rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", nargs="?")
    ap.add_argument("--selftest", metavar="CONFIG_RON")
    ap.add_argument("--layers", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--seq", type=int)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out", help="export folder for --selftest (default: a temporary one)")
    args = ap.parse_args()
    if args.selftest:
        import kernel_step
        cfg = kernel_step.load_config(args.selftest, layers=args.layers, batch=args.batch, seq=args.seq)
        d = args.out or tempfile.mkdtemp(prefix="offplan-export-")
        kernel_step.run_and_export(cfg, d, steps=args.steps)
        args.dir = d
    if not args.dir:
        ap.error("give an export folder or --selftest CONFIG")
    return 0 if compare(args.dir) else 1


if __name__ == "__main__":
    sys.exit(main())
