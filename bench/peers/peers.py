#!/usr/bin/env python3
"""Peer baselines for the grpo-kernels CUDA benchmark, and agreement checks.

Times what PyTorch users write today for the ops grpo-kernels fuses (log-softmax + gather, the
GRPO loss with its gradient as TRL computes it, distillation losses, sampling with log-probs),
plus the device's copy bandwidth, and writes one JSON file. With --check-dir it also compares
results written by grpo-kernels against a float64 PyTorch reference of docs/grpo-math.md.

    python3 bench/peers/peers.py --out FILE.json [--check-dir DIR] [--shapes 4096x32000,...]
        [--dtypes float32,bfloat16] [--ops logprobs,grpo,distill,sample,copy] [--reps 20]
        [--warmup 3] [--no-compile] [--quick]

Needs python3, numpy and PyTorch with CUDA (Triton for the torch.compile peers). See README.md
beside this file for the JSON format. Exit status: 0 when the run completed (whatever the
checks found: read their "ok"), 2 on a usage error, 3 when torch or the device is unusable.
"""

import argparse
import datetime
import gc
import json
import math
import os
import sys
import time

GiB = float(1 << 30)
DEFAULT_NS = [4096, 16384]
DEFAULT_VS = [32000, 128256, 151936, 262144]
QUICK_NS = [4096]
QUICK_VS = [32000, 151936]
ALL_OPS = ['copy', 'logprobs', 'grpo', 'distill', 'sample']
FLOAT_DTYPES = ['float32', 'bfloat16', 'float16']
ELEM_SIZE = {'float32': 4, 'bfloat16': 2, 'float16': 2}
MEM_FRACTION = 0.9          # a peer runs only if its estimated peak fits in this share of free memory
SEQ_LEN = 1024              # sequence length L of the [B, L, V] view (when it divides N)
GRPO_EPS = 0.2
GRPO_BETA = 0.04
JSD_BETA = 0.5
TOP_K = 50
TOP_P = 0.9

torch = None  # imported in main(), after the arguments are parsed (so --help works without torch)
F = None
DEV = 'cuda'


# ----------------------------------------------------------------------------------------------
# small helpers


def log(msg):
    sys.stderr.write('[peers] ' + msg + '\n')
    sys.stderr.flush()


def describe(exc):
    """One line naming an exception (first line of its message, truncated)."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ''
    if len(first) > 400:
        first = first[:400] + '...'
    return '%s: %s' % (type(exc).__name__, first)


def fmt_gib(nbytes):
    return '%.1f GiB' % (nbytes / GiB)


def finite_or_none(x):
    if x is None:
        return None
    try:
        xf = float(x)
    except (TypeError, ValueError):
        return None
    return xf if math.isfinite(xf) else None


def sanitize(obj):
    """JSON-safe copy: non-finite floats become null (JSON has no NaN/Infinity)."""
    if isinstance(obj, dict):
        return {str(k): sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [sanitize(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    try:
        return sanitize(float(obj))
    except (TypeError, ValueError):
        return str(obj)


def median(xs):
    s = sorted(xs)
    k = len(s)
    if k == 0:
        return None
    return s[k // 2] if k % 2 else 0.5 * (s[k // 2 - 1] + s[k // 2])


def seq_len_for(n):
    return SEQ_LEN if n % SEQ_LEN == 0 else n


def torch_dtype(name):
    return {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[name]


def sync():
    if DEV == 'cuda':
        torch.cuda.synchronize()


def cleanup():
    gc.collect()
    if DEV == 'cuda':
        torch.cuda.empty_cache()


def dynamo_reset():
    try:
        import torch._dynamo  # noqa: F401
        torch._dynamo.reset()
    except Exception:  # an older torch, or dynamo unusable: nothing to reset
        pass


def available_bytes():
    """Device memory a new allocation can get: free memory plus what the allocator caches."""
    cleanup()
    if DEV == 'cuda':
        free, _total = torch.cuda.mem_get_info()
        return int(free + torch.cuda.memory_reserved() - torch.cuda.memory_allocated())
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


class Timer(object):
    """CUDA events around a region on the current stream (wall clock on the CPU test path)."""

    def __init__(self):
        if DEV == 'cuda':
            self.s = torch.cuda.Event(enable_timing=True)
            self.e = torch.cuda.Event(enable_timing=True)
        self.t0 = self.t1 = 0.0

    def start(self):
        if DEV == 'cuda':
            self.s.record()
        else:
            self.t0 = time.perf_counter()

    def stop(self):
        if DEV == 'cuda':
            self.e.record()
        else:
            self.t1 = time.perf_counter()

    def ms(self):
        """Milliseconds; call after sync()."""
        if DEV == 'cuda':
            return float(self.s.elapsed_time(self.e))
        return (self.t1 - self.t0) * 1e3


def time_fn(fn, pre, reps, warmup, budget_s):
    """Warm-up calls, then `reps` timed calls (fewer when one call is so slow that they would
    take more than budget_s; at least 3). `pre` runs before each call, outside the timed region
    (it drops the previous gradient). Returns (median ms, min ms, calls timed)."""
    probe = 0.0
    total = 0.0
    for _ in range(max(1, warmup)):
        if pre is not None:
            pre()
        t = Timer()
        t.start()
        out = fn()
        t.stop()
        out = None
        sync()
        probe = t.ms()
        total += probe
        if total > 2000.0:  # a slow peer: one or two warm-up calls are enough
            break
    n = reps
    if probe > 0 and probe * reps > budget_s * 1e3:
        n = max(min(3, reps), int(budget_s * 1e3 / probe))
    timers = [Timer() for _ in range(n)]
    for t in timers:
        if pre is not None:
            pre()
        t.start()
        out = fn()
        t.stop()
        out = None
    sync()
    times = [t.ms() for t in timers]
    del out
    return median(times), min(times), n


def measure_peak(fn, pre):
    """Peak device memory of one call above what was allocated just before it (the inputs and
    anything else alive). Includes the call's outputs, e.g. the gradient."""
    if DEV != 'cuda':
        return None
    if pre is not None:
        pre()
    sync()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = fn()
    sync()
    peak = torch.cuda.max_memory_allocated() - base
    del out
    return int(max(0, peak))


# ----------------------------------------------------------------------------------------------
# the peers: written the way PyTorch users write them


def lp_torch_gather(logits, targets):
    """log_softmax in the logits' dtype, then gather the target's log-prob."""
    return logits.log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)


def lp_torch_gather_fp32(logits, targets):
    """Upcast to float32 first, then log_softmax and gather."""
    return logits.float().log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)


def trl_selective_log_softmax(logits, index):
    """TRL's selective_log_softmax (trl/trainer/utils.py), reimplemented from its documented
    behaviour. logits [B, L, V], index [B, L] -> per-token log-probs [B, L].

    float32/float64: the target logit minus the row's logsumexp; the logsumexp is taken one
    sequence (one [L, V] slice) at a time to bound peak memory, and the results stacked.
    16-bit: log_softmax + gather one sequence at a time (the log-probs come out in the logits'
    dtype, as in TRL)."""
    if logits.dtype == torch.float32 or logits.dtype == torch.float64:
        target_logit = logits.gather(-1, index.unsqueeze(-1)).squeeze(-1)
        row_lse = [torch.logsumexp(seq, dim=-1) for seq in logits.unbind(0)]
        return target_logit - torch.stack(row_lse, 0)
    per_seq = []
    for seq, seq_index in zip(logits.unbind(0), index.unbind(0)):
        seq_logp = F.log_softmax(seq, dim=-1)
        per_seq.append(seq_logp.gather(-1, seq_index.unsqueeze(-1)).squeeze(-1))
    return torch.stack(per_seq, 0)


