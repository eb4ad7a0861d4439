#!/usr/bin/env python3
"""PyTorch eager CPU peers for the CPU benchmark (bench/run.ts).

Reads the benchmark's inputs from a folder the Node side wrote (raw little-endian arrays and a
JSON header), times in PyTorch eager, on the given number of threads, what a PyTorch user writes
for the same work, and writes one JSON file: per op the median and fastest time of the timed
calls, and the values the Node side checks its own results against.

    python3 bench/peers/cpu_peers.py --in DIR --out FILE.json [--threads 2] [--reps 7]
"""
import argparse
import json
import os
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--in', dest='inp', required=True)
    ap.add_argument('--out', required=True)
    ap.add_argument('--threads', type=int, default=os.cpu_count() or 1)
    ap.add_argument('--reps', type=int, default=7)
    args = ap.parse_args()
    try:
        import numpy as np
        import torch
        import torch.nn.functional as F
    except Exception as e:  # no PyTorch: say so, the Node side reports the peers as absent
        json.dump({'available': False, 'why': f'{type(e).__name__}: {e}'}, open(args.out, 'w'))
        return 0
    torch.set_num_threads(args.threads)
    hdr = json.load(open(os.path.join(args.inp, 'header.json')))
    n, v, s = hdr['n'], hdr['v'], hdr['s']
    beta, eps = hdr['beta'], hdr['eps']

    def arr(name, dtype, shape):
        return torch.from_numpy(np.fromfile(os.path.join(args.inp, name), dtype=dtype).reshape(shape))

    z = arr('logits.f32', np.float32, (n, v))
    zt = arr('teacher.f32', np.float32, (n, v))
    y = arr('targets.i64', np.int64, (n,))
    gl = arr('gradlogp.f32', np.float32, (n,))
    adv = arr('advantages.f32', np.float32, (s,))
    old = arr('oldlogp.f32', np.float32, (n,))
    ref = arr('reflogp.f32', np.float32, (n,))
    zb = z.to(torch.bfloat16)
    seq = torch.arange(n) // (n // s)
    rows = {}

    def timed(name, f, reps=args.reps):
        f()  # warm-up
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            f()
            ts.append((time.perf_counter() - t0) * 1e3)
        rows[name] = {'ms': statistics.median(ts), 'msMin': min(ts), 'reps': reps}

    # TRL's selective_log_softmax for float32: the gathered logit minus the row's logsumexp.
    def trl_logp(x):
        return torch.gather(x, -1, y.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(x, dim=-1)

    def ls_gather(x):
        return torch.gather(torch.log_softmax(x.float(), dim=-1), -1, y.unsqueeze(-1)).squeeze(-1)

    def logp_entropy(x):
        lsm = torch.log_softmax(x, dim=-1)
        return torch.gather(lsm, -1, y.unsqueeze(-1)).squeeze(-1), -(lsm.exp() * lsm).sum(-1)

    with torch.no_grad():
        timed('tokenLogProbs:trl', lambda: trl_logp(z))
        timed('tokenLogProbs:logSoftmaxGather', lambda: ls_gather(z))
        timed('tokenLogProbs+entropy', lambda: logp_entropy(z))
        timed('tokenLogProbs:bf16:logSoftmaxGather', lambda: ls_gather(zb))
    lp = trl_logp(z)
    _, ent = logp_entropy(z)

    zg = z.clone().requires_grad_(True)

    def backward():
        zg.grad = None
        (ls_gather(zg) * gl).sum().backward()
    timed('tokenLogProbsBackward', backward)

    def grpo():
        zg.grad = None
        logp = ls_gather(zg)
        ratio = torch.exp(logp - old)
        a = adv[seq]
        pg = -torch.min(ratio * a, torch.clamp(ratio, 1 - eps, 1 + eps) * a)
        kl = torch.exp(ref - logp) - (ref - logp) - 1
        per_tok = pg + beta * kl
        # sequence mean of token means (the package's default aggregation)
        per_seq = torch.zeros(s).index_add_(0, seq, per_tok) / (n // s)
        loss = per_seq.mean()
        loss.backward()
        return loss
    timed('grpoLoss+grad', grpo)
    grpo_loss = float(grpo())

    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        timed('sampleTokens:multinomial', lambda: torch.multinomial(torch.softmax(z, dim=-1), 1, generator=gen))

    zs = z.clone().requires_grad_(True)

    def kl():
        zs.grad = None
        loss = F.kl_div(torch.log_softmax(zs, -1), torch.log_softmax(zt, -1), reduction='batchmean', log_target=True)
        loss.backward()
        return loss
    timed('distillationLoss:forwardKL+grad', kl)
    kl_loss = float(kl())

    out = {
        'available': True,
        'torch': torch.__version__,
        'threads': torch.get_num_threads(),
        'rows': rows,
        'check': {
            'logp': lp[:64].tolist(), 'logpSum': float(lp.double().sum()), 'entropySum': float(ent.double().sum()),
            'grpoLoss': grpo_loss, 'forwardKl': kl_loss,
        },
    }
    json.dump(out, open(args.out, 'w'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
