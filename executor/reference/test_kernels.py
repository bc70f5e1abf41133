"""Checks every kernel in executor/kernels against PyTorch on random inputs, at small sizes and
at the real sizes of gpt2-124m (B8 T1024 C768 NH12) and gpt3-1.3b (B4 T2048 C2048 NH16), and
times the fused attention next to PyTorch's SDPA flash attention.

Run on the GPU machine:  python3 test_kernels.py [--quick] [--no-timing]

Metric: relative L2 error ||out - ref|| / ||ref|| against an fp32 (or fp64) PyTorch computation
on the same bf16 inputs; outputs are poisoned with NaN before each launch, so an unwritten
element fails. Tolerances (stated per check below):
  - element-wise / row kernels with a bf16 output: 1e-2 (one bf16 rounding is ~2e-3 rel.)
  - fp32 outputs (statistics, lse, losses, AdamW state): 1e-4 .. 1e-3
  - attention outputs and gradients (bf16 operands on tensor cores, bf16 P and dS): 2e-2,
    and printed next to PyTorch's own bf16 SDPA error against the same fp32 reference.
  - bitwise (`BITS` lines, compared as integer views): grad_norm_partials against a replica of
    its summation order (the host replays the same order, executor/src/host/norm.rs), and
    adamw_update_clipped with scale 1.0 against adamw_update.
"""
import argparse
import math
import os
import sys

import torch
import torch.nn.functional as F

import kernels_py as K

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
dev = torch.device("cuda")
results = []


def rel(out, ref):
    out = out.double()
    ref = ref.double()
    if not torch.isfinite(out).all():
        return float("inf")
    n = ref.norm().item()
    return (out - ref).norm().item() / (n if n > 0 else 1.0)


def check(name, out, ref, tol, extra=""):
    e = rel(out, ref)
    mx = (out.double() - ref.double()).abs().max().item() if torch.isfinite(out).all() else float("inf")
    ok = e <= tol
    results.append((name, ok, e, tol))
    print(f"{'PASS' if ok else 'FAIL'}  {name:55s} rel_l2 {e:.3e} (tol {tol:.0e})  max_abs {mx:.3e} {extra}", flush=True)
    return ok


def bf(*shape, scale=1.0):
    return (torch.randn(*shape, device=dev) * scale).to(torch.bfloat16)


def nan_bf(*shape):
    return torch.full(shape, float("nan"), device=dev, dtype=torch.bfloat16)


def nan_f(*shape):
    return torch.full(shape, float("nan"), device=dev, dtype=torch.float32)


def sync():
    torch.cuda.synchronize()


# ------------------------------------------------------------------ embedding
def test_embedding(B, T, C, Vp, max_seq, k, vocab_used, tag):
    N = B * T
    tokens = torch.randint(0, vocab_used, (B, T), device=dev, dtype=torch.int32)
    wte = bf(Vp, C, scale=0.02)
    wpe = bf(max_seq, C, scale=0.02)
    out = nan_bf(B, T, C)
    Vc = Vp // k
    for i in range(k):  # tied layout: one launch per chunk, any order
        chunk = wte[i * Vc:(i + 1) * Vc].contiguous()
        K.embedding_forward(out, tokens, chunk, i * Vc, Vc, wpe, N, T, C)
    sync()
    ref = (wte.float()[tokens.long()] + wpe.float()[:T][None]).to(torch.bfloat16)
    check(f"embedding_forward {tag} k={k}", out.float(), ref.float(), 1e-6)
    dout = bf(B, T, C)
    dwpe = nan_bf(max_seq, C)
    K.embedding_backward_wpe(dwpe, dout, B, T, C, max_seq)
    base = bf(Vp, C, scale=0.01)
    dwte = base.clone()
    for i in range(k):
        chunk = dwte[i * Vc:(i + 1) * Vc]  # contiguous rows of the table
        K.embedding_backward_wte(chunk, dout, tokens, i * Vc, Vc, N, C)
    sync()
    ref_wpe = torch.zeros(max_seq, C, device=dev, dtype=torch.float32)
    ref_wpe[:T] = dout.float().sum(0)
    check(f"embedding_backward_wpe {tag}", dwpe.float(), ref_wpe, 1e-2)
    ref_wte = base.float().index_add(0, tokens.long().flatten(), dout.float().view(N, C))
    check(f"embedding_backward_wte {tag} (accumulate, k={k})", dwte.float(), ref_wte, 1e-2)
    dwte2 = base.clone()
    for i in reversed(range(k)):
        K.embedding_backward_wte(dwte2[i * Vc:(i + 1) * Vc], dout, tokens, i * Vc, Vc, N, C)
    sync()
    same = torch.equal(dwte, dwte2)
    results.append((f"embedding_backward_wte {tag} deterministic", same, 0.0, 0.0))
    print(f"{'PASS' if same else 'FAIL'}  embedding_backward_wte {tag} bitwise repeatable", flush=True)


