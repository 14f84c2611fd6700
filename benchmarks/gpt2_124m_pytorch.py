"""GPT-2 124M training throughput in plain PyTorch, the side-by-side reference for our `pretrain` binary.

Same shape and settings as experiments/gpt/recipes/gpt2_124m.textproto: 12 layers, hidden 768, 12 heads, sequence
1024, vocabulary 50304, tanh GeLU, tied embeddings, no dropout, bf16 autocast with fp32 weights, AdamW (not fused,
foreach), clip 1.0, micro-batch M with gradient accumulation to 64 sequences. Attention is
F.scaled_dot_product_attention (flash), like our local backend. Random tokens: throughput does not depend on data.

    python3 benchmarks/gpt2_124m_pytorch.py --micro_batch 32 [--compile]

Prints steady-state tokens/s (iterations after the first 10%) and model TFLOP/s with the same 6N + 12·L·h·s formula.
"""
import argparse
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, h, heads):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(h)
        self.qkv = nn.Linear(h, 3 * h)
        self.proj = nn.Linear(h, h)
        self.ln2 = nn.LayerNorm(h)
        self.fc1 = nn.Linear(h, 4 * h)
        self.fc2 = nn.Linear(4 * h, h)

    def forward(self, x):
        b, s, h = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(h, dim=-1)
        q, k, v = (t.view(b, s, self.heads, h // self.heads).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, s, h)
        x = x + self.proj(a)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, layers=12, h=768, heads=12, vocab=50304, seq=1024):
        super().__init__()
        self.wte = nn.Embedding(vocab, h)
        self.wpe = nn.Embedding(seq, h)
        self.blocks = nn.ModuleList(Block(h, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(h)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.normal_(p, std=0.02)

    def forward(self, ids, labels):
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1], device=ids.device))
        for blk in self.blocks:
            x = blk(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.reshape(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--micro_batch", type=int, default=32)
    ap.add_argument("--global_batch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    dev = "cuda"
    model = GPT().to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=6e-4, betas=(0.9, 0.95), eps=1e-8, foreach=True)
    step_fn = torch.compile(model) if args.compile else model
    accum = args.global_batch // args.micro_batch
    seq = 1024
    tokens_per_iter = args.global_batch * seq
    steady_from = max(1, args.iters // 10)
    for it in range(args.iters):
        if it == steady_from:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        for _ in range(accum):
            ids = torch.randint(0, 50257, (args.micro_batch, seq + 1), device=dev)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = step_fn(ids[:, :-1], ids[:, 1:])
            (loss / accum).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
    torch.cuda.synchronize()
    tps = (args.iters - steady_from) * tokens_per_iter / (time.perf_counter() - t0)
    flops = 6 * n_params + 12 * 12 * 768 * seq
    print(f"pytorch{' compile' if args.compile else ' eager'} micro_batch {args.micro_batch}: steady {tps:.0f} tokens/s "
          f"= {tps * flops / 1e12:.2f} model TFLOP/s ({n_params / 1e6:.1f}M parameters) torch {torch.__version__}")


if __name__ == "__main__":
    main()
