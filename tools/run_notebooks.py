"""Run every notebook once, as `nbdev_test` does (cells flagged with settings.ini's `tst_flags` are skipped), and keep
the executed copies with their outputs under `_exec/` for the documentation site.

    python tools/run_notebooks.py [--n_workers 2] [PATH ...]

The notebooks in `nbs/` stay without outputs (they are the source); `_exec/` is what `tools/build_docs.py` renders, so
the site shows every figure and result the examples produce. Exits non-zero if any notebook fails, like `nbdev_test`.
"""
import argparse, os, re, sys, time, traceback, warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / '_exec'

BAR = re.compile(r'\d+%\|.*\||\d+it/s\]|it/s\]')         # what a tqdm bar leaves in a cell's stderr

def _clean(outputs: list) -> list:
    "A cell's outputs without the progress bars a run leaves in its stderr (the pages show results, not their making)."
    keep = []
    for o in outputs:
        if o.get('output_type') == 'stream' and o.get('name') == 'stderr':
            text = ''.join(o['text']) if isinstance(o['text'], list) else o['text']
            lines = [ln for ln in re.split(r'[\r\n]', text) if ln.strip() and not BAR.search(ln)]
            if not lines: continue
            o = {**o, 'text': '\n'.join(lines) + '\n'}
        keep.append(o)
    return keep

def run_one(fn: Path, flags: set) -> tuple:
    "Execute one notebook (skipping flagged cells); write the executed copy to _exec/; (ok, seconds, error)."
    from execnb.nbio import read_nb, write_nb
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    from nbdev.process import NBProcessor
    from nbdev.frontmatter import FrontmatterProc
    os.environ['IN_TEST'] = '1'
    nb = NBProcessor(fn, procs=FrontmatterProc, process=True).nb
    def skip(cell):
        if cell.cell_type != 'code': return True
        direc = getattr(cell, 'directives_', {}) or {}
        if direc.get('eval:', [''])[0].lower() == 'false': return True
        return flags & direc.keys()
    t0 = time.time(); k = CaptureShell(fn)
    try:
        with working_directory(fn.parent): k.run_all(nb, exc_stop=True, preproc=skip)
    except Exception:
        return False, time.time() - t0, k.prettytb(fname=fn)
    raw = read_nb(fn)                      # the source as written (the processor strips the `#|` lines the docs need)
    if len(raw.cells) != len(nb.cells): return False, time.time() - t0, f'{fn.name}: the processor changed the cell count'
    for c, e in zip(raw.cells, nb.cells):
        if c.cell_type == 'code': c.outputs, c.execution_count = _clean(e.get('outputs', [])), e.get('execution_count')
    nb = raw
    dest = OUT / fn.relative_to(ROOT / 'nbs'); dest.parent.mkdir(parents=True, exist_ok=True)
    from ntk_finetune.core import atomic_path
    with atomic_path(dest) as tmp: write_nb(nb, tmp)
    return True, time.time() - t0, ''

def _worker(args):
    fn, flags, threads = args
    for v in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS'): os.environ[v] = str(threads)   # no oversubscription
    os.environ.setdefault('HF_HUB_DISABLE_PROGRESS_BARS', '1')          # no weight-loading bars in the pages
    # peft asks transformers for a deprecated attribute when it wraps a model: not the package's warning to show
    warnings.filterwarnings('ignore', message='`is_gradient_checkpointing` is deprecated', category=FutureWarning)
    print(f'Starting {fn.relative_to(ROOT)}', flush=True)
    ok, sec, err = run_one(fn, flags)
    print(f'- {"Completed" if ok else "FAILED"} {fn.relative_to(ROOT)} ({sec:.0f} s)', flush=True)
    if not ok: sys.stderr.write(err + '\n')
    return fn, ok, sec

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('paths', nargs='*', help='notebooks (default: every notebook under nbs/)')
    ap.add_argument('--n_workers', type=int, default=2)
    a = ap.parse_args()
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    from nbdev.config import get_config
    cfg = get_config()
    flags = set(cfg.get('tst_flags', '').split())
    files = [Path(p).resolve() for p in a.paths] or sorted(p for p in (ROOT / 'nbs').rglob('*.ipynb')
                                                         if '.ipynb_checkpoints' not in str(p) and not p.name.startswith('_'))
    files.sort(key=lambda p: -p.stat().st_size)             # big notebooks first: better packing on few workers
    with ProcessPoolExecutor(a.n_workers, mp_context=mp.get_context('spawn'), max_tasks_per_child=1) as ex:
        threads = max(1, (os.cpu_count() or 1) // a.n_workers)
        res = list(ex.map(_worker, [(f, flags, threads) for f in files]))   # a fresh process per notebook
    failed = [str(f.relative_to(ROOT)) for f, ok, _ in res if not ok]
    for f, ok, sec in sorted(res, key=lambda r: -r[2]): print(f'{f.relative_to(ROOT)}: {sec:.0f} secs')
    if failed: sys.exit(f"notebooks failed: {', '.join(failed)}")
    print(f'all {len(res)} notebooks ran; executed copies in {OUT.relative_to(ROOT)}/')