# ------------------------------------------------------------------ layer norm
def test_layernorm(N, C, tag, f32dy=False):
    x = bf(N, C, scale=2.0) + 0.5
    w = bf(C, scale=0.3) + 1.0
    b = bf(C, scale=0.1)
    out, mean, rstd = nan_bf(N, C), nan_f(N), nan_f(N)
    K.layernorm_forward(out, mean, rstd, x, w, b, N, C)
    sync()
    xf = x.float().requires_grad_(True)
    wf = w.float().requires_grad_(True)
    bfl = b.float().requires_grad_(True)
    ref = F.layer_norm(xf, (C,), wf, bfl, 1e-5)
    check(f"layernorm_forward out {tag}", out.float(), ref.detach(), 1e-2)
    check(f"layernorm_forward mean {tag}", mean, x.float().mean(-1), 1e-5)
    check(f"layernorm_forward rstd {tag}", rstd, torch.rsqrt(x.float().var(-1, unbiased=False) + 1e-5), 1e-4)
    dy = torch.randn(N, C, device=dev) if f32dy else bf(N, C)
    ref.backward(dy.float())
    partials = torch.empty(32 * 2 * C, device=dev)
    for acc in (0, 1):
        dres0 = bf(N, C)
        dx = dres0.clone() if acc else nan_bf(N, C)
        dw, db = nan_bf(C), nan_bf(C)
        K.layernorm_backward(dx, dw, db, dy, x, mean, rstd, w, N, C, acc, partials)
        sync()
        want = xf.grad + (dres0.float() if acc else 0)
        check(f"layernorm_backward dx {tag} acc={acc} f32dy={f32dy}", dx.float(), want, 1e-2)
    check(f"layernorm_backward dw {tag} f32dy={f32dy}", dw.float(), wf.grad, 1e-2)
    check(f"layernorm_backward db {tag} f32dy={f32dy}", db.float(), bfl.grad, 1e-2)


def test_colsum(rows, n, tag):
    x = bf(rows, n)
    out = nan_bf(n)
    partials = torch.empty(32 * n, device=dev)
    K.colsum(out, x, rows, n, partials)
    sync()
    check(f"colsum (bias grad) {tag}", out.float(), x.float().sum(0), 1e-2)
    base = bf(n)
    out2 = base.clone()
    K.colsum(out2, x, rows, n, partials, S=7, accumulate=1)
    sync()
    check(f"colsum accumulate S=7 {tag}", out2.float(), x.float().sum(0) + base.float(), 1e-2)


def test_gelu(n, tag):
    x = bf(n, scale=2.0)
    out = nan_bf(n)
    K.gelu_forward(out, x, n)
    xf = x.float().requires_grad_(True)
    y = F.gelu(xf, approximate="tanh")
    sync()
    check(f"gelu_forward {tag}", out.float(), y.detach(), 1e-2)
    dy = bf(n)
    y.backward(dy.float())
    d = dy.clone()
    K.gelu_backward(d, x, n)
    sync()
    check(f"gelu_backward {tag}", d.float(), xf.grad, 1e-2)


def test_ce(N, V, Vp, k, tag):
    Vc = Vp // k
    logits = bf(N, Vp, scale=3.0)
    targets = torch.randint(0, V, (N,), device=dev, dtype=torch.int32)
    stats = nan_f(3, N)
    chunks = [logits[:, i * Vc:(i + 1) * Vc].contiguous() for i in range(k)]
    for i in range(k):
        K.ce_stats_update(stats, chunks[i], targets, N, Vc, i * Vc, V, int(i == 0))
    losses = nan_f(N)
    K.ce_loss(losses, stats, N)
    mean = nan_f(1)
    K.sum_f32(mean, losses, N, 1.0 / N)
    sync()
    lf = logits.float()[:, :V].requires_grad_(True)
    ref = F.cross_entropy(lf, targets.long(), reduction="none")
    check(f"ce_stats+ce_loss per row {tag} k={k}", losses, ref.detach(), 1e-5)
    check(f"sum_f32 mean loss {tag}", mean, ref.mean().detach().reshape(1), 1e-5)
    ref.mean().backward()
    grad_ref = torch.zeros(N, Vp, device=dev)
    grad_ref[:, :V] = lf.grad
    got = []
    for i in range(k):
        K.ce_backward(chunks[i], stats, targets, N, Vc, i * Vc, V, 1.0 / N)
        got.append(chunks[i])
    sync()
    check(f"ce_backward dlogits {tag} k={k}", torch.cat(got, 1).float(), grad_ref, 1e-2)


