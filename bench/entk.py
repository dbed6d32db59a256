"""Benchmark of the empirical NTK engine against the torch.func Jacobian-contraction recipe and a lower bound.

    python bench/entk.py                  # full run (~15 min on 2 CPU cores), rewrites BENCHMARKS.md
    python bench/entk.py --quick          # n = 16 only, prints, does not touch BENCHMARKS.md

Each measurement runs in its own subprocess so that peak memory (ru_maxrss) is that method's alone. The lower bound is
one batched forward+backward of the same examples for the same parameters (in the same example blocks as ours, since a
single 512 x 64 batch does not fit in memory) plus the Gram's 2 n^2 P multiply-adds at the machine's measured float32
matmul speed (best of 5). Baselines: 'recipe' is torch.func's Jacobian contraction (`jacrev` of the batch outputs
through `functional_call`, then J Jᵀ in float32; `vmap` over examples fails inside transformers' mask code), 'loop' is
one autograd call per example (our `method='reference'`) + a float64 Gram. The model is SmolLM2-135M-Instruct
(embedded), parameters 'attention' (26.5M), task rt-sentiment.
"""
import argparse, json, os, platform, resource, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def _setup(n, T):
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    import torch
    from ntk_finetune.models import load_model, tokenize, make_output_fn, select_params
    from ntk_finetune.data import load_task, task_info
    model, tok = load_model('smollm2-135m'); info = task_info('rt-sentiment')
    texts = load_task('rt-sentiment', 'train', n=n, seed=0)['text']
    b = tokenize(tok, texts, T, info.template)
    if b['input_ids'].shape[1] < T:   # pad to exactly T so that T is what the table says
        pad = T - b['input_ids'].shape[1]
        b = {'input_ids': torch.nn.functional.pad(b['input_ids'], (0, pad), value=tok.pad_token_id),
             'attention_mask': torch.nn.functional.pad(b['attention_mask'], (0, pad), value=0)}
    fn = make_output_fn(model, tok, info)
    with torch.no_grad(): fn(model, {k: v[:1] for k, v in b.items()})   # warm-up
    return torch, model, b, fn, select_params(model, 'attention')

def worker(method, n, T, out):
    torch, model, b, fn, sel = _setup(n, T)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    t0 = time.perf_counter()
    if method == 'ours':
        from ntk_finetune.entk import empirical_ntk
        G = empirical_ntk(model, b, fn, 'attention', memory_budget=6 << 30, progress=False)
    elif method == 'loop':                                              # per-example autograd loop + Gram
        from ntk_finetune.entk import empirical_ntk
        G = empirical_ntk(model, b, fn, 'attention', method='reference', progress=False)
    elif method == 'recipe':
        from torch.func import functional_call, jacrev
        for p in model.parameters(): p.requires_grad_(False)
        class Wrap(torch.nn.Module):
            def __init__(s, m): super().__init__(); s.model = m
            def forward(s, batch): return fn(s.model, batch)
        w = Wrap(model); params = {k: v.detach() for k, v in sel.items()}
        J = jacrev(lambda p: functional_call(w, {'model.' + k: v for k, v in p.items()}, (b,)))(params)
        Jf = torch.cat([J[k].reshape(n, -1) for k in params], 1); del J
        G = (Jf @ Jf.T).double()                       # the recipe's own float32 contraction (timed)
        sec_recipe = time.perf_counter() - t0
        G64 = Jf.double() @ Jf.double().T              # its Jacobian contracted in float64, for the agreement (untimed)
        torch.save(G64, out + '.64.pt')
    elif method == 'lower_bound':
        for p in model.parameters(): p.requires_grad_(False)
        for p in sel.values(): p.requires_grad_(True)
        blk = 32
        for s in range(0, n, blk):
            f = fn(model, {k: v[s:s + blk] for k, v in b.items()})
            torch.autograd.grad(f.sum(), list(sel.values()))
        t_fb = time.perf_counter() - t0
        A = torch.randn(64, 1 << 20); ts = []
        for _ in range(5): t1 = time.perf_counter(); A @ A.T; ts.append(time.perf_counter() - t1)
        rate = 2 * 64 * 64 * (1 << 20) / min(ts)                       # best of 5: the machine's matmul speed
        P = sum(p.numel() for p in sel.values())
        t_gram = 2 * n * n * P / rate
        G = None
        res = dict(seconds=t_fb + t_gram, fwd_bwd=t_fb, gram=t_gram, sgemm_gflops=rate / 1e9)
    sec = sec_recipe if method == 'recipe' else time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if method != 'lower_bound': res = dict(seconds=sec)
    res.update(method=method, n=n, T=T, peak_rss_gb=peak, model_rss_gb=base)
    if G is not None: torch.save(G, out + '.pt')
    Path(out).write_text(json.dumps(res))

