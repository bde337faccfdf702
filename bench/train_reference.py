"""PyTorch eager reference for `just bench-train`: the same Llama-style model as a mixforge
preset (RMSNorm, SwiGLU, RoPE, GQA, per-layer sliding-window/global attention, tied
embeddings), the same batch and sequence length, AdamW (0.9, 0.95, wd 0.1, torch's default
implementation), gradient clipping at 1.0, on batches drawn from the same token shards.
Prints one JSON line: tokens/s over all steps.

usage: train_reference.py MODEL_CONFIG.json SHARDS_DIR SEQ BATCH STEPS THREADS
"""
import json, math, sys, time

import numpy as np
import torch
import torch.nn.functional as F

cfg = json.load(open(sys.argv[1]))
shards, seq, batch, steps, threads = sys.argv[2], *map(int, sys.argv[3:7])
torch.set_num_threads(threads)
torch.manual_seed(0)

manifest = json.load(open(f"{shards}/manifest.json"))
dtype = np.uint16 if manifest["dtype"] == "u16" else np.uint32
stream = np.concatenate([
    np.fromfile(f"{shards}/{d}/{s['tokens_file']}", dtype=dtype)
    for d, v in manifest["domains"].items() for s in v["shards"] if s["split"] == "train"
]).astype(np.int64)
rng = np.random.default_rng(0)

d, nh, nkv, hd, ffn = cfg["d_model"], cfg["n_heads"], cfg["n_kv_heads"], cfg["head_dim"], cfg["ffn_dim"]
V, window, eps = manifest["vocab_size"], cfg["sliding_window"], cfg["norm_eps"]


class Block(torch.nn.Module):
    def __init__(self, local):
        super().__init__()
        self.local = local
        self.n1, self.n2 = torch.nn.RMSNorm(d, eps=eps), torch.nn.RMSNorm(d, eps=eps)
        self.q = torch.nn.Linear(d, nh * hd, bias=False)
        self.k = torch.nn.Linear(d, nkv * hd, bias=False)
        self.v = torch.nn.Linear(d, nkv * hd, bias=False)
        self.o = torch.nn.Linear(nh * hd, d, bias=False)
        self.gate = torch.nn.Linear(d, ffn, bias=False)
        self.up = torch.nn.Linear(d, ffn, bias=False)
        self.down = torch.nn.Linear(ffn, d, bias=False)

    def forward(self, x, cos, sin, mask):
        b, t, _ = x.shape
        h = self.n1(x)
        q = self.q(h).view(b, t, nh, hd).transpose(1, 2)
        k = self.k(h).view(b, t, nkv, hd).transpose(1, 2)
        v = self.v(h).view(b, t, nkv, hd).transpose(1, 2)
        rot = lambda z: torch.cat([-z[..., hd // 2:], z[..., : hd // 2]], -1)
        q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
        k = k.repeat_interleave(nh // nkv, 1)
        v = v.repeat_interleave(nh // nkv, 1)
        if self.local and mask is not None:
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(a.transpose(1, 2).reshape(b, t, nh * hd))
        h = self.n2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(V, d)
        self.blocks = torch.nn.ModuleList(Block(k == "local") for k in cfg["layer_types"])
        self.norm = torch.nn.RMSNorm(d, eps=eps)
        inv = cfg["rope_theta"] ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
        ang = torch.arange(seq, dtype=torch.float64)[:, None] * inv[None]
        emb = torch.cat([ang, ang], -1).float()
        self.cos, self.sin = emb.cos(), emb.sin()
        i = torch.arange(seq)
        self.mask = ((i[None] <= i[:, None]) & (i[:, None] - i[None] < window)) if window < seq else None

    def forward(self, x):
        h = self.emb(x)
        for blk in self.blocks:
            h = blk(h, self.cos, self.sin, self.mask)
        return self.norm(h) @ self.emb.weight.T


model = Model()
decay = [p for p in model.parameters() if p.dim() > 1]
other = [p for p in model.parameters() if p.dim() <= 1]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                        lr=3e-3, betas=(0.9, 0.95))
start = time.perf_counter()
for step in range(steps):
    starts = rng.integers(0, len(stream) - seq - 1, size=batch)
    chunk = torch.from_numpy(np.stack([stream[s:s + seq + 1] for s in starts]))
    logits = model(chunk[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, V), chunk[:, 1:].reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
elapsed = time.perf_counter() - start
print(json.dumps({"tokens_per_s": steps * batch * seq / elapsed, "loss": loss.item(), "params": sum(p.numel() for p in model.parameters())}))
