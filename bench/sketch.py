"""The sketched kernel (`entk_sketch`) against the exact one: its error and time as the sketch dimension grows.

    python bench/sketch.py                 # n = 512, T = 64 (~20 min on 2 cores); writes bench/results/sketch.json
                                           # and its section of BENCHMARKS.md
    python bench/sketch.py --n 16 --quick  # a few seconds: prints, writes nothing
    python bench/sketch.py --rewrite       # BENCHMARKS.md from the committed results only

SmolLM2-135M-Instruct (embedded), parameters 'attention' (26.5M), rt-sentiment prompts padded to T, as in
`bench/entk.py`, whose workers give the exact kernel ('ours') and one batched forward+backward of the same examples
('lower_bound'); each sketch runs in its own subprocess too (time and peak memory its own). For each k: the relative
Frobenius error of Ĝ = ΦΦᵀ, the relative errors of the top-50 eigenvalues of K = G/n, and the answers the package
gives from each kernel (β of the power-law fit, σ̂, each rule's stop), with the labels of the same examples.
"""
import argparse, json, resource, subprocess, sys, tempfile, time
from pathlib import Path
from safetensors.torch import save_file, load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'bench'))
RESULTS = ROOT / 'bench' / 'results' / 'sketch.json'
TITLE = 'Sketched kernel against the exact one: SmolLM2-135M attention, rt-sentiment prompts'
KS = (1024, 4096, 16384, 65536)
KINDS = ('countsketch', 'kronecker')
MODEL, PARAMS = 'smollm2-135m', 'attention'  # what `entk._setup` loads and selects


def worker(kind, k, n, T, out):
    "One sketch, timed from the captured examples to Ĝ (the model is loaded and warmed up first)."
    from entk import _setup
    from ntk_finetune.entk_sketch import sketch_features
    torch, model, b, fn, sel = _setup(n, T)
    sketch_features(model, {k_: v[:2] for k_, v in b.items()}, fn, PARAMS, k=k, kind=kind, progress=False)  # warm-up
    t0 = time.perf_counter()
    sk = sketch_features(model, b, fn, PARAMS, k=k, kind=kind, seed=0, progress=False)
    G = sk.kernel()
    res = dict(method='sketch', kind=kind, k=k, dim=sk.dim, r=sk.r, n=n, T=T, seconds=time.perf_counter() - t0,
               peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, date=time.strftime('%Y-%m-%d'))
    save_file({'G': G.contiguous()}, out + '.safetensors')
    Path(out).write_text(json.dumps(res))


def _run_sketch(kind, k, n, T, tmp):
    out = str(tmp / f'sketch_{kind}_{k}_{n}_{T}.json')
    r = subprocess.run([sys.executable, __file__, '--worker', kind, str(k), str(n), str(T), out], capture_output=True,
                       text=True)
    if r.returncode != 0:
        return dict(method='sketch', kind=kind, k=k, n=n, T=T,
                    error=(r.stderr or r.stdout).strip().splitlines()[-1][:160])
    return json.loads(Path(out).read_text())


def _targets(n, T):
    "(y, f_0) of the benchmark's examples: ±1 labels and the label-word margins at the pretrained weights."
    import torch
    from entk import _setup
    from ntk_finetune.data import load_task
    _, model, b, fn, _ = _setup(n, T)
    y = 2.0 * torch.tensor(load_task('rt-sentiment', 'train', n=n, seed=0)['label'], dtype=torch.float64) - 1
    with torch.no_grad():
        f0 = torch.cat([fn(model, {k: v[s:s + 32] for k, v in b.items()}) for s in range(0, n, 32)]).double()
    return y, f0.reshape(-1)


def answers(G, y, f0) -> dict:
    "What the package answers from a kernel: its spectrum, β, σ̂ and each rule's stop."
    from ntk_finetune.spectrum import eigendecomposition, fit_power_law
    from ntk_finetune.dynamics import default_step_size
    from ntk_finetune.solve import stopping_steps
    n = len(y)
    eig = eigendecomposition(G.double() / n)
    st = stopping_steps(eig, y, f0, default_step_size(float(eig.eigvals[0])))
    return {'eigvals': eig.eigvals, 'beta': fit_power_law(eig.eigvals).rate, 'sigma_hat': st['sigma_hat'],
            'stops': st['stops']}


def errors(G, Gs, exact: dict, y, f0) -> dict:
    "The sketch's errors against the exact kernel."
    import torch
    s = answers(Gs, y, f0)
    top = min(50, len(y))
    rel = ((s['eigvals'][:top] - exact['eigvals'][:top]).abs() / exact['eigvals'][:top]).tolist()
    return {'rel_frobenius': float(torch.linalg.norm(Gs - G) / torch.linalg.norm(G)),
            'top_eig_rel_median': float(torch.tensor(rel).median()), 'top_eig_rel_max': max(rel),
            'lambda1_rel': rel[0], 'beta': s['beta'], 'sigma_hat': s['sigma_hat'], 'stops': s['stops']}


