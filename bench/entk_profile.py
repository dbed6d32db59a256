"""Where the kernel engine's time goes: one `empirical_ntk` call on SmolLM2-135M attention, with a timer around each
internal stage (warm: after an untimed two-example run). Writes bench/results/entk_profile.json, which
`python bench/entk.py --rewrite` renders into BENCHMARKS.md beside the kernel table.

    python bench/entk_profile.py [--n 512] [--T 64]
"""
import argparse, collections, json, os, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / 'bench' / 'results' / 'entk_profile.json'
STAGES = {  # (object, attribute) -> what it is
    ('E', '_probe'): 'probe (one example: the plan check)',
    ('E', '_capture'): 'capture: blocked forward + backward to the layer outputs (writes included)',
    ('S', 'write'): '  of which: writing captures (to files beyond the budget)',
    ('S', 'read'): 'reading captures back for the Gram',
    ('G', '_weight_rows'): 'per-example gradients J (bmm over tokens)',
    ('G', '_blocked_product'): 'Gram tile products J_i J_jᵀ (float32 blocks, float64 sums)',
    ('C', '_trim'): 'returning freed memory to the OS',
}
ALSO = {('C', '_trim'): [('G', '_trim')]}  # the same function, imported by another stage's module

def main(n, T):
    sys.path.insert(0, str(ROOT / 'bench'))
    import entk as B
    import types
    import ntk_finetune.entk as E, ntk_finetune.entk_capture as C, ntk_finetune.entk_gram as G
    torch, model, b, fn, sel = B._setup(n, T)
    E.empirical_ntk(model, {k: v[:2] for k, v in b.items()}, fn, sel, progress=False)     # warm-up
    acc = collections.defaultdict(float)
    objs = {'E': E, 'S': C._CaptureStore, 'C': C, 'G': G}

    def steps(gen, key):  # a generator stage (the capture pass) is timed while it runs, step by step
        while True:
            t0 = time.perf_counter()
            try:
                item = next(gen)
            except StopIteration:
                acc[key] += time.perf_counter() - t0
                return
            acc[key] += time.perf_counter() - t0
            yield item

    for (o, name) in STAGES:
        f = getattr(objs[o], name)
        def timed(*a, _f=f, _k=(o, name), **k):
            t0 = time.perf_counter(); r = _f(*a, **k); acc[_k] += time.perf_counter() - t0
            return steps(r, _k) if isinstance(r, types.GeneratorType) else r
        for oo, nn in [(o, name)] + ALSO.get((o, name), []):
            setattr(objs[oo], nn, timed)
    t0 = time.perf_counter()
    E.empirical_ntk(model, b, fn, sel, progress=False)
    total = time.perf_counter() - t0
    rows = [{'stage': STAGES[k], 'seconds': acc[k]} for k in STAGES]
    res = {'n': n, 'T': T, 'total_seconds': total, 'date': time.strftime('%Y-%m-%d'), 'machine': B.machine(),
           'command': f'python bench/entk_profile.py --n {n} --T {T}', 'stages': rows}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    from ntk_finetune.core import save_json
    save_json(res, OUT)
    print(json.dumps(res, indent=1))

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=512); ap.add_argument('--T', type=int, default=64)
    a = ap.parse_args(); main(a.n, a.T)
