"""An executable spec of one offplan training step in models/src/program.rs order: the CUDA
kernels of executor/kernels (through CuPy, launched as executor/kernels/README.md says) with
torch bf16 matrix products standing in for cuBLASLt. It writes an export folder in the format
the Rust executor writes (README.md here), so gpt_reference.py can check the kernels end to end
(`gpt_reference.py --selftest CONFIG`). Everything runs on one stream (the legacy default stream
that both torch and CuPy use), all on the GPU."""
import math

import torch
import torch.nn.functional as F

import export_format as X
import kernels_py as K
from bench_pytorch import parse_ron

bf16 = torch.bfloat16
dev = torch.device("cuda")
ADAMW = {"lr": 3e-4, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1}


def load_config(path, layers=None, batch=None, seq=None):
    c = parse_ron(path)
    for key, val in (("layers", layers), ("batch", batch), ("seq", seq)):
        if val:
            c[key] = val
    c["precision"] = {"weights": "Bf16", "grads": "Bf16", "master": "F32", "adam": "F32"}
    return c


def views_of(flat, views):
    return {v["name"]: flat[v["offset"]:v["offset"] + math.prod(v["shape"])].view(*v["shape"]) for v in views}


class KernelStep:
    def __init__(self, cfg, seed=0):
        self.cfg = cfg
        g = torch.Generator(device=dev).manual_seed(seed)
        self.views, self.w, self.opt = {}, {}, {}
        L = cfg["layers"]
        for owner in X.owners(cfg):
            vs, n = X.param_views(cfg, owner)
            master = torch.empty(n, device=dev)
            mv = views_of(master, vs)
            for name, t in mv.items():
                if name.endswith("_w") and name.startswith("ln"):
                    t.fill_(1.0)
                elif name.endswith("_b"):
                    t.normal_(0.0, 0.02, generator=g)
                else:
                    std = 0.02 / math.sqrt(2 * L) if name in ("attproj_w", "fcproj_w") else 0.02
                    t.normal_(0.0, std, generator=g)
            w = master.to(bf16)
            opt = torch.zeros(3, n, device=dev)
            opt[0] = w.float()  # master = the bf16 weights exactly
            self.views[owner], self.w[owner], self.opt[owner] = vs, w, opt
        self.partials = torch.empty(32 * 2 * 4 * cfg["hidden"] + 32 * 4 * cfg["hidden"], device=dev)

    def W(self, owner):
        return views_of(self.w[owner], self.views[owner])

    def adam(self, owner, grads, step):
        w, opt, g = self.w[owner], self.opt[owner], grads[owner]
        n = w.numel()
        for v in self.views[owner]:
            o, c = v["offset"], math.prod(v["shape"])
            wd = ADAMW["weight_decay"] if len(v["shape"]) == 2 else 0.0
            K.adamw_update(w[o:o + c], opt[0, o:o + c], opt[1, o:o + c], opt[2, o:o + c], g[o:o + c], c,
                           ADAMW["lr"], ADAMW["beta1"], ADAMW["beta2"], ADAMW["eps"], wd, step)
        assert opt.shape == (3, n)

    def step(self, tokens, targets, step_no, capture=None):
        cfg = self.cfg
        B, T, C, NH = cfg["batch"], cfg["seq"], cfg["hidden"], cfg["heads"]
        D, V, Vp, k = C // NH, cfg["vocab"], cfg["padded_vocab"], cfg["output_chunks"]
        Vc, N, tied = Vp // k, B * T, cfg["tied_embeddings"]
        scale = 1.0 / math.sqrt(D)
        fused = cfg["attention"] == "Fused"
        part = self.partials
        E = self.W("embedding")
        chunk_w = [self.W(f"chunk{i}")["w"] for i in range(k)]
        # ---- forward
        x = torch.empty(B, T, C, device=dev, dtype=bf16)
        if tied:
            for i in range(k):
                K.embedding_forward(x, tokens, chunk_w[i], i * Vc, Vc, E["wpe"], N, T, C)
        else:
            K.embedding_forward(x, tokens, E["wte"], 0, Vp, E["wpe"], N, T, C)
        acts = []
        for l in range(cfg["layers"]):
            P = self.W(f"layer{l}")
            a = {"x_in": x}
            a["ln1"] = torch.empty_like(x)
            a["st1"] = torch.empty(2, N, device=dev)
            K.layernorm_forward(a["ln1"], a["st1"][0], a["st1"][1], x, P["ln1_w"], P["ln1_b"], N, C)
            a["qkv"] = F.linear(a["ln1"], P["qkv_w"], P["qkv_b"]).contiguous()
            a["atty"] = torch.empty_like(x)
            if fused:
                a["att"] = torch.empty(B, NH, T, device=dev)
                K.flash_forward(a["atty"], a["att"], a["qkv"], B, T, NH, D, scale)
            else:
                a["att"] = torch.empty(B, NH, T, T, device=dev, dtype=bf16)
                K.mat_forward(a["atty"], a["att"], a["qkv"], B, T, NH, D, scale)
            a["x_mid"] = (F.linear(a["atty"], P["attproj_w"], P["attproj_b"]) + x).contiguous()
            a["ln2"] = torch.empty_like(x)
            a["st2"] = torch.empty(2, N, device=dev)
            K.layernorm_forward(a["ln2"], a["st2"][0], a["st2"][1], a["x_mid"], P["ln2_w"], P["ln2_b"], N, C)
            a["fch"] = F.linear(a["ln2"], P["fc_w"], P["fc_b"]).contiguous()
            a["fg"] = torch.empty_like(a["fch"])
            K.gelu_forward(a["fg"], a["fch"], N * 4 * C)
            x = (F.linear(a["fg"], P["fcproj_w"], P["fcproj_b"]) + a["x_mid"]).contiguous()
            acts.append(a)
        x_out = x
        Fn = self.W("final_norm")
        lnf = torch.empty_like(x)
        stf = torch.empty(2, N, device=dev)
        K.layernorm_forward(lnf, stf[0], stf[1], x_out, Fn["lnf_w"], Fn["lnf_b"], N, C)
        lnf2 = lnf.view(N, C)
        stats = torch.empty(3, N, device=dev)
        kept = None
        for i in range(k):
            lg = (lnf2 @ chunk_w[i].t()).contiguous()
            if i == 0 and capture is not None:
                capture["logits"] = lg.view(B, T, Vc).clone()
            K.ce_stats_update(stats, lg, targets, N, Vc, i * Vc, V, int(i == 0))
            if k == 1:
                kept = lg
        losses = torch.empty(N, device=dev)
        K.ce_loss(losses, stats, N)
        loss = torch.empty(1, device=dev)
        K.sum_f32(loss, losses, N, 1.0 / N)
        if k == 1:
            K.ce_backward(kept, stats, targets, N, Vc, 0, V, 1.0 / N)
        # ---- backward
        grads = {}
        dlnf = torch.zeros(N, C, device=dev)
        for i in reversed(range(k)):
            if k > 1:
                lg = (lnf2 @ chunk_w[i].t()).contiguous()
                K.ce_backward(lg, stats, targets, N, Vc, i * Vc, V, 1.0 / N)
            else:
                lg = kept
            dlnf += lg.float() @ chunk_w[i].float()
            grads[f"chunk{i}"] = (lg.t() @ lnf2).contiguous().view(-1)
            if not tied:
                self.adam(f"chunk{i}", grads, step_no)
        dres = torch.empty(N, C, device=dev, dtype=bf16)
        gF = torch.empty(2 * C, device=dev, dtype=bf16)
        K.layernorm_backward(dres, gF[:C], gF[C:], dlnf, x_out, stf[0], stf[1], Fn["lnf_w"], N, C, 0, part)
        grads["final_norm"] = gF
        self.adam("final_norm", grads, step_no)
        for l in reversed(range(cfg["layers"])):
            P, a = self.W(f"layer{l}"), acts[l]
            g = torch.empty(self.w[f"layer{l}"].numel(), device=dev, dtype=bf16)
            gv = views_of(g, self.views[f"layer{l}"])
            dfch = (dres @ P["fcproj_w"]).contiguous()
            gv["fcproj_w"].copy_(dres.t() @ a["fg"].view(N, 4 * C))
            K.colsum(gv["fcproj_b"], dres, N, C, part)
            K.gelu_backward(dfch, a["fch"], N * 4 * C)
            dln2 = (dfch @ P["fc_w"]).contiguous()
            gv["fc_w"].copy_(dfch.t() @ a["ln2"].view(N, C))
            K.colsum(gv["fc_b"], dfch, N, 4 * C, part)
            K.layernorm_backward(dres, gv["ln2_w"], gv["ln2_b"], dln2, a["x_mid"], a["st2"][0], a["st2"][1], P["ln2_w"], N, C, 1, part)
            datty = (dres @ P["attproj_w"]).contiguous()
            gv["attproj_w"].copy_(dres.t() @ a["atty"].view(N, C))
            K.colsum(gv["attproj_b"], dres, N, C, part)
            dqkv = torch.empty(B, T, 3 * C, device=dev, dtype=bf16)
            if fused:
                delta = torch.empty(B, NH, T, device=dev)
                K.attention_backward_delta(delta, datty, a["atty"], B, T, NH, D)
                K.flash_backward(dqkv, datty, a["qkv"], a["att"], delta, B, T, NH, D, scale)
            else:
                datt = torch.empty(B, NH, T, T, device=dev, dtype=bf16)
                K.mat_backward(dqkv, datt, datty, a["qkv"], a["att"], B, T, NH, D, scale)
            dq2 = dqkv.view(N, 3 * C)
            dln1 = (dq2 @ P["qkv_w"]).contiguous()
            gv["qkv_w"].copy_(dq2.t() @ a["ln1"].view(N, C))
            K.colsum(gv["qkv_b"], dq2, N, 3 * C, part)
            K.layernorm_backward(dres, gv["ln1_w"], gv["ln1_b"], dln1, a["x_in"], a["st1"][0], a["st1"][1], P["ln1_w"], N, C, 1, part)
            grads[f"layer{l}"] = g
            self.adam(f"layer{l}", grads, step_no)
        ge = torch.empty(self.w["embedding"].numel(), device=dev, dtype=bf16)
        ev = views_of(ge, self.views["embedding"])
        K.embedding_backward_wpe(ev["wpe"], dres, B, T, C, cfg["max_seq"])
        if tied:
            for i in range(k):
                K.embedding_backward_wte(grads[f"chunk{i}"], dres, tokens, i * Vc, Vc, N, C)
        else:
            K.fill_bf16(ev["wte"], Vp * C, 0.0)
            K.embedding_backward_wte(ev["wte"], dres, tokens, 0, Vp, N, C)
        grads["embedding"] = ge
        self.adam("embedding", grads, step_no)
        if tied:
            for i in range(k):
                self.adam(f"chunk{i}", grads, step_no)
        torch.cuda.synchronize()
        return loss.item(), grads