def test_adamw(n, tag):
    lr, b1, b2, eps, wd = 6e-4, 0.9, 0.95, 1e-8, 0.1
    master = torch.randn(n, device=dev) * 0.02
    m = torch.zeros(n, device=dev)
    v = torch.zeros(n, device=dev)
    weights = nan_bf(n)
    p_ref = master.double().clone()
    m_ref = m.double().clone()
    v_ref = v.double().clone()
    for step in range(1, 4):
        g = bf(n, scale=0.01)
        K.adamw_update(weights, master, m, v, g, n, lr, b1, b2, eps, wd, step)
        gd = g.double()
        p_ref *= 1 - lr * wd
        m_ref = b1 * m_ref + (1 - b1) * gd
        v_ref = b2 * v_ref + (1 - b2) * gd * gd
        p_ref -= (lr / (1 - b1 ** step)) * m_ref / (v_ref.sqrt() / math.sqrt(1 - b2 ** step) + eps)
    sync()
    check(f"adamw master {tag} (3 steps)", master, p_ref, 1e-5)
    check(f"adamw m {tag}", m, m_ref, 1e-5)
    check(f"adamw v {tag}", v, v_ref, 1e-4)
    check(f"adamw bf16 weights {tag}", weights.float(), p_ref.float(), 1e-2)


def check_bits(name, out, ref):
    """Bitwise equality (integer views of the same width); NaN-poisoned outputs fail."""
    ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}
    out, ref = out.contiguous(), ref.contiguous()
    assert out.dtype == ref.dtype and out.shape == ref.shape, (out.dtype, ref.dtype, out.shape, ref.shape)
    it = ints[out.element_size()]
    diff = int((out.view(it) != ref.view(it)).sum().item())
    ok = diff == 0
    results.append((name, ok, float(diff), 0.0))
    print(f"{'PASS' if ok else 'FAIL'}  BITS {name:50s} {diff} of {out.numel()} elements differ", flush=True)
    return ok


def adamw_update_clipped(weights, master, m, v, grads, n, lr, b1, b2, eps, wd, step, scale):
    """adamw_update's launch and arguments, then `scale` (a 1-element fp32 tensor) last."""
    s = K.adamw_scalars(lr, b1, b2, eps, wd, step)
    K.launch("adamw.cu", "adamw_update_clipped", K.cdiv(n, 256), 256,
             (weights, master, m, v, grads, K.I64(n)) + tuple(K.F32(float(x)) for x in s) + (scale,))


def test_adamw_clipped(n, tag):
    lr, b1, b2, eps, wd = 6e-4, 0.9, 0.95, 1e-8, 0.1
    master0 = torch.randn(n, device=dev) * 0.02
    gs = [bf(n, scale=0.01) for _ in range(3)]

    # scale 1.0: bitwise adamw_update, every output, over 3 steps
    plain = [nan_bf(n), master0.clone(), torch.zeros(n, device=dev), torch.zeros(n, device=dev)]
    clip = [nan_bf(n), master0.clone(), torch.zeros(n, device=dev), torch.zeros(n, device=dev)]
    one = torch.ones(1, device=dev, dtype=torch.float32)
    for step, g in enumerate(gs, 1):
        K.adamw_update(*plain, g, n, lr, b1, b2, eps, wd, step)
        adamw_update_clipped(*clip, g, n, lr, b1, b2, eps, wd, step, one)
    sync()
    for name, a, b in zip(("weights", "master", "m", "v"), clip, plain):
        check_bits(f"adamw_update_clipped scale 1 = adamw_update {name} {tag}", a, b)

    # scale 0.3: PyTorch's formula (float64) on the gradient pre-scaled in fp32 (g * 0.3f, one
    # rounding, as the kernel does), tolerances of test_adamw
    sc = torch.full((1,), 0.3, device=dev, dtype=torch.float32)
    weights, master = nan_bf(n), master0.clone()
    m, v = torch.zeros(n, device=dev), torch.zeros(n, device=dev)
    p_ref, m_ref, v_ref = master0.double().clone(), m.double().clone(), v.double().clone()
    for step, g in enumerate(gs, 1):
        adamw_update_clipped(weights, master, m, v, g, n, lr, b1, b2, eps, wd, step, sc)
        gd = (g.float() * sc).double()
        p_ref *= 1 - lr * wd
        m_ref = b1 * m_ref + (1 - b1) * gd
        v_ref = b2 * v_ref + (1 - b2) * gd * gd
        p_ref -= (lr / (1 - b1 ** step)) * m_ref / (v_ref.sqrt() / math.sqrt(1 - b2 ** step) + eps)
    sync()
    check(f"adamw_update_clipped scale 0.3 master {tag} (3 steps)", master, p_ref, 1e-5)
    check(f"adamw_update_clipped scale 0.3 m {tag}", m, m_ref, 1e-5)
    check(f"adamw_update_clipped scale 0.3 v {tag}", v, v_ref, 1e-4)
    check(f"adamw_update_clipped scale 0.3 bf16 weights {tag}", weights.float(), p_ref.float(), 1e-2)