def lp_trl(logits, targets):
    n, v = logits.shape
    L = seq_len_for(n)
    return trl_selective_log_softmax(logits.view(n // L, L, v), targets.view(n // L, L)).reshape(n)


def grpo_trl_loss(logits, targets, old_logp, ref_logp, advantages, mask):
    """The GRPO loss as TRL's GRPOTrainer computes it (loss_type 'grpo', beta 0.04, epsilon 0.2,
    k3 KL, token-level importance ratio, temperature 1). logits [N, V] with N = B*L; the other
    inputs are [B, L] (advantages [B])."""
    B, L = targets.shape
    logp = trl_selective_log_softmax(logits.view(B, L, logits.shape[-1]), targets)
    ref_diff = ref_logp - logp
    kl = torch.exp(ref_diff) - ref_diff - 1
    ratio = torch.exp(logp - old_logp)
    ratio_clipped = torch.clamp(ratio, 1 - GRPO_EPS, 1 + GRPO_EPS)
    adv = advantages.unsqueeze(1)
    per_token = -torch.minimum(ratio * adv, ratio_clipped * adv) + GRPO_BETA * kl
    per_seq = (per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    return per_seq.mean()


def distill_kl_div(student, teacher):
    """Forward KL(p_T || p_S), batch mean, with F.kl_div on log-probs (log_target)."""
    return F.kl_div(student.log_softmax(-1), teacher.log_softmax(-1), reduction='batchmean',
                    log_target=True)


def distill_jsd(student, teacher):
    """Generalised JSD_beta = beta*KL(p_T||M) + (1-beta)*KL(p_S||M), M = beta*p_T + (1-beta)*p_S,
    the mixture in log space; mean over the rows."""
    ls = student.log_softmax(-1)
    lt = teacher.log_softmax(-1)
    lm = torch.logsumexp(torch.stack([lt + math.log(JSD_BETA), ls + math.log(1.0 - JSD_BETA)]), dim=0)
    kl_t = F.kl_div(lm, lt, reduction='none', log_target=True).sum(-1)
    kl_s = F.kl_div(lm, ls, reduction='none', log_target=True).sum(-1)
    return (JSD_BETA * kl_t + (1.0 - JSD_BETA) * kl_s).mean()


def _scaled_fp32(logits, temperature):
    x = logits.float()
    if temperature != 1.0:  # HF skips its temperature warper at 1.0
        x = x / temperature
    return x


def sample_multinomial(logits, temperature=1.0):
    x = _scaled_fp32(logits, temperature)
    probs = torch.softmax(x, dim=-1)
    tok = torch.multinomial(probs, 1)
    logp = torch.log_softmax(x, dim=-1).gather(-1, tok).squeeze(-1)
    return tok.squeeze(-1), logp


def sample_topk_topp(logits, temperature=1.0, top_k=TOP_K, top_p=TOP_P):
    """HF TopKLogitsWarper then TopPLogitsWarper semantics (min_tokens_to_keep 1), then
    multinomial; the log-prob is the one under the full temperature-scaled distribution."""
    x = _scaled_fp32(logits, temperature)
    k = min(top_k, x.shape[-1])
    kth = torch.topk(x, k, dim=-1).values[..., -1:]
    kept = x.masked_fill(x < kth, float('-inf'))
    sorted_vals, sorted_idx = torch.sort(kept, dim=-1, descending=False)
    cum = sorted_vals.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = cum <= (1.0 - top_p)
    drop_sorted[..., -1:] = False
    drop = drop_sorted.scatter(-1, sorted_idx, drop_sorted)
    kept = kept.masked_fill(drop, float('-inf'))
    probs = torch.softmax(kept, dim=-1)
    tok = torch.multinomial(probs, 1)
    logp = torch.log_softmax(x, dim=-1).gather(-1, tok).squeeze(-1)
    return tok.squeeze(-1), logp


def sample_gumbel_argmax(logits, temperature=1.0):
    x = _scaled_fp32(logits, temperature)
    u = torch.rand_like(x)
    tok = torch.argmax(x - torch.log(-torch.log(u)), dim=-1, keepdim=True)
    logp = torch.log_softmax(x, dim=-1).gather(-1, tok).squeeze(-1)
    return tok.squeeze(-1), logp


def logp_chunked(logits, targets, max_bytes=1 << 30):
    """float32 log-probs of the targets without an [N, V] float32 temporary (input setup)."""
    n, v = logits.shape
    rows = max(1, int(max_bytes // (v * 4)))
    out = torch.empty(n, dtype=torch.float32, device=logits.device)
    with torch.no_grad():
        for a in range(0, n, rows):
            b = min(n, a + rows)
            out[a:b] = lp_torch_gather_fp32(logits[a:b], targets[a:b])
    return out


# ----------------------------------------------------------------------------------------------
# the run: rows, progress, the JSON file


class Run(object):
    def __init__(self, args, out_path):
        self.args = args
        self.out_path = out_path
        self.results = []
        self.checks = []
        self.notes = []
        self.copy_gbs = None
        self.copy_gbs_median = None
        self.meta = {}
        self.started_at = datetime.datetime.now(datetime.timezone.utc).isoformat()
        self.t0 = time.time()
        self.complete = False

    def doc(self):
        d = dict(self.meta)
        d.update({
            'copy_gbs': self.copy_gbs,
            'copy_gbs_median': self.copy_gbs_median,
            'results': self.results,
            'checks': self.checks,
            'notes': self.notes,
            'started_at': self.started_at,
            'elapsed_s': round(time.time() - self.t0, 3),
            'complete': self.complete,
        })
        return d

    def flush(self):
        """Write the JSON now (after every row: a killed run still leaves what it measured)."""
        text = json.dumps(sanitize(self.doc()), indent=1, allow_nan=False)
        tmp = self.out_path + '.tmp'
        with open(tmp, 'w') as f:
            f.write(text)
            f.write('\n')
        os.replace(tmp, self.out_path)

    def add(self, row):
        self.results.append(row)
        shape = '%dx%d' % (row['n'], row['v'])
        if row['error'] is None and row['ms'] is not None and row['gbs'] is not None:
            frac = '' if row['frac_of_copy'] is None else ', %.0f%% of copy' % (100 * row['frac_of_copy'])
            peak = '' if row['peak_extra_bytes'] is None else ', peak +%s' % fmt_gib(row['peak_extra_bytes'])
            comp = '' if row.get('compile_s') is None else ', compile %.1f s' % row['compile_s']
            log('%-8s %-30s %-12s %-8s %9.3f ms (%.0f GB/s%s%s%s)' % (
                row['op'], row['impl'], shape, row['dtype'], row['ms'], row['gbs'], frac, peak, comp))
        else:
            log('%-8s %-30s %-12s %-8s %s' % (row['op'], row['impl'], shape, row['dtype'], row['error']))
        self.flush()

    def add_check(self, row):
        self.checks.append(row)
        status = 'ok' if row['ok'] else 'FAIL'
        err = row.get('rel_err')
        log('check %-8s %-40s %-20s %s rel_err %s tol %s%s' % (
            row['op'], row['case'][:40], row['quantity'], status,
            'n/a' if err is None else '%.2e' % err, row.get('tol'),
            '' if not row.get('detail') else ' (%s)' % row['detail']))
        self.flush()

    def row(self, op, impl, n, v, dtype, nbytes, ms=None, ms_min=None, peak=None, error=None, **extra):
        gbs = nbytes / (ms * 1e-3) / 1e9 if (ms is not None and ms > 0) else None
        frac = gbs / self.copy_gbs if (gbs is not None and self.copy_gbs) else None
        r = {
            'op': op, 'impl': impl, 'n': int(n), 'v': int(v), 'dtype': dtype,
            'ms': finite_or_none(ms), 'ms_min': finite_or_none(ms_min), 'bytes': int(nbytes),
            'gbs': finite_or_none(gbs), 'frac_of_copy': finite_or_none(frac),
            'peak_extra_bytes': peak, 'error': error,
        }
        r.update(extra)
        return r


class Peer(object):
    def __init__(self, impl, make_fn, est_extra, pre=None, compiled=False, skip=None):
        self.impl = impl
        self.make_fn = make_fn      # () -> the callable to time (builds the compiled function)
        self.est_extra = int(est_extra)
        self.pre = pre
        self.compiled = compiled
        self.skip = skip


def run_peer(run, op, n, v, dtype, nbytes, inputs_bytes, peer):
    args = run.args
    if peer.skip:
        run.add(run.row(op, peer.impl, n, v, dtype, nbytes, error='skipped: ' + peer.skip))
        return
    avail = available_bytes()
    if peer.est_extra > MEM_FRACTION * avail:
        run.add(run.row(op, peer.impl, n, v, dtype, nbytes, error='skipped: would need %s (inputs %s + estimated extra %s; %s available after the inputs)' % (
            fmt_gib(inputs_bytes + peer.est_extra), fmt_gib(inputs_bytes), fmt_gib(peer.est_extra),
            fmt_gib(avail))))
        return
    fn = None
    row = None
    try:
        if peer.compiled:
            dynamo_reset()
        fn = peer.make_fn()
        compile_s = None
        if peer.compiled:
            t0 = time.perf_counter()
            if peer.pre is not None:
                peer.pre()
            out = fn()
            sync()
            del out
            compile_s = time.perf_counter() - t0
        ms, ms_min, reps = time_fn(fn, peer.pre, args.reps, args.warmup, args.max_timed_s)
        peak = measure_peak(fn, peer.pre)
        extra = {'reps': reps}
        if compile_s is not None:
            extra['compile_s'] = round(compile_s, 2)
        row = run.row(op, peer.impl, n, v, dtype, nbytes, ms=ms, ms_min=ms_min, peak=peak, **extra)
    except Exception as e:  # torch.cuda.OutOfMemoryError included: recorded, the run goes on
        row = run.row(op, peer.impl, n, v, dtype, nbytes, error=describe(e))
    finally:
        fn = None
        if peer.pre is not None:
            try:
                peer.pre()
            except Exception:
                pass
    if peer.compiled:
        dynamo_reset()
    cleanup()
    run.add(row)


def run_shape(run, op, n, v, dtype, nbytes, inputs_bytes, make_inputs, build_peers):
    """Create the inputs once, run every peer on them, free them."""
    peers_probe = build_peers(None)
    runnable = [p for p in peers_probe if not p.skip]
    avail = available_bytes()
    need = inputs_bytes + (min(p.est_extra for p in runnable) if runnable else 0)
    if need > MEM_FRACTION * avail:
        for p in peers_probe:
            err = ('skipped: ' + p.skip) if p.skip else 'skipped: would need %s (%s free)' % (
                fmt_gib(inputs_bytes + p.est_extra), fmt_gib(avail))
            run.add(run.row(op, p.impl, n, v, dtype, nbytes, error=err))
        return
    inputs = None
    try:
        inputs = make_inputs()
        sync()
    except Exception as e:
        msg = 'input setup failed: ' + describe(e)
        inputs = None
        cleanup()
        for p in peers_probe:
            run.add(run.row(op, p.impl, n, v, dtype, nbytes, error=msg))
        return
    for p in build_peers(inputs):
        run_peer(run, op, n, v, dtype, nbytes, inputs_bytes, p)
    inputs = None
    cleanup()


def make_logits(n, v, dtype_name, scale=2.0):
    x = torch.randn(n, v, device=DEV, dtype=torch_dtype(dtype_name))
    x.mul_(scale)
    return x


def compile_skip(run, n, v, shapes):
    """None when the compiled peers run at shape (n, v) of this op's `shapes`, else why not.
    They run at the shapes whose V is in --compile-vs, with the smallest such N (the first shape
    when no V matches), or everywhere with --compile-vs all."""
    args = run.args
    if args.no_compile:
        return '--no-compile'
    if not hasattr(torch, 'compile'):
        return 'torch.compile needs torch >= 2.0 (this is %s)' % torch.__version__
    if args.compile_vs == 'all':
        return None
    cands = [s for s in shapes if s[1] in args.compile_vs]
    if cands:
        nmin = min(s[0] for s in cands)
        targets = [s for s in cands if s[0] == nmin]
    else:
        targets = [shapes[0]]
    if (n, v) in targets:
        return None
    return ('compiled peers run only at %s, to bound compile time (each shape and dtype compiles '
            'anew; --compile-vs all compiles every shape)') % ', '.join('%dx%d' % s for s in targets)


# ----------------------------------------------------------------------------------------------
# the ops


def bench_copy(run):
    nbytes_buf = 1 << 30
    n = nbytes_buf // 4
    reps = max(20, run.args.reps)
    try:
        y = torch.ones(n, device=DEV, dtype=torch.float32)
        x = torch.empty_like(y)

        def fn():
            x.copy_(y)
            return None

        ms, ms_min, r = time_fn(fn, None, reps, max(3, run.args.warmup), run.args.max_timed_s)
        moved = 2 * nbytes_buf  # one read + one write
        run.copy_gbs = moved / (ms_min * 1e-3) / 1e9
        run.copy_gbs_median = moved / (ms * 1e-3) / 1e9
        row = run.row('copy', 'torch_copy_', n, 1, 'float32', moved, ms=ms, ms_min=ms_min, peak=0, reps=r)
        row['gbs_best'] = run.copy_gbs
    except Exception as e:
        row = run.row('copy', 'torch_copy_', n, 1, 'float32', 2 * nbytes_buf, error=describe(e))
    x = y = None
    cleanup()
    run.add(row)


def bench_logprobs(run, shapes, dtypes):
    for (n, v) in shapes:
        for dn in dtypes:
            b = ELEM_SIZE[dn]
            E = n * v
            L = seq_len_for(n)
            inputs_bytes = E * b + n * 8
            nbytes = E * b + n * 8 + n * 4   # read the logits and targets, write float log-probs
            cskip = compile_skip(run, n, v, shapes)

            def make_inputs(n=n, v=v, dn=dn):
                return {'logits': make_logits(n, v, dn),
                        'targets': torch.randint(0, v, (n,), device=DEV, dtype=torch.int64)}

            def build(inp, E=E, b=b, L=L, v=v, n=n, cskip=cskip):
                def eager(f):
                    return lambda: (lambda: f(inp['logits'], inp['targets']))

                def compiled():
                    cf = torch.compile(lp_torch_gather_fp32, dynamic=False)
                    return lambda: cf(inp['logits'], inp['targets'])

                return [
                    Peer('torch_logsoftmax_gather', eager(lp_torch_gather), E * b + n * 16),
                    Peer('torch_logsoftmax_gather_fp32', eager(lp_torch_gather_fp32),
                         (E * 4 if b != 4 else 0) + E * 4 + n * 16),
                    Peer('trl_selective_log_softmax', eager(lp_trl), 3 * L * v * 4 + n * 16),
                    Peer('torch_compile', compiled, 2 * E * 4, compiled=True, skip=cskip),
                ]

            run_shape(run, 'logprobs', n, v, dn, nbytes, inputs_bytes, make_inputs, build)


def bench_grpo(run, shapes, dtypes):
    for (n, v) in shapes:
        for dn in dtypes:
            b = ELEM_SIZE[dn]
            E = n * v
            L = seq_len_for(n)
            B = n // L
            inputs_bytes = E * b + n * 24 + B * 4
            # two reads of the logits + one write of the gradient (+ the per-token inputs)
            nbytes = 3 * E * b + n * (8 + 4 + 4 + 4) + B * 4
            cskip = compile_skip(run, n, v, shapes)

            def make_inputs(n=n, v=v, dn=dn, B=B, L=L):
                g = {}
                g['logits'] = make_logits(n, v, dn).requires_grad_(True)
                t = torch.randint(0, v, (n,), device=DEV, dtype=torch.int64)
                g['targets'] = t.view(B, L)
                lp = logp_chunked(g['logits'].detach(), t)
                g['old'] = (lp + 0.1 * torch.randn(n, device=DEV)).view(B, L)
                g['ref'] = (lp + 0.1 * torch.randn(n, device=DEV)).view(B, L)
                g['adv'] = torch.randn(B, device=DEV, dtype=torch.float32)
                lengths = L - torch.randint(0, L // 4 + 1, (B,), device=DEV)
                g['mask'] = (torch.arange(L, device=DEV)[None, :] < lengths[:, None]).float()
                return g

            def build(inp, E=E, b=b, L=L, v=v, n=n, cskip=cskip):
                def pre():
                    if inp is not None:
                        inp['logits'].grad = None

                def step(loss_fn):
                    def fn():
                        loss = loss_fn(inp['logits'], inp['targets'], inp['old'], inp['ref'],
                                       inp['adv'], inp['mask'])
                        loss.backward()
                        return loss.detach()
                    return fn

                def compiled():
                    return step(torch.compile(grpo_trl_loss, dynamic=False))

                return [
                    Peer('trl_eager', lambda: step(grpo_trl_loss), 4 * E * b + 4 * L * v * 4 + n * 64, pre=pre),
                    Peer('trl_compile', compiled, E * b + 2 * E * 4, pre=pre, compiled=True, skip=cskip),
                ]

            run_shape(run, 'grpo', n, v, dn, nbytes, inputs_bytes, make_inputs, build)


def bench_distill(run, n, vs, dtypes):
    shapes = [(n, v) for v in vs]
    for (n, v) in shapes:
        for dn in dtypes:
            b = ELEM_SIZE[dn]
            E = n * v
            inputs_bytes = 2 * E * b
            nbytes = 3 * E * b   # read student, read teacher, write the student gradient
            cskip = compile_skip(run, n, v, shapes)

            def make_inputs(n=n, v=v, dn=dn):
                return {'student': make_logits(n, v, dn).requires_grad_(True),
                        'teacher': make_logits(n, v, dn)}

            def build(inp, E=E, b=b, cskip=cskip):
                def pre():
                    if inp is not None:
                        inp['student'].grad = None

                def step(loss_fn):
                    def fn():
                        loss = loss_fn(inp['student'], inp['teacher'])
                        loss.backward()
                        return loss.detach()
                    return fn

                def compiled(f):
                    return lambda: step(torch.compile(f, dynamic=False))

                return [
                    Peer('torch_kl_div', lambda: step(distill_kl_div), 6 * E * b, pre=pre),
                    Peer('torch_jsd_eager', lambda: step(distill_jsd), 12 * E * b, pre=pre),
                    Peer('torch_kl_div_compile', compiled(distill_kl_div), E * b + 2 * E * 4, pre=pre,
                         compiled=True, skip=cskip),
                    Peer('torch_jsd_compile', compiled(distill_jsd), E * b + 3 * E * 4, pre=pre,
                         compiled=True, skip=cskip),
                ]

            run_shape(run, 'distill', n, v, dn, nbytes, inputs_bytes, make_inputs, build)


def bench_sample(run, shapes, dtypes):
    for (n, v) in shapes:
        for dn in dtypes:
            b = ELEM_SIZE[dn]
            E = n * v
            up = E * 4 if b != 4 else 0   # the float32 copy of 16-bit logits
            inputs_bytes = E * b
            nbytes = E * b + n * 8 + n * 4  # read the logits, write token + log-prob

            def make_inputs(n=n, v=v, dn=dn):
                return {'logits': make_logits(n, v, dn)}

            def build(inp, up=up, E=E):
                def eager(f):
                    return lambda: (lambda: f(inp['logits']))

                return [
                    Peer('torch_multinomial', eager(sample_multinomial), up + 4 * E * 4),
                    Peer('torch_topk_topp_multinomial', eager(sample_topk_topp), up + 40 * E),
                    Peer('torch_gumbel_argmax', eager(sample_gumbel_argmax), up + 5 * E * 4),
                ]

            run_shape(run, 'sample', n, v, dn, nbytes, inputs_bytes, make_inputs, build)


# ----------------------------------------------------------------------------------------------
# --check-dir: agreement of grpo-kernels' outputs with a float64 reference of docs/grpo-math.md

NP_DTYPES = {'float32': '<f4', 'float64': '<f8', 'float16': '<f2', 'bfloat16': '<u2',
             'int64': '<i8', 'int32': '<i4', 'uint8': 'u1'}
LOGP_TOL = 1e-5
GRAD_TOL = {'float32': 1e-5, 'bfloat16': 2e-3, 'float16': 2e-3}


def load_tensor(base_dir, spec):
    import numpy as np
    dt = spec['dtype']
    if dt not in NP_DTYPES:
        raise ValueError('unknown dtype %r' % dt)
    shape = [int(s) for s in spec.get('shape', [])]
    count = 1
    for s in shape:
        count *= s
    path = os.path.join(base_dir, spec['file'])
    arr = np.fromfile(path, dtype=np.dtype(NP_DTYPES[dt]))
    if arr.size != count:
        raise ValueError('%s: %d elements of %s in the file, shape %s needs %d' % (
            spec['file'], arr.size, dt, shape, count))
    arr = arr.astype(arr.dtype.newbyteorder('='), copy=False)
    if dt == 'bfloat16':
        t = torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16)
    else:
        t = torch.from_numpy(arr)
    return t.reshape(shape).to(DEV)


class ErrAcc(object):
    """||out - ref|| / ||ref|| (absolute when ref is 0) over finite reference elements, built up
    chunk by chunk; a NaN/inf reference must be matched exactly (as test/reference/cases.ts)."""

    def __init__(self, round_dtype=None):
        self.num = 0.0
        self.den = 0.0
        self.max_abs = 0.0
        self.rnum = 0.0
        self.round_dtype = round_dtype
        self.bad = None
        self.seen = 0

    def add(self, out, ref):
        out = out.detach().double().reshape(-1)
        ref = ref.detach().double().reshape(-1)
        if self.bad is not None:
            return
        if out.numel() != ref.numel():
            self.bad = 'length %d != %d' % (out.numel(), ref.numel())
            return
        if out.numel() == 0:
            return
        rnan = torch.isnan(ref)
        fin = torch.isfinite(ref)
        rinf = ~fin & ~rnan
        for cond, what in ((rnan & ~torch.isnan(out), 'reference NaN'),
                           (rinf & (out != ref), 'reference infinite'),
                           (fin & ~torch.isfinite(out), 'reference finite')):
            if bool(cond.any()):
                i = int(torch.nonzero(cond)[0])
                self.bad = 'element %d: %s (%r), got %r' % (self.seen + i, what, float(ref[i]), float(out[i]))
                return
        zero = torch.zeros((), dtype=torch.float64, device=ref.device)
        d = torch.where(fin, out - ref, zero)
        r = torch.where(fin, ref, zero)
        self.num += float((d * d).sum())
        self.den += float((r * r).sum())
        self.max_abs = max(self.max_abs, float(d.abs().max()))
        if self.round_dtype is not None:
            rr = r.to(self.round_dtype).double() - r
            self.rnum += float((rr * rr).sum())
        self.seen += out.numel()

    def rel(self):
        return math.sqrt(self.num / self.den) if self.den > 0 else math.sqrt(self.num)

    def row(self, op, case, quantity, tol, **extra):
        if self.bad is not None:
            r = {'op': op, 'case': case, 'quantity': quantity, 'rel_err': None, 'max_abs_err': None,
                 'tol': tol, 'ok': False, 'detail': self.bad}
        else:
            rel = self.rel()
            r = {'op': op, 'case': case, 'quantity': quantity, 'rel_err': rel, 'max_abs_err': self.max_abs,
                 'tol': tol, 'ok': bool(rel <= tol)}
            if self.round_dtype is not None:
                r['dtype_rounding_err'] = math.sqrt(self.rnum / self.den) if self.den > 0 else math.sqrt(self.rnum)
        r.update(extra)
        return r


def scalar_check(op, case, quantity, ours, ref, tol):
    acc = ErrAcc()
    acc.add(torch.tensor([float(ours)], dtype=torch.float64), torch.tensor([float(ref)], dtype=torch.float64))
    return acc.row(op, case, quantity, tol, ours=finite_or_none(ours), reference=finite_or_none(ref))


def chunk_rows(v, n):
    budget = (1 << 30) if DEV == 'cuda' else (128 << 20)
    return max(1, min(n, int(budget // (max(1, v) * 8 * 8))))


def as_rows(t, v):
    return t.reshape(-1, v)


def layout_of(inp, n, s_count, logits_shape):
    """(row_seq [N] int64, mask [N] float64, S, maxlen, name) from seqOffsets / seqLengths /
    the [S, L, V] shape; S sequences."""
    ar = torch.arange(n, device=DEV)
    if 'seqOffsets' in inp:
        off = inp['seqOffsets'].reshape(-1).long()
        S = off.numel() - 1
        if S < 1 or int(off[0]) != 0 or int(off[-1]) != n or bool((off[1:] < off[:-1]).any()):
            raise ValueError('bad seqOffsets')
        counts = off[1:] - off[:-1]
        row_seq = torch.repeat_interleave(torch.arange(S, device=DEV), counts)
        return row_seq, torch.ones(n, dtype=torch.float64, device=DEV), S, int(counts.max()), 'packed (seqOffsets)'
    if 'seqLengths' in inp:
        lens = inp['seqLengths'].reshape(-1).long()
        S = lens.numel()
        total = int(lens.sum())
        if total == n:
            row_seq = torch.repeat_interleave(torch.arange(S, device=DEV), lens)
            return row_seq, torch.ones(n, dtype=torch.float64, device=DEV), S, int(lens.max()), 'packed (sum of seqLengths = N)'
        if S > 0 and n % S == 0 and int(lens.max()) <= n // S and int(lens.min()) >= 0:
            L = n // S
            row_seq = ar // L
            mask = ((ar % L) < lens[row_seq]).double()
            return row_seq, mask, S, L, 'padded [S, L] with mask t < seqLengths[s]'
        raise ValueError('seqLengths (S=%d, sum %d) fit neither a packed nor a padded layout of N=%d' % (S, total, n))
    if len(logits_shape) == 3:
        S, L = int(logits_shape[0]), int(logits_shape[1])
        return ar // L, torch.ones(n, dtype=torch.float64, device=DEV), S, L, 'padded [S, L, V]'
    if s_count is not None and s_count > 0 and n % s_count == 0:
        L = n // s_count
        return ar // L, torch.ones(n, dtype=torch.float64, device=DEV), s_count, L, 'padded, S from advantages'
    return ar, torch.ones(n, dtype=torch.float64, device=DEV), n, 1, 'one row per sequence'


def row_weights(mask, row_seq, S, agg, opts, maxlen):
    """Per-row weight of the per-token loss under spec section 4's aggregations."""
    counts = torch.zeros(S, dtype=torch.float64, device=DEV).index_add_(0, row_seq, mask)
    if agg == 'seqMeanTokenMean':
        return mask / (S * counts.clamp(min=1.0)[row_seq])
    if agg == 'tokenMean':
        norm = opts.get('normalizer')
        norm = float(norm) if norm is not None else max(1.0, float(mask.sum()))
        return mask / norm
    if agg == 'constant':
        mcl = opts.get('maxCompletionLength')
        return mask / (S * float(mcl if mcl is not None else maxlen))
    if agg == 'seqMeanTokenSum':
        return mask / S
    raise ValueError('unsupported aggregation %r' % agg)


LOSS_PRESETS = {
    'grpo': ('seqMeanTokenMean', None), 'bnpo': ('tokenMean', None), 'dr_grpo': ('constant', None),
    'dapo': ('tokenMean', 0.28),
}


def check_logprobs(case_name, inp, out, opts):
    rows = []
    logits_t = inp['logits']
    v = int(logits_t.shape[-1])
    logits = as_rows(logits_t, v)
    n = logits.shape[0]
    targets = inp['targets'].reshape(-1).long()
    T = float(opts.get('temperature', 1.0))
    ig = int(opts.get('ignoreIndex', -100))
    valid = targets != ig
    if bool((valid & ((targets < 0) | (targets >= v))).any()):
        raise ValueError('a target outside [0, V) that is not ignoreIndex')
    tsafe = torch.where(valid, targets, torch.zeros_like(targets))
    acc = {}
    wanted = [k for k in ('logp', 'entropy', 'lse') if k in out]
    for k in wanted:
        acc[k] = ErrAcc()
    acc32 = ErrAcc() if 'logp' in out else None
    step = chunk_rows(v, n)
    with torch.no_grad():
        for a in range(0, n, step):
            b = min(n, a + step)
            z = logits[a:b]
            t = tsafe[a:b, None]
            ok = valid[a:b]
            u = z.double() / T
            lse = torch.logsumexp(u, dim=-1)
            zero = torch.zeros((), dtype=torch.float64, device=DEV)
            if 'logp' in out:
                lp = torch.where(ok, u.gather(-1, t).squeeze(-1) - lse, zero)
                acc['logp'].add(out['logp'].reshape(-1)[a:b], lp)
                lp32 = (z.float() / T).log_softmax(-1).gather(-1, t).squeeze(-1)
                lp32 = torch.where(ok, lp32, torch.zeros_like(lp32))
                acc32.add(out['logp'].reshape(-1)[a:b], lp32)
            if 'entropy' in out:
                p = torch.exp(u - lse[:, None])
                pu = torch.where(p > 0, p * u, zero)
                H = torch.where(ok, lse - pu.sum(-1), zero)
                acc['entropy'].add(out['entropy'].reshape(-1)[a:b], H)
            if 'lse' in out:
                # lse = log sum exp(z / T) on the rows that are not ignored
                acc['lse'].add(out['lse'].reshape(-1)[a:b][ok], lse[ok])
    for k in wanted:
        rows.append(acc[k].row('logprobs', case_name, k, LOGP_TOL))
    if acc32 is not None:
        rows.append(acc32.row('logprobs', case_name, 'logp_vs_torch_fp32', LOGP_TOL,
                              reference_impl='(logits.float()/T).log_softmax(-1).gather'))
    return rows


def check_grpo(case_name, inp, out, opts, scalars):
    logits_t = inp['logits']
    v = int(logits_t.shape[-1])
    logits = as_rows(logits_t, v)
    n = logits.shape[0]
    dtype_name = str(logits.dtype).replace('torch.', '')
    targets = inp['targets'].reshape(-1).long()
    T = float(opts.get('temperature', 1.0))
    ig = int(opts.get('ignoreIndex', -100))
    preset = LOSS_PRESETS.get(opts.get('lossType', 'grpo'))
    if preset is None:
        raise ValueError('unsupported lossType %r' % opts.get('lossType'))
    unsupported = []
    if opts.get('surrogate', 'clip') != 'clip':
        unsupported.append('surrogate')
    if opts.get('importanceSamplingLevel', 'token') != 'token':
        unsupported.append('importanceSamplingLevel')
    if float(opts.get('topEntropyQuantile', 1)) != 1:
        unsupported.append('topEntropyQuantile')
    if opts.get('maskTruncatedCompletions'):
        unsupported.append('maskTruncatedCompletions')
    if unsupported:
        raise ValueError('the reference here does not implement options %s' % ', '.join(unsupported))
    eps = float(opts.get('epsilon', 0.2))
    eps_lo = float(opts.get('epsilonLow', eps))
    eps_hi = float(opts.get('epsilonHigh', preset[1] if preset[1] is not None else eps))
    delta = opts.get('delta')
    beta = float(opts.get('beta', 0.0))
    est = opts.get('klEstimator', 'k3')
    ent_coef = float(opts.get('entropyCoef', 0.0))
    agg = opts.get('aggregation', preset[0])
    adv_seq = inp['advantages'].reshape(-1).double()
    old = inp['oldLogp'].reshape(-1).double() if 'oldLogp' in inp else None
    ref = inp['refLogp'].reshape(-1).double() if 'refLogp' in inp else None
    if beta != 0 and ref is None:
        raise ValueError('beta != 0 needs refLogp')
    row_seq, mask, S, maxlen, layout = layout_of(inp, n, adv_seq.numel(), tuple(logits_t.shape))
    if adv_seq.numel() != S:
        raise ValueError('%d advantages for %d sequences' % (adv_seq.numel(), S))
    valid = targets != ig
    if bool((valid & ((targets < 0) | (targets >= v))).any()):
        raise ValueError('a target outside [0, V) that is not ignoreIndex')
    mask = mask * valid.double()
    if 'completionMask' in inp:
        mask = mask * (inp['completionMask'].reshape(-1).double() != 0).double()
    w = row_weights(mask, row_seq, S, agg, opts, maxlen)
    adv = adv_seq[row_seq]
    tsafe = torch.where(valid, targets, torch.zeros_like(targets))
    grad_acc = ErrAcc(round_dtype=logits.dtype) if 'grad' in out else None
    logp_acc = ErrAcc() if 'logp' in out else None
    loss = 0.0
    step = chunk_rows(v, n)
    zero = torch.zeros((), dtype=torch.float64, device=DEV)
    for a in range(0, n, step):
        b = min(n, a + step)
        z = logits[a:b].double().requires_grad_(True)
        u = z / T
        ls = u.log_softmax(-1)
        lp = ls.gather(-1, tsafe[a:b, None]).squeeze(-1)
        lr = (lp - lp.detach()) if old is None else (lp - old[a:b])
        rho = torch.exp(lr.clamp(-20.0, 20.0))
        A = adv[a:b]
        first = A * (rho if delta is None else torch.clamp(rho, max=float(delta)))
        second = A * rho.clamp(1.0 - eps_lo, 1.0 + eps_hi)
        tok = -torch.minimum(first, second)
        if beta != 0:
            x = (ref[a:b] - lp).clamp(-20.0, 20.0)
            if est == 'k1':
                kl = -x
            elif est == 'k2':
                kl = 0.5 * x * x
            elif est == 'k3':
                kl = (torch.expm1(x) - x).clamp(0.0, 10.0)
            else:
                raise ValueError('unknown klEstimator %r' % est)
            tok = tok + beta * kl
        if ent_coef != 0:
            p = ls.exp()
            H = -torch.where(p > 0, p * ls, zero).sum(-1)
            tok = tok - ent_coef * H
        wa = w[a:b]
        part = (wa * torch.where(wa != 0, tok, zero)).sum()
        part.backward()
        loss += float(part.detach())
        if grad_acc is not None:
            grad_acc.add(as_rows(out['grad'], v)[a:b], z.grad)
        if logp_acc is not None:
            logp_acc.add(out['logp'].reshape(-1)[a:b], torch.where(valid[a:b], lp.detach(), zero))
        z = u = ls = lp = part = None
    rows = []
    if 'loss' in scalars:
        rows.append(scalar_check('grpo', case_name, 'loss', scalars['loss'], loss, LOGP_TOL))
    if logp_acc is not None:
        rows.append(logp_acc.row('grpo', case_name, 'logp', LOGP_TOL))
    if grad_acc is not None:
        rows.append(grad_acc.row('grpo', case_name, 'grad', GRAD_TOL.get(dtype_name, 2e-3)))
    for r in rows:
        r['layout'] = layout
    return rows


def check_distill(case_name, inp, out, opts, scalars):
    st = inp['student']
    v = int(st.shape[-1])
    student = as_rows(st, v)
    teacher = as_rows(inp['teacher'], v)
    n = student.shape[0]
    dtype_name = str(student.dtype).replace('torch.', '')
    div = opts.get('divergence', 'forwardKL')
    beta = float(opts.get('beta', 0.5))
    T = float(opts.get('temperature', 1.0))
    ig = int(opts.get('ignoreIndex', -100))
    hard = float(opts.get('hardLabelWeight', 0.0))
    agg = opts.get('aggregation', 'tokenMean')
    if div not in ('forwardKL', 'reverseKL', 'jsd'):
        raise ValueError('unknown divergence %r' % div)
    targets = inp['targets'].reshape(-1).long() if 'targets' in inp else None
    if hard != 0 and targets is None:
        raise ValueError('hardLabelWeight needs targets')
    row_seq, mask, S, maxlen, layout = layout_of(inp, n, None, tuple(st.shape))
    if targets is not None:
        valid = targets != ig
        mask = mask * valid.double()
        tsafe = torch.where(valid, targets, torch.zeros_like(targets))
    else:
        tsafe = None
    if 'completionMask' in inp:
        mask = mask * (inp['completionMask'].reshape(-1).double() != 0).double()
    w = row_weights(mask, row_seq, S, agg, opts, maxlen)
    grad_acc = ErrAcc(round_dtype=student.dtype) if 'grad' in out else None
    loss = 0.0
    step = chunk_rows(v, n)
    zero = torch.zeros((), dtype=torch.float64, device=DEV)
    lb = math.log(beta) if 0 < beta < 1 else None
    l1b = math.log(1 - beta) if 0 < beta < 1 else None
    for a in range(0, n, step):
        b = min(n, a + step)
        zs = student[a:b].double().requires_grad_(True)
        ls = (zs / T).log_softmax(-1)
        lt = (teacher[a:b].double() / T).log_softmax(-1)
        ps = ls.exp()
        pt = lt.exp()
        if div == 'forwardKL':
            d = (pt * torch.where(pt > 0, lt - ls, zero)).sum(-1)
        elif div == 'reverseKL':
            d = (ps * torch.where(ps > 0, ls - lt, zero)).sum(-1)
        else:
            if lb is None:
                raise ValueError('jsd needs beta in (0, 1)')
            both = (pt == 0) & (ps == 0)
            lm = torch.logaddexp(torch.where(both, zero, lt + lb), torch.where(both, zero, ls + l1b))
            kl_t = (pt * torch.where(pt > 0, lt - lm, zero)).sum(-1)
            kl_s = (ps * torch.where(ps > 0, ls - lm, zero)).sum(-1)
            d = beta * kl_t + (1 - beta) * kl_s
        if hard != 0:
            d = d - hard * ls.gather(-1, tsafe[a:b, None]).squeeze(-1)
        wa = w[a:b]
        part = (wa * torch.where(wa != 0, d, zero)).sum()
        part.backward()
        loss += float(part.detach())
        if grad_acc is not None:
            grad_acc.add(as_rows(out['grad'], v)[a:b], zs.grad)
        zs = ls = lt = ps = pt = d = part = None
    rows = []
    if 'loss' in scalars:
        rows.append(scalar_check('distill', case_name, 'loss', scalars['loss'], loss, LOGP_TOL))
    if grad_acc is not None:
        rows.append(grad_acc.row('distill', case_name, 'grad', GRAD_TOL.get(dtype_name, 2e-3)))
    for r in rows:
        r['layout'] = layout
    return rows


def run_checks(run, check_dir):
    with open(os.path.join(check_dir, 'manifest.json')) as f:
        manifest = json.load(f)
    cases = manifest.get('cases', []) if isinstance(manifest, dict) else manifest
    for i, case in enumerate(cases):
        op = case.get('op', '?')
        name = case.get('name') or case.get('case') or '#%d %s %sx%s %s' % (
            i, op, case.get('n'), case.get('v'), case.get('dtype'))
        name = str(name)
        rows = None
        inp = out = None
        try:
            inp = {k: load_tensor(check_dir, s) for k, s in (case.get('inputs') or {}).items()}
            out = {k: load_tensor(check_dir, s) for k, s in (case.get('outputs') or {}).items()}
            opts = case.get('options') or {}
            scalars = case.get('scalars') or {}
            if op == 'logprobs':
                rows = check_logprobs(name, inp, out, opts)
            elif op == 'grpo':
                rows = check_grpo(name, inp, out, opts, scalars)
            elif op == 'distill':
                rows = check_distill(name, inp, out, opts, scalars)
            else:
                run.notes.append('check case %s: op %r has no reference here, not checked' % (name, op))
                rows = []
            known = {'logprobs': ('logp', 'entropy', 'lse'), 'grpo': ('grad', 'logp'),
                     'distill': ('grad',)}.get(op, ())
            extra_out = [k for k in out if k not in known]
            extra_sc = [k for k in scalars if k != 'loss']
            if op in ('logprobs', 'grpo', 'distill') and (extra_out or extra_sc):
                run.notes.append('check case %s: not compared: %s' % (name, ', '.join(extra_out + extra_sc)))
        except Exception as e:
            rows = [{'op': op, 'case': name, 'quantity': '(case)', 'rel_err': None, 'max_abs_err': None,
                     'tol': None, 'ok': False, 'detail': describe(e)}]
        inp = out = None
        cleanup()
        for r in rows:
            run.add_check(r)


# ----------------------------------------------------------------------------------------------
# main


def parse_shapes(text):
    out = []
    for part in text.split(','):
        part = part.strip().lower()
        if not part:
            continue
        a, sep, b = part.partition('x')
        if not sep:
            raise ValueError(part)
        n, v = int(a), int(b)
        if n <= 0 or v <= 0:
            raise ValueError(part)
        out.append((n, v))
    if not out:
        raise ValueError(text)
    return out


def build_parser():
    p = argparse.ArgumentParser(
        description='Time PyTorch peers of the grpo-kernels ops on a GPU and check grpo-kernels results.')
    p.add_argument('--out', required=True, help='the JSON file to write')
    p.add_argument('--check-dir', help='a directory with manifest.json and raw files of grpo-kernels results to check')
    p.add_argument('--shapes', help='NxV list, e.g. 4096x32000,16384x151936 (default: N in 4096,16384 x V in '
                                    '32000,128256,151936,262144); distill uses N=--distill-n and these Vs')
    p.add_argument('--dtypes', help='float32,bfloat16,float16 (default float32,bfloat16)')
    p.add_argument('--ops', help='any of copy,logprobs,grpo,distill,sample, or none (default: all)')
    p.add_argument('--reps', type=int, help='timed calls per peer (default 20, --quick 5)')
    p.add_argument('--warmup', type=int, default=3, help='untimed calls before timing (default 3, at least 1 runs)')
    p.add_argument('--no-compile', action='store_true', help='skip the torch.compile peers')
    p.add_argument('--compile-vs', default='151936',
                   help='V values at which the torch.compile peers run (at the smallest N of each op), '
                        'or "all" for every shape (default 151936)')
    p.add_argument('--distill-n', type=int, help='rows of the distill shapes (default 8192, --quick 4096)')
    p.add_argument('--max-timed-s', type=float, default=3.0,
                   help='fewer timed calls (at least 3) for a peer whose calls would take longer than this in all')
    p.add_argument('--grad-tol-16bit', type=float, default=2e-3,
                   help='--check-dir tolerance of bfloat16/float16 gradients, relative L2 (default 2e-3; '
                        'the rows also give dtype_rounding_err, the error of the exact gradient rounded once)')
    p.add_argument('--quick', action='store_true', help='N=4096, V in 32000,151936, bfloat16, 5 reps')
    p.add_argument('--device', default='cuda', choices=['cuda', 'cpu'],
                   help='cpu: only to test this script without a GPU (wall-clock timings, no memory figures)')
    return p


def main(argv=None):
    global torch, F, DEV
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.shapes:
            shapes = parse_shapes(args.shapes)
        elif args.quick:
            shapes = [(n, v) for n in QUICK_NS for v in QUICK_VS]
        else:
            shapes = [(n, v) for n in DEFAULT_NS for v in DEFAULT_VS]
    except ValueError as e:
        parser.error('--shapes: expected NxV[,NxV...], got %s' % e)
    dtypes = [d.strip() for d in (args.dtypes or ('bfloat16' if args.quick else 'float32,bfloat16')).split(',') if d.strip()]
    bad = [d for d in dtypes if d not in FLOAT_DTYPES]
    if bad or not dtypes:
        parser.error('--dtypes: expected some of %s, got %s' % (','.join(FLOAT_DTYPES), args.dtypes))
    if args.ops is None:
        ops = list(ALL_OPS)
    elif args.ops.strip().lower() in ('', 'none'):
        ops = []
    else:
        ops = [o.strip() for o in args.ops.split(',') if o.strip()]
        bad = [o for o in ops if o not in ALL_OPS]
        if bad:
            parser.error('--ops: unknown %s (expected some of %s, or none)' % (','.join(bad), ','.join(ALL_OPS)))
    if args.reps is None:
        args.reps = 5 if args.quick else 20
    if args.reps < 1 or args.warmup < 0:
        parser.error('--reps must be >= 1 and --warmup >= 0')
    if args.distill_n is None:
        args.distill_n = 4096 if args.quick else 8192
    if args.distill_n < 1 or args.max_timed_s <= 0:
        parser.error('--distill-n must be >= 1 and --max-timed-s > 0')
    if args.compile_vs.strip().lower() == 'all':
        args.compile_vs = 'all'
    else:
        try:
            args.compile_vs = [int(x) for x in args.compile_vs.split(',') if x.strip()]
        except ValueError:
            parser.error('--compile-vs: expected V[,V...] or all')
    if not args.grad_tol_16bit > 0:
        parser.error('--grad-tol-16bit must be > 0')
    GRAD_TOL['bfloat16'] = GRAD_TOL['float16'] = args.grad_tol_16bit
    if args.check_dir and not os.path.isfile(os.path.join(args.check_dir, 'manifest.json')):
        parser.error('--check-dir: no manifest.json in %s' % args.check_dir)
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        parser.error('--out: directory %s does not exist' % out_dir)

    DEV = args.device
    run = Run(args, args.out)
    run.meta = {'device': None, 'capability': None, 'torch_version': None, 'triton_version': None,
                'cuda_version': None}
    try:
        import torch as _torch
        import torch.nn.functional as _F
        torch = _torch
        F = _F
    except Exception as e:
        run.meta['error'] = 'cannot import torch: ' + describe(e)
        run.flush()
        log(run.meta['error'])
        return 3
    run.meta['torch_version'] = torch.__version__
    run.meta['cuda_version'] = getattr(torch.version, 'cuda', None)
    try:
        import triton
        run.meta['triton_version'] = getattr(triton, '__version__', None)
    except Exception:
        pass
    if DEV == 'cuda':
        if not torch.cuda.is_available():
            run.meta['error'] = 'no CUDA device is available to torch'
            run.flush()
            log(run.meta['error'])
            return 3
        major, minor = torch.cuda.get_device_capability()
        run.meta['device'] = torch.cuda.get_device_name()
        run.meta['capability'] = '%d.%d' % (major, minor)
        run.meta['device_memory_bytes'] = int(torch.cuda.get_device_properties(0).total_memory)
    else:
        run.meta['device'] = 'cpu'
    run.meta['settings'] = {
        'shapes': ['%dx%d' % s for s in shapes], 'dtypes': dtypes, 'ops': ops, 'reps': args.reps,
        'warmup': args.warmup, 'compile': not args.no_compile, 'compile_vs': args.compile_vs,
        'distill_n': args.distill_n, 'max_timed_s': args.max_timed_s, 'quick': bool(args.quick),
        'check_tol': {'logp_entropy_loss': LOGP_TOL, 'grad': dict(GRAD_TOL)},
        'seq_len': SEQ_LEN, 'grpo': {'epsilon': GRPO_EPS, 'beta': GRPO_BETA, 'kl': 'k3', 'loss_type': 'grpo'},
        'jsd_beta': JSD_BETA, 'top_k': TOP_K, 'top_p': TOP_P, 'mem_fraction': MEM_FRACTION,
    }
    run.notes.append('ms: median of the timed calls (CUDA events); ms_min: the fastest; gbs = bytes / ms; '
                     'copy_gbs: best-of copy bandwidth (read + write) of a 1 GiB tensor; peak_extra_bytes: '
                     'peak allocation during one call above what was allocated before it (outputs such as '
                     'the gradient included)')
    run.notes.append('trl_selective_log_softmax / trl_eager: float32 logits take the logsumexp one sequence '
                     '([L, V] slice, L=%d) at a time as TRL does; 16-bit logits take log_softmax + gather one '
                     'sequence at a time' % SEQ_LEN)
    torch.manual_seed(0)
    run.flush()
    log('device %s, torch %s, ops %s, shapes %s, dtypes %s' % (
        run.meta['device'], torch.__version__, ','.join(ops) or 'none',
        ','.join('%dx%d' % s for s in shapes), ','.join(dtypes)))

    if args.check_dir:
        try:
            run_checks(run, args.check_dir)
        except Exception as e:
            run.checks.append({'op': '?', 'case': '(manifest)', 'quantity': '(all)', 'rel_err': None,
                               'max_abs_err': None, 'tol': None, 'ok': False, 'detail': describe(e)})
            log('checks failed: ' + describe(e))
        cleanup()

    sections = [
        ('copy', lambda: bench_copy(run)),
        ('logprobs', lambda: bench_logprobs(run, shapes, dtypes)),
        ('grpo', lambda: bench_grpo(run, shapes, dtypes)),
        ('distill', lambda: bench_distill(run, args.distill_n, sorted(set(s[1] for s in shapes)), dtypes)),
        ('sample', lambda: bench_sample(run, shapes, dtypes)),
    ]
    for name, fn in sections:
        if name not in ops:
            continue
        try:
            fn()
        except Exception as e:  # a bug in a section must not lose the other sections
            run.notes.append('section %s stopped: %s' % (name, describe(e)))
            log('section %s stopped: %s' % (name, describe(e)))
        cleanup()
    run.complete = True
    run.flush()
    log('done in %.1f s: %d results, %d checks (%d not ok) -> %s' % (
        time.time() - run.t0, len(run.results), len(run.checks),
        sum(1 for c in run.checks if not c.get('ok')), args.out))
    return 0


if __name__ == '__main__':
    sys.exit(main())