def run_and_export(cfg, d, steps=10, seed=0):
    ks = KernelStep(cfg, seed)
    g = torch.Generator(device=dev).manual_seed(seed + 1)
    B, T = cfg["batch"], cfg["seq"]
    tokens = torch.randint(0, cfg["vocab"], (B, T), device=dev, dtype=torch.int32, generator=g)
    targets = torch.randint(0, cfg["vocab"], (B, T), device=dev, dtype=torch.int32, generator=g)
    w = X.Writer(d, cfg, ADAMW)
    for owner in X.owners(cfg):
        w.add(f"{owner}.weights", ks.w[owner], ks.views[owner])
        w.add(f"{owner}.optimizer", ks.opt[owner].clone())
    w.add("tokens", tokens)
    w.add("targets", targets)
    losses = []
    for s in range(1, steps + 1):
        cap = {} if s == 1 else None
        loss, grads = ks.step(tokens, targets, s, capture=cap)
        losses.append(loss)
        if s == 1:
            w.add("loss", torch.tensor([loss], dtype=torch.float32))
            w.add("logits", cap["logits"])
            for owner in X.owners(cfg):
                w.add(f"{owner}.grads", grads[owner], ks.views[owner])
        print(f"kernel_step {cfg['name']} step {s}: loss {loss:.5f}", flush=True)
    w.manifest["losses"] = losses
    w.close()
    return losses