GRAD_NORM_PARTIALS = 256  # models::inventory::GRAD_NORM_PARTIALS: the grid, fixed


def grad_norm_partials(g, n, partials):
    K.launch("grad_norm.cu", "grad_norm_partials", GRAD_NORM_PARTIALS, 256, (g, K.I64(n), partials))


def grad_norm_reference(g):
    """grad_norm.cu's order in fp32 with torch, one IEEE rounding per elementwise op (no FMA):
    block b sums [b*per, min(n, (b+1)*per)), per = ceil(n/256); thread t the block's elements
    t, t+256, ... in order; then the halving tree over the 256 threads. Zero padding changes no
    bit (acc + 0*0 = acc, acc >= 0)."""
    n = g.numel()
    per = K.cdiv(n, 256)
    if per == 0:
        return torch.zeros(256, device=dev)
    x = torch.zeros(256 * per, device=dev)
    x[:n] = g.float()
    k = K.cdiv(per, 256)
    blocks = torch.zeros(256, k * 256, device=dev)
    blocks[:, :per] = x.view(256, per)
    sq = (blocks * blocks).view(256, k, 256)  # [block, iteration, thread]
    acc = torch.zeros(256, 256, device=dev)
    for i in range(k):
        acc = acc + sq[:, i, :]
    s = acc
    while s.shape[1] > 1:
        h = s.shape[1] // 2
        s = s[:, :h] + s[:, h:]
    return s[:, 0].contiguous()


def grad_checksums_reference(g):
    """grad_norm.cu's exact checksums: per block, the sum modulo 2^32 of
    (bits(g[i]) + 1) * (uint32(i) * 2654435761 + 0x9E3779B9), as int32 bit patterns."""
    n = g.numel()
    per = K.cdiv(n, 256)
    out = torch.zeros(256, dtype=torch.int64, device=dev)
    if per == 0:
        return out.to(torch.int32)
    m32 = (1 << 32) - 1
    i = torch.arange(n, device=dev, dtype=torch.int64)
    bits = g.view(torch.int16).to(torch.int64) & 0xFFFF
    mult = ((i & m32) * 2654435761 + 0x9E3779B9) & m32
    term = ((bits + 1) * mult) & m32
    out.index_add_(0, i // per, term)
    out = out & m32
    return torch.where(out >= 1 << 31, out - (1 << 32), out).to(torch.int32)


def test_grad_norm(n, tag):
    # magnitudes 2^-20 .. 2^9 times a normal, both signs, some exact zeros
    g = torch.randn(n, device=dev) * torch.exp2(torch.randint(-20, 10, (n,), device=dev).float())
    g[::97] = 0.0
    g = g.to(torch.bfloat16)
    words = nan_f(2 * GRAD_NORM_PARTIALS)
    grad_norm_partials(g, n, words)
    sync()
    partials = words[:GRAD_NORM_PARTIALS]
    check_bits(f"grad_norm_partials {tag} n={n}", partials, grad_norm_reference(g))
    got_sums = words[GRAD_NORM_PARTIALS:].contiguous().view(torch.int32)
    check_bits(f"grad_norm checksums {tag} n={n}", got_sums, grad_checksums_reference(g))
    # the sum of squares against PyTorch's
    ref = (g.float() ** 2).sum()
    check(f"grad_norm sum of squares {tag} n={n}", partials.double().sum().view(1), ref.double().view(1), 1e-5)
    # and repeatable
    again = nan_f(2 * GRAD_NORM_PARTIALS)
    grad_norm_partials(g, n, again)
    sync()
    check_bits(f"grad_norm_partials repeat {tag} n={n}", again, words)


def test_misc(n):
    p = nan_f(n)
    K.fill_f32(p, n, 0.0)
    q = nan_bf(n)
    K.fill_bf16(q, n, 0.0)
    x = torch.randn(n, device=dev)
    y = nan_bf(n)
    K.convert_f32_to_bf16(y, x, n)
    sync()
    check("fill_f32", p, torch.zeros(n, device=dev), 0.0)
    check("fill_bf16", q.float(), torch.zeros(n, device=dev), 0.0)
    check("convert_f32_to_bf16", y.float(), x.to(torch.bfloat16).float(), 0.0)


def init_reference(n, first, key, mean, std):
    """init.cu's generator in float64 with NumPy: SplitMix64's finaliser of key + (c + 1) * G,
    Box-Muller from its two halves."""
    import numpy as np
    M = np.uint64
    with np.errstate(over="ignore"):
        c = np.arange(first, first + n, dtype=np.uint64)
        z = M(key) + (c + M(1)) * M(0x9E3779B97F4A7C15)
        z = (z ^ (z >> M(30))) * M(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> M(27))) * M(0x94D049BB133111EB)
        h = z ^ (z >> M(31))
    u1 = ((h >> M(40)) + M(1)).astype(np.float64) / 16777216.0
    u2 = (h & M(0xFFFFFF)).astype(np.float64) / 16777216.0
    g = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return torch.from_numpy(mean + std * g).to(dev)


