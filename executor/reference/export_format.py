"""Reads and writes the executor's export folder (see README.md in this folder):
DIR/manifest.json + one raw little-endian file per tensor."""
import json
import os

import numpy as np
import torch

DTYPES = {"bf16": (torch.bfloat16, np.uint16, 2), "f32": (torch.float32, np.float32, 4), "i32": (torch.int32, np.int32, 4)}


def read_manifest(d):
    with open(os.path.join(d, "manifest.json")) as f:
        return json.load(f)


def load_tensor(d, entry, device="cuda"):
    tdtype, ndtype, size = DTYPES[entry["dtype"]]
    shape = [int(s) for s in entry["shape"]]
    n = int(np.prod(shape)) if shape else 1
    raw = np.fromfile(os.path.join(d, entry["file"]), dtype=ndtype)
    if raw.size != n:
        raise ValueError(f"{entry['name']}: file has {raw.size} elements, shape {shape} needs {n}")
    if entry["dtype"] == "bf16":
        t = torch.from_numpy(raw.astype(np.int16)).view(torch.bfloat16)
    else:
        t = torch.from_numpy(raw)
    return t.reshape(shape).to(device)


def load_all(d, device="cuda"):
    m = read_manifest(d)
    tensors = {e["name"]: load_tensor(d, e, device) for e in m["tensors"]}
    views = {e["name"]: e.get("views", []) for e in m["tensors"]}
    return m, tensors, views


class Writer:
    def __init__(self, d, config, adamw):
        os.makedirs(d, exist_ok=True)
        self.d = d
        self.manifest = {"config": config, "adamw": adamw, "tensors": [], "losses": []}

    def add(self, name, t, views=None):
        t = t.detach().contiguous().cpu()
        if t.dtype == torch.bfloat16:
            arr, dt = t.view(torch.int16).numpy().astype(np.uint16), "bf16"
        elif t.dtype == torch.float32:
            arr, dt = t.numpy(), "f32"
        elif t.dtype == torch.int32:
            arr, dt = t.numpy(), "i32"
        else:
            raise TypeError(t.dtype)
        fname = name.replace("/", "_") + ".bin"
        arr.tofile(os.path.join(self.d, fname))
        e = {"name": name, "dtype": dt, "shape": list(t.shape), "file": fname}
        if views:
            e["views"] = views
        self.manifest["tensors"].append(e)

    def close(self):
        with open(os.path.join(self.d, "manifest.json"), "w") as f:
            json.dump(self.manifest, f, indent=1)


def owners(cfg):
    o = ["embedding"] + [f"layer{l}" for l in range(cfg["layers"])] + ["final_norm"]
    return o + [f"chunk{c}" for c in range(cfg["output_chunks"])]


def param_views(cfg, owner):
    """The views of models/src/inventory.rs (same names, shapes, element offsets)."""
    C = cfg["hidden"]
    k = cfg["output_chunks"]
    Vc = cfg["padded_vocab"] // k
    if owner == "embedding":
        shapes = ([("wte", [cfg["padded_vocab"], C])] if not cfg["tied_embeddings"] else []) + [("wpe", [cfg["max_seq"], C])]
    elif owner.startswith("layer"):
        shapes = [("ln1_w", [C]), ("ln1_b", [C]), ("qkv_w", [3 * C, C]), ("qkv_b", [3 * C]), ("attproj_w", [C, C]),
                  ("attproj_b", [C]), ("ln2_w", [C]), ("ln2_b", [C]), ("fc_w", [4 * C, C]), ("fc_b", [4 * C]),
                  ("fcproj_w", [C, 4 * C]), ("fcproj_b", [C])]
    elif owner == "final_norm":
        shapes = [("lnf_w", [C]), ("lnf_b", [C])]
    else:
        shapes = [("w", [Vc, C])]
    out, off = [], 0
    for name, shape in shapes:
        out.append({"name": name, "shape": shape, "offset": off})
        off += int(np.prod(shape))
    return out, off
