"""Loads executor/kernels/*.cu through CuPy's NVRTC (as the Rust runtime loads them through
cudarc) and launches them on torch tensors. Shared by test_kernels.py and gpt_reference.py."""
import os

import cupy
import numpy as np
import torch

KERNEL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "kernels")
OPTIONS = ("-std=c++17", "-I/usr/local/cuda/include")

_modules = {}


def module(fname):
    if fname not in _modules:
        with open(os.path.join(KERNEL_DIR, fname)) as f:
            src = f.read()
        _modules[fname] = cupy.RawModule(code=src, options=OPTIONS, backend="nvrtc")
    return _modules[fname]


def compile_all():
    """Compiles every .cu file; returns {file: None or error text}."""
    out = {}
    for f in sorted(os.listdir(KERNEL_DIR)):
        if f.endswith(".cu"):
            try:
                module(f).compile()
                out[f] = None
            except Exception as e:  # noqa: BLE001
                out[f] = str(e)
    return out


def _arg(a):
    if isinstance(a, torch.Tensor):
        assert a.is_cuda
        if a.dtype == torch.bfloat16:
            a = a.view(torch.int16)
        return cupy.from_dlpack(a.detach())
    return a


def I32(v):
    return np.int32(v)


def I64(v):
    return np.int64(v)


def F32(v):
    return np.float32(v)


_functions = {}
_captured = None  # list while capture() runs


def launch(fname, kname, grid, block, args, smem=0):
    key = (fname, kname)
    if key not in _functions:
        _functions[key] = module(fname).get_function(kname)
    k = _functions[key]
    if smem > 48 * 1024 and k.max_dynamic_shared_size_bytes < smem:
        k.max_dynamic_shared_size_bytes = smem
    grid = tuple(int(g) for g in (grid if isinstance(grid, tuple) else (grid,)))
    block = tuple(int(b) for b in (block if isinstance(block, tuple) else (block,)))
    bound = tuple(_arg(a) for a in args)
    if _captured is not None:
        _captured.append(lambda: k(grid, block, bound, shared_mem=smem))
    else:
        k(grid, block, bound, shared_mem=smem)


def capture(fn):
    """Runs fn without launching; returns the launches it would make as prepared closures
    (arguments converted once), for timing without the per-call conversion cost."""
    global _captured
    _captured = []
    try:
        fn()
        return _captured
    finally:
        _captured = None