def test_init(n, first, key, mean, std, tag):
    w = nan_bf(n)
    m = nan_f(n)
    K.init_params(w, m, n, first, key, mean, std)
    sync()
    ref = init_reference(n, first, key, mean, std) if std != 0 else torch.full((n,), mean, device=dev, dtype=torch.float64)
    check(f"init_params weights {tag}", w.float(), ref, 1e-2)
    check(f"init_params master = float(weights) {tag}", m, w.float(), 0.0)
    # The same elements made in two pieces at other offsets give the same bits.
    w2 = nan_bf(n)
    m2 = nan_f(n)
    h = n // 3
    K.init_params(w2, m2, h, first, key, mean, std)
    K.init_params(w2[h:], m2[h:], n - h, first + h, key, mean, std)
    sync()
    same = torch.equal(w2.view(torch.int16), w.view(torch.int16))
    results.append((f"init_params in pieces, bit for bit {tag}", same, 0.0, 0.0))
    print(f"{'PASS' if same else 'FAIL'}  init_params in pieces, bit for bit {tag}", flush=True)
    if std != 0:
        x = w.double()
        ok = abs(x.mean().item() - mean) < 5 * std / math.sqrt(n) and abs(x.std().item() / std - 1) < 0.01
        results.append((f"init_params mean and std {tag}", ok, 0.0, 0.0))
        print(f"{'PASS' if ok else 'FAIL'}  init_params mean {x.mean().item():.3e} std {x.std().item():.5f} (want {std}) {tag}", flush=True)


# ------------------------------------------------------------------ attention
def ref_attention(qkv, B, T, NH, D):
    """fp32 reference on the bf16 inputs; returns out, lse, and a backward closure."""
    C = NH * D
    x = qkv.float().view(B, T, 3, NH, D).permute(2, 0, 3, 1, 4).contiguous().requires_grad_(True)
    q, k, v = x[0], x[1], x[2]
    s = (q @ k.transpose(-1, -2)) / math.sqrt(D)
    mask = torch.ones(T, T, device=dev, dtype=torch.bool).tril()
    s = s.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(s, -1)
    p = torch.softmax(s, -1)
    o = p @ v  # B NH T D
    out = o.permute(0, 2, 1, 3).reshape(B, T, C)
    return x, out, lse, p


def sdpa_bf16_error(qkv, dout, B, T, NH, D, ref_out, ref_grads):
    q, k, v = qkv.view(B, T, 3, NH, D).permute(2, 0, 3, 1, 4).detach()
    q, k, v = [t.contiguous().requires_grad_(True) for t in (q, k, v)]
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION):
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    out = o.permute(0, 2, 1, 3).reshape(B, T, NH * D)
    out.backward(dout)
    return rel(out.float(), ref_out), [rel(g.float(), r) for g, r in zip((q.grad, k.grad, v.grad), ref_grads)]