def measure(n, T, ks, kinds=KINDS):
    from entk import run, machine
    tmp = Path(tempfile.mkdtemp())
    exact = run('ours', n, T, tmp)
    bound = run('lower_bound', n, T, tmp)
    G = load_file(str(tmp / f'ours_{n}_{T}.json.safetensors'))['G'].double()
    y, f0 = _targets(n, T)
    ex = answers(G, y, f0)
    rows = []
    for kind, k in [(kind, k) for kind in kinds for k in ks]:
        r = _run_sketch(kind, k, n, T, tmp)
        if 'error' not in r:
            Gs = load_file(str(tmp / f'sketch_{kind}_{k}_{n}_{T}.json.safetensors'))['G'].double()
            r |= errors(G, Gs, ex, y, f0)
        rows.append(r)
        print(json.dumps({q: v for q, v in r.items() if q != 'stops'}), flush=True)
    return {'model': MODEL, 'params': PARAMS, 'n': n, 'T': T, 'machine': machine(), 'date': time.strftime('%Y-%m-%d'),
            'command': f'python bench/sketch.py --n {n} --T {T} --ks {",".join(map(str, ks))}',
            'exact': {**exact, 'beta': ex['beta'],
            'sigma_hat': ex['sigma_hat'], 'stops': ex['stops']}, 'lower_bound': bound, 'sketches': rows}


def markdown(res) -> str:
    ex, fb = res['exact'], res['lower_bound']['fwd_bwd']
    rules = list(ex['stops'])
    L = [f"Command: `{res['command']}`.  ", f"Machine: {res['machine']}.  ", f"Date: {res['date']}.", '',
         f"n = {res['n']}, T = {res['T']}. The exact kernel took {ex['seconds']:.1f} s; one batched forward+backward "
         f"of the same examples {fb:.1f} s. Answers of the exact kernel: β = {ex['beta']:.3f}, σ̂ = "
         f"{ex['sigma_hat']:.4f}, stops " + ', '.join(f"{q} {ex['stops'][q]}" for q in rules) + '.', '',
         '| sketch | k | features D (r per side) | seconds | × fwd+bwd | peak RSS (GB) | ‖Ĝ − G‖/‖G‖ '
         '| top-50 λ rel. error '
         '(median / max) | β | σ̂ | ' + ' | '.join(rules) + ' |', '|' + '---|' * (10 + len(rules))]
    for r in res['sketches']:
        if 'error' in r:
            L.append(f"| {r.get('kind', 'kronecker')} | {r['k']} | failed: {r['error']} |" + ' |' * (8 + len(rules)))
            continue
        L.append(f"| {r.get('kind', 'kronecker')} | {r['k']} | {r['dim']} ({r['r'] or '—'}) | {r['seconds']:.1f} | "
                 f"{r['seconds'] / fb:.2f} | "
                 f"{r['peak_rss_gb']:.2f} | {r['rel_frobenius']:.3f} | {r['top_eig_rel_median']:.3f} / "
                 f"{r['top_eig_rel_max']:.3f} | {r['beta']:.3f} | {r['sigma_hat']:.4f} | "
                 + ' | '.join(str(r['stops'][q]) for q in rules) + ' |')
    return '\n'.join(L)


if __name__ == '__main__':
    if len(sys.argv) > 1 and sys.argv[1] == '--worker':
        worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
        sys.exit(0)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=512)
    ap.add_argument('--T', type=int, default=64)
    ap.add_argument('--ks', type=lambda v: [int(x) for x in v.split(',')], default=list(KS))
    ap.add_argument('--kinds', type=lambda v: v.split(','), default=list(KINDS))
    ap.add_argument('--quick', action='store_true', help='print, write nothing')
    ap.add_argument('--rewrite', action='store_true', help='rewrite BENCHMARKS.md from the committed results only')
    a = ap.parse_args()
    from entk import write_benchmarks
    if a.rewrite:
        write_benchmarks(json.loads(RESULTS.read_text()), TITLE, markdown)
        sys.exit(0)
    res = measure(a.n, a.T, a.ks, a.kinds)
    if a.quick:
        print(markdown(res))
        sys.exit(0)
    from ntk_finetune.core import save_json
    save_json(res, RESULTS)
    write_benchmarks(res, TITLE, markdown)
    print(f"wrote {RESULTS} and BENCHMARKS.md")