def time_launches(fns, reps=20, trials=5):
    """Median GPU time in ms of one pass over the prepared launches fns, from a CUDA graph of
    `reps` passes replayed `trials` times (falls back to a plain loop if capture fails)."""
    s = cupy.cuda.Stream(non_blocking=True)
    torch.cuda.synchronize()
    with s:
        for f in fns:
            f()
        s.synchronize()
        graph = None
        try:
            s.begin_capture()
            for _ in range(reps):
                for f in fns:
                    f()
            graph = s.end_capture()
        except Exception:  # noqa: BLE001
            graph = None
        ts = []
        for _ in range(trials + 1):
            a, b = cupy.cuda.Event(), cupy.cuda.Event()
            a.record(s)
            if graph is not None:
                graph.launch(s)
            else:
                for _ in range(reps):
                    for f in fns:
                        f()
            b.record(s)
            b.synchronize()
            ts.append(cupy.cuda.get_elapsed_time(a, b) / reps)
        ts = sorted(ts[1:])
    return ts[len(ts) // 2]


def cdiv(a, b):
    return (a + b - 1) // b


def roundup32(x):
    return cdiv(x, 32) * 32


# Which file holds the fused attention (a variant can be tested beside the current one), and the
# dynamic shared memory each variant's kernels take (executor/kernels/README.md).
ATTN_FILE = os.environ.get("OFFPLAN_ATTN_FILE", "attention.cu")
ATTN_SMEM = {
    "attention.cu": (lambda D: (16 * _fwd_warps("attention.cu", D) + 256) * (D + 8) * 2,
                     lambda D: 512 * (D + 8) + 512),
}


def _fwd_warps(f, D):
    """Warps (of 16 query rows each) per forward block: 8 for D = 128, else 4."""
    return 8 if D == 128 else 4


def flash_fwd_smem(D, f=None):
    return ATTN_SMEM[f or ATTN_FILE][0](D)


def flash_bwd_smem(D, f=None):
    return ATTN_SMEM[f or ATTN_FILE][1](D)


# ---- thin wrappers with the launch shapes of executor/kernels/README.md
def embedding_forward(out, tokens, wte, v_begin, v_count, wpe, N, T, C):
    launch("encoder.cu", "embedding_forward", cdiv(N * C // 8, 256), 256,
           (out, tokens, wte, I32(v_begin), I32(v_count), wpe, I32(N), I32(T), I32(C)))


def embedding_backward_wpe(dwpe, dout, B, T, C, max_seq):
    launch("encoder.cu", "embedding_backward_wpe", cdiv(max_seq * C // 8, 256), 256,
           (dwpe, dout, I32(B), I32(T), I32(C), I32(max_seq)))


def embedding_backward_wte(dwte, dout, tokens, v_begin, v_count, N, C):
    launch("encoder.cu", "embedding_backward_wte", N, min(1024, roundup32(C // 8)),
           (dwte, dout, tokens, I32(v_begin), I32(v_count), I32(N), I32(C)))


def layernorm_forward(out, mean, rstd, x, w, b, N, C):
    launch("layernorm.cu", "layernorm_forward", cdiv(N, 8), 256, (out, mean, rstd, x, w, b, I32(N), I32(C)))


def layernorm_backward(dx, dw, db, dy, x, mean, rstd, w, N, C, accumulate, partials, S=32):
    f32 = dy.dtype == torch.float32
    suffix = "_f32dy" if f32 else ""
    launch("layernorm.cu", "layernorm_backward_dx" + suffix, cdiv(N, 8), 256,
           (dx, dy, x, mean, rstd, w, I32(N), I32(C), I32(accumulate)))
    launch("layernorm.cu", "layernorm_backward_dwdb_partial" + suffix, (cdiv(C, 64), S), 256,
           (partials, dy, x, mean, rstd, I32(N), I32(C)))
    launch("layernorm.cu", "layernorm_backward_dwdb_reduce", cdiv(C, 256), 256, (dw, db, partials, I32(S), I32(C)))


def colsum(out, x, rows, n, partials, S=32, accumulate=0):
    launch("bias.cu", "colsum_partial", (cdiv(n, 64), S), 256, (partials, x, I32(rows), I32(n)))
    launch("bias.cu", "colsum_reduce", cdiv(n, 256), 256, (out, partials, I32(S), I32(n), I32(accumulate)))


def gelu_forward(out, inp, n):
    launch("gelu.cu", "gelu_forward", cdiv(n // 8, 256), 256, (out, inp, I64(n)))


def gelu_backward(dinout, inp, n):
    launch("gelu.cu", "gelu_backward", cdiv(n // 8, 256), 256, (dinout, inp, I64(n)))


def ce_stats_update(stats, logits, targets, N, Vc, v_begin, V, first):
    launch("crossentropy.cu", "ce_stats_update", N, 256,
           (stats, logits, targets, I32(N), I32(Vc), I32(v_begin), I32(V), I32(first)))


def ce_loss(losses, stats, N):
    launch("crossentropy.cu", "ce_loss", cdiv(N, 256), 256, (losses, stats, I32(N)))


def ce_backward(logits, stats, targets, N, Vc, v_begin, V, scale):
    launch("crossentropy.cu", "ce_backward", N, 256,
           (logits, stats, targets, I32(N), I32(Vc), I32(v_begin), I32(V), F32(scale)))


def sum_f32(out, x, n, scale):
    launch("crossentropy.cu", "sum_f32", 1, 1024, (out, x, I32(n), F32(scale)))


def adamw_scalars(lr, b1, b2, eps, wd, step):
    """The kernel's scalars in float32, as executor/src/kernels (AdamwScalars) computes them."""
    f = np.float32
    lr, b1, b2, eps, wd = f(lr), f(b1), f(b2), f(eps), f(wd)
    bc1 = f(1) - np.power(b1, f(step))
    bc2 = f(1) - np.power(b2, f(step))
    return (b1, f(1) - b1, b2, f(1) - b2, eps, f(1) - lr * wd, lr / bc1, np.sqrt(bc2))


def adamw_update(weights, master, m, v, grads, n, lr, b1, b2, eps, wd, step):
    s = adamw_scalars(lr, b1, b2, eps, wd, step)
    launch("adamw.cu", "adamw_update", cdiv(n, 256), 256,
           (weights, master, m, v, grads, I64(n)) + tuple(F32(float(x)) for x in s))


def fill_bf16(p, n, value):
    launch("misc.cu", "fill_bf16", cdiv(n, 256), 256, (p, I64(n), F32(value)))


def init_params(weights, master, n, first, key, mean, std):
    launch("init.cu", "init_params", min(cdiv(n, 256), 1 << 16), 256,
           (weights, master, I64(n), I64(first), I64(key), F32(mean), F32(std)))


def fill_f32(p, n, value):
    launch("misc.cu", "fill_f32", cdiv(n, 256), 256, (p, I64(n), F32(value)))


def convert_f32_to_bf16(out, inp, n):
    launch("misc.cu", "convert_f32_to_bf16", cdiv(n, 256), 256, (out, inp, I64(n)))


def attention_backward_delta(delta, dout, out, B, T, NH, D):
    launch(ATTN_FILE, "attention_backward_delta", cdiv(B * NH * T, 8), 256,
           (delta, dout, out, I32(B), I32(T), I32(NH), I32(D)))


def flash_forward(out, lse, qkv, B, T, NH, D, scale, f=None):
    f = f or ATTN_FILE
    nw = _fwd_warps(f, D)
    launch(f, f"flash_attention_forward_d{D}", (cdiv(T, 16 * nw), B * NH), 32 * nw,
           (out, lse, qkv, I32(B), I32(T), I32(NH), F32(scale)), smem=flash_fwd_smem(D, f))


def flash_backward(dqkv, dout, qkv, lse, delta, B, T, NH, D, scale, f=None):
    f = f or ATTN_FILE
    launch(f, f"flash_attention_backward_d{D}", (cdiv(T, 64), B * NH), 128,
           (dqkv, dout, qkv, lse, delta, I32(B), I32(T), I32(NH), F32(scale)), smem=flash_bwd_smem(D, f))


def mat_forward(out, att, qkv, B, T, NH, D, scale):
    launch("attention_materialized.cu", "attention_materialized_forward", (T, B * NH), 128,
           (out, att, qkv, I32(B), I32(T), I32(NH), I32(D), F32(scale)), smem=T * 4)


def mat_backward(dqkv, datt, dout, qkv, att, B, T, NH, D, scale):
    launch("attention_materialized.cu", "attention_materialized_backward_dq", (T, B * NH), 128,
           (dqkv, datt, dout, qkv, att, I32(B), I32(T), I32(NH), I32(D), F32(scale)), smem=T * 4)
    launch("attention_materialized.cu", "attention_materialized_backward_dkdv", (T, B * NH), 128,
           (dqkv, datt, dout, qkv, att, I32(B), I32(T), I32(NH), I32(D), F32(scale)))