def test_flash(B, T, NH, D, tag, timing=False, f=None):
    f = f or K.ATTN_FILE
    tag = f"{tag} [{f}]"
    C = NH * D
    scale = 1.0 / math.sqrt(D)
    qkv = bf(B, T, 3 * C)
    out, lse = nan_bf(B, T, C), nan_f(B, NH, T)
    K.flash_forward(out, lse, qkv, B, T, NH, D, scale, f=f)
    sync()
    x, ref_out, ref_lse, _ = ref_attention(qkv, B, T, NH, D)
    dout = bf(B, T, C)
    ref_out.backward(dout.float())
    g = x.grad  # 3 B NH T D
    ref_grads = [g[i] for i in range(3)]
    sd_out, sd_g = sdpa_bf16_error(qkv, dout, B, T, NH, D, ref_out.detach(), ref_grads)
    check(f"flash_forward out {tag}", out.float(), ref_out.detach(), 2e-2, f"[sdpa bf16: {sd_out:.2e}]")
    check(f"flash_forward lse {tag}", lse, ref_lse.detach(), 1e-4)
    delta = nan_f(B, NH, T)
    K.attention_backward_delta(delta, dout, out, B, T, NH, D)
    sync()
    ref_delta = (dout.float() * out.float()).view(B, T, NH, D).sum(-1).permute(0, 2, 1)
    check(f"attention_backward_delta {tag}", delta, ref_delta, 1e-4)
    dqkv = nan_bf(B, T, 3 * C)
    K.flash_backward(dqkv, dout, qkv, lse, delta, B, T, NH, D, scale, f=f)
    sync()
    got = dqkv.float().view(B, T, 3, NH, D).permute(2, 0, 3, 1, 4)
    for i, name in enumerate("qkv"):
        check(f"flash_backward d{name} {tag}", got[i], ref_grads[i], 2e-2, f"[sdpa bf16: {sd_g[i]:.2e}]")
    dqkv2 = nan_bf(B, T, 3 * C)
    K.flash_backward(dqkv2, dout, qkv, lse, delta, B, T, NH, D, scale, f=f)
    sync()
    same = torch.equal(dqkv.view(torch.int16), dqkv2.view(torch.int16))
    results.append((f"flash_backward {tag} deterministic", same, 0.0, 0.0))
    print(f"{'PASS' if same else 'FAIL'}  flash_backward {tag} bitwise repeatable", flush=True)
    del x, ref_out, ref_lse, g, ref_grads, got
    torch.cuda.empty_cache()
    if timing:
        time_attention(B, T, NH, D, qkv, dout, out, lse, delta, dqkv, tag, f)


def bench(fn, iters=20):
    for _ in range(3):
        fn()
    ts = []
    for _ in range(iters):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2]


def kt(fn, reps=20):
    """GPU time (ms) of the kernel launches fn makes: CUDA-graph replays, arguments bound once."""
    return K.time_launches(K.capture(fn), reps=reps)


def time_attention(B, T, NH, D, qkv, dout, out, lse, delta, dqkv, tag, f):
    scale = 1.0 / math.sqrt(D)
    fwd = kt(lambda: K.flash_forward(out, lse, qkv, B, T, NH, D, scale, f=f))
    bwd = kt(lambda: (K.attention_backward_delta(delta, dout, out, B, T, NH, D),
                      K.flash_backward(dqkv, dout, qkv, lse, delta, B, T, NH, D, scale, f=f)))
    q, k, v = [t.contiguous() for t in qkv.view(B, T, 3, NH, D).permute(2, 0, 3, 1, 4)]
    q.requires_grad_(True)
    k.requires_grad_(True)
    v.requires_grad_(True)
    do = dout.view(B, T, NH, D).permute(0, 2, 1, 3).contiguous()
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION):
        t_fwd = bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        t_bwd = bench(lambda: torch.autograd.grad(o, (q, k, v), do, retain_graph=True))
    flops = 2 * B * T * T * NH * D  # causal half of QK^T and PV (program.rs convention)
    print(f"TIME  attention {tag}: ours fwd {fwd:.3f} ms ({flops / fwd / 1e9:.0f} TFLOP/s) "
          f"bwd(delta+bwd) {bwd:.3f} ms | torch sdpa flash fwd {t_fwd:.3f} ms bwd {t_bwd:.3f} ms | "
          f"ratio fwd {t_fwd / fwd:.2f}x bwd {t_bwd / bwd:.2f}x (torch/ours, >1 = ours faster)", flush=True)