def run(method, n, T, tmp):
    out = str(tmp / f'{method}_{n}_{T}.json')
    r = subprocess.run([sys.executable, __file__, '--worker', method, str(n), str(T), out], capture_output=True, text=True)
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ['killed']
        return dict(method=method, n=n, T=T, error=f"exit {r.returncode}: {tail[0][:160]}")
    return json.loads(Path(out).read_text())

def machine():
    import torch
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), Python {platform.python_version()}"

if __name__ == '__main__':
    if len(sys.argv) > 1 and sys.argv[1] == '--worker':
        worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]); sys.exit(0)
    ap = argparse.ArgumentParser(); ap.add_argument('--quick', action='store_true'); a = ap.parse_args()
    import tempfile, torch
    tmp = Path(tempfile.mkdtemp())
    cases = [(16, 32, ['ours', 'loop', 'recipe', 'lower_bound'])] if a.quick else \
            [(32, 32, ['ours', 'loop', 'recipe', 'lower_bound']), (128, 64, ['ours', 'lower_bound']),
             (256, 64, ['ours', 'lower_bound']), (512, 64, ['ours', 'lower_bound'])]
    rows = []
    for n, T, methods in cases:
        res = {m: run(m, n, T, tmp) for m in methods}
        agree = None
        if 'recipe' in res and 'error' not in res['recipe'] and 'error' not in res['ours']:
            G, R, R64 = (torch.load(tmp / f) for f in (f'ours_{n}_{T}.json.pt', f'recipe_{n}_{T}.json.pt', f'recipe_{n}_{T}.json.64.pt'))
            agree = {'ours_vs_recipe_jacobian_fp64': float((G - R64).abs().max() / R64.abs().max()),
                     'recipe_fp32_contraction_vs_fp64': float((R - R64).abs().max() / R64.abs().max())}
        rows.append((n, T, res, agree)); print(json.dumps({'n': n, 'T': T, **res, 'agreement': agree}), flush=True)
    if a.quick: sys.exit(0)
    cmd = 'python bench/entk.py'
    L = ["# Benchmarks", "", "Generated by `bench/entk.py`; do not edit by hand: rerun it.", "",
         "## Empirical NTK: SmolLM2-135M, attention parameters (26.5M), rt-sentiment prompts", "",
         f"Command: `{cmd}` (run from the repository root, inside the project venv).  ",
         f"Machine: {machine()}.  ", f"Date: {time.strftime('%Y-%m-%d')}.", "",
         "Lower bound = one batched forward+backward of the same examples for the same parameters (blocks of 32) + "
         "the Gram's 2n²P flops at the measured float32 matmul speed (best of 5). 'recipe' = torch.func Jacobian "
         "contraction (jacrev of the batch outputs via functional_call, J Jᵀ in float32); 'loop' = one autograd call "
         "per example + float64 Gram (our method='reference'). Ours = `empirical_ntk(..., memory_budget=6 GiB)`. Peak = process peak RSS (ru_maxrss), model "
         "included (≈ its size after load is given as 'model').", "",
         "Agreement: max |G_ours − G_recipe| / max |G_recipe|, with the recipe's Jacobian contracted in float64; the "
         "recipe's own float32 contraction over 26.5M columns is off by the amount in brackets.", "",
         "| n | T | method | seconds | × lower bound | × recipe | peak RSS GB (model) | max rel. diff vs recipe |",
         "|---|---|---|---|---|---|---|---|"]
    for n, T, res, agree in rows:
        lb = res.get('lower_bound', {}).get('seconds'); rc = res.get('recipe', {}).get('seconds')
        agree_s = '' if agree is None else (f"{agree['ours_vs_recipe_jacobian_fp64']:.1e} "
                                            f"(recipe fp32: {agree['recipe_fp32_contraction_vs_fp64']:.1e})")
        for m, r in res.items():
            if 'error' in r: L.append(f"| {n} | {T} | {m} | failed: {r['error']} | | | | |"); continue
            extra = (f" (fwd+bwd {r['fwd_bwd']:.1f} s + Gram {r['gram']:.1f} s at {r['sgemm_gflops']:.0f} GFLOP/s)"
                     if m == 'lower_bound' else '')
            x_lb = format(r['seconds'] / lb, '.2f') if lb else ''
            x_rc = format(r['seconds'] / rc, '.2f') if rc else ''
            L.append(f"| {n} | {T} | {m} | {r['seconds']:.1f}{extra} | {x_lb} | {x_rc} | "
                     f"{r['peak_rss_gb']:.2f} ({r['model_rss_gb']:.2f}) | {agree_s if m == 'ours' else ''} |")
    out = ROOT / 'BENCHMARKS.md'; old = out.read_text() if out.exists() else ''
    marker = '\n## '
    rest = ''.join(marker + s for s in old.split(marker)[1:] if not s.startswith('Empirical NTK'))
    tmpf = out.with_suffix('.tmp'); tmpf.write_text('\n'.join(L) + '\n' + rest); os.replace(tmpf, out)
    print(f"wrote {out}")