def test_materialized(B, T, NH, D, tag):
    C = NH * D
    scale = 1.0 / math.sqrt(D)
    qkv = bf(B, T, 3 * C)
    out, att = nan_bf(B, T, C), nan_bf(B, NH, T, T)
    K.mat_forward(out, att, qkv, B, T, NH, D, scale)
    sync()
    x, ref_out, _, ref_p = ref_attention(qkv, B, T, NH, D)
    check(f"materialized_forward out {tag}", out.float(), ref_out.detach(), 2e-2)
    check(f"materialized_forward att {tag}", att.float(), ref_p.detach(), 1e-2)
    dout = bf(B, T, C)
    ref_out.backward(dout.float())
    dqkv, datt = nan_bf(B, T, 3 * C), nan_bf(B, NH, T, T)
    K.mat_backward(dqkv, datt, dout, qkv, att, B, T, NH, D, scale)
    sync()
    got = dqkv.float().view(B, T, 3, NH, D).permute(2, 0, 3, 1, 4)
    for i, name in enumerate("qkv"):
        check(f"materialized_backward d{name} {tag}", got[i], x.grad[i], 2e-2)


def time_simple(tag, B, T, C):
    """Times the memory-bound kernels at a real size; prints achieved bandwidth."""
    N = B * T
    x = bf(N, C)
    w, b = bf(C), bf(C)
    out, mean, rstd = bf(N, C), torch.empty(N, device=dev), torch.empty(N, device=dev)
    t = kt(lambda: K.layernorm_forward(out, mean, rstd, x, w, b, N, C))
    tt = bench(lambda: F.layer_norm(x, (C,), w, b, 1e-5))
    print(f"TIME  layernorm_forward {tag}: {t * 1e3:.1f} us ({2 * N * C * 2 / t / 1e6:.0f} GB/s) torch {tt * 1e3:.1f} us", flush=True)
    partials = torch.empty(32 * 2 * C, device=dev)
    dy = bf(N, C)
    dx = bf(N, C)
    dw, db = bf(C), bf(C)
    t = kt(lambda: K.layernorm_backward(dx, dw, db, dy, x, mean, rstd, w, N, C, 1, partials))
    print(f"TIME  layernorm_backward {tag}: {t * 1e3:.1f} us", flush=True)
    h = bf(N * 4 * C)
    g = bf(N * 4 * C)
    t = kt(lambda: K.gelu_forward(g, h, N * 4 * C))
    tt = bench(lambda: F.gelu(h, approximate="tanh"))
    print(f"TIME  gelu_forward {tag}: {t * 1e3:.1f} us torch {tt * 1e3:.1f} us", flush=True)
    t = kt(lambda: K.gelu_backward(g, h, N * 4 * C))
    print(f"TIME  gelu_backward {tag}: {t * 1e3:.1f} us", flush=True)
    Vp = 50304
    logits = bf(N, Vp)
    targets = torch.randint(0, 50257, (N,), device=dev, dtype=torch.int32)
    stats = torch.empty(3, N, device=dev)
    t = kt(lambda: K.ce_stats_update(stats, logits, targets, N, Vp, 0, 50257, 1))
    print(f"TIME  ce_stats_update {tag} (Vp=50304): {t * 1e3:.1f} us ({N * Vp * 2 / t / 1e6:.0f} GB/s)", flush=True)
    t = kt(lambda: K.ce_backward(logits, stats, targets, N, Vp, 0, 50257, 1.0 / N))
    print(f"TIME  ce_backward {tag}: {t * 1e3:.1f} us ({2 * N * Vp * 2 / t / 1e6:.0f} GB/s)", flush=True)
    n = 12 * C * C
    master, m, v = torch.randn(n, device=dev), torch.zeros(n, device=dev), torch.zeros(n, device=dev)
    wt, gr = bf(n), bf(n)
    t = kt(lambda: K.adamw_update(wt, master, m, v, gr, n, 1e-4, 0.9, 0.95, 1e-8, 0.1, 1))
    print(f"TIME  adamw_update {tag} (one layer, {n} params): {t * 1e3:.1f} us ({n * 28 / t / 1e6:.0f} GB/s)", flush=True)
    tokens = torch.randint(0, 50257, (B, T), device=dev, dtype=torch.int32)
    dwte = bf(Vp, C)
    t = kt(lambda: K.embedding_backward_wte(dwte, x, tokens, 0, Vp, N, C), reps=3)
    print(f"TIME  embedding_backward_wte {tag}: {t * 1e3:.1f} us", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes only")
    ap.add_argument("--no-timing", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}", flush=True)
    errs = K.compile_all()
    for f, e in errs.items():
        ok = e is None
        results.append((f"compile {f}", ok, 0.0, 0.0))
        print(f"{'PASS' if ok else 'FAIL'}  compile {f}" + ("" if ok else f"\n{e}"), flush=True)
    if not all(e is None for e in errs.values()):
        print("compile failures: continuing with the files that compiled", flush=True)

    def run(fn, *a, **kw):
        try:
            fn(*a, **kw)
        except Exception as e:  # noqa: BLE001
            import traceback
            traceback.print_exc()
            results.append((f"{fn.__name__}{a}", False, float("nan"), 0.0))
            print(f"FAIL  {fn.__name__}{a}: exception {e}", flush=True)

    run(test_misc, 100003)
    run(test_init, 1000003, 17, 0x1234_5678_9ABC_DEF0, 0.0, 0.02, "normal(0, 0.02)")
    run(test_init, 4099, 0, 7, 1.0, 0.0, "constant 1")
    run(test_embedding, 2, 64, 64, 512, 128, 4, 50, "small")
    run(test_embedding, 2, 64, 64, 512, 128, 1, 512, "small-untied")
    run(test_layernorm, 37, 64, "small")
    run(test_layernorm, 37, 200, "small C=200", f32dy=True)
    run(test_colsum, 100, 77, "small")
    run(test_gelu, 4096, "small")
    run(test_ce, 33, 1000, 1024, 4, "small")
    run(test_ce, 33, 1000, 1024, 1, "small")
    run(test_adamw, 10001, "small")
    run(test_adamw_clipped, 10001, "small")
    run(test_grad_norm, 100, "small (empty blocks)")
    run(test_grad_norm, 1000, "small")
    run(test_grad_norm, 2 ** 20 + 7, "1M")
    variants = [f for f in ("attention.cu",) if os.path.exists(os.path.join(K.KERNEL_DIR, f))]
    for f in variants:
        for D in (32, 64, 80, 96, 128):
            run(test_flash, 2, 200, 2, D, f"small B2 T200 NH2 D{D}", f=f)
        run(test_flash, 1, 64, 1, 64, "B1 T64 NH1 D64", f=f)
    run(test_materialized, 2, 77, 2, 32, "small B2 T77 NH2 D32")
    run(test_materialized, 4, 128, 4, 32, "gpt2-tiny B4 T128 NH4 D32")
    if not args.quick:
        run(test_embedding, 8, 1024, 768, 50304, 1024, 1, 50257, "gpt2-124m")
        run(test_embedding, 4, 2048, 2048, 50304, 2048, 1, 50257, "gpt3-1.3b untied")
        run(test_layernorm, 8192, 768, "gpt2-124m")
        run(test_layernorm, 8192, 2048, "gpt3-1.3b", f32dy=True)
        run(test_colsum, 8192, 3 * 768, "gpt2-124m qkv bias")
        run(test_gelu, 8192 * 4 * 768, "gpt2-124m")
        run(test_ce, 8192, 50257, 50304, 1, "gpt2-124m")
        run(test_ce, 8192, 50257, 50304, 4, "gpt3-1.3b chunks")
        run(test_adamw, 12 * 768 * 768 + 1, "gpt2 layer")
        run(test_adamw_clipped, 12 * 768 * 768 + 1, "gpt2 layer")
        run(test_grad_norm, 85_000_011, "85M (a large owner)")
        for f in variants:
            run(test_flash, 8, 1024, 12, 64, "gpt2-124m B8 T1024 NH12 D64", timing=not args.no_timing, f=f)
            run(test_flash, 4, 2048, 16, 128, "gpt3-1.3b B4 T2048 NH16 D128", timing=not args.no_timing, f=f)
        if not args.no_timing:
            run(time_simple, "gpt2-124m", 8, 1024, 768)
            run(time_simple, "gpt3-1.3b", 4, 2048, 2048)
    npass = sum(1 for r in results if r[1])
    print(f"\nSUMMARY {npass}/{len(results)} passed", flush=True)
    for name, ok, e, tol in results:
        if not ok:
            print(f"  FAILED: {name} (rel {e:.3e}, tol {tol:.0e})")
    sys.exit(0 if npass == len(results) else 1)


if __name__ == "__main__":
    main()
