"""Wall time and peak memory of the main job at its defaults: `ntk-finetune analyze` (what `make demo` runs).

    python bench/demo.py              # runs `ntk-finetune analyze --out <tmp>` once; writes bench/results/demo.json
                                      # and its section of BENCHMARKS.md

The command runs in a child process from a cold start (imports, model load, kernel, spectrum, report); the time is
its wall-clock time, the memory the child's peak RSS (ru_maxrss). The stages come from the run's own metrics.json.
"""
import json, os, resource, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / 'bench' / 'results' / 'demo.json'
TITLE = 'The main job at its defaults: `ntk-finetune analyze`'
TARGET_MIN = 10  # the default run's budget on 2 CPU cores

def markdown(r):
    ok = r['seconds'] <= 60 * TARGET_MIN
    return '\n'.join([
        f"Command: `{r['command']}` (from the repository root, in the project venv).  ",
        f"Machine: {r['machine']}.  ", f"Date: {r['date']}.", '',
        '| quantity | measured | wanted | met |', '|---|---|---|---|',
        f"| wall time, cold start to report | {r['seconds'] / 60:.1f} min | ≤ {TARGET_MIN} min | {'yes' if ok else 'no'} |",
        f"| peak RSS | {r['peak_rss_gb']:.2f} GB | | |", '',
        f"Settings: {r['settings']}."])

def write_section(r):
    out = ROOT / 'BENCHMARKS.md'; old = out.read_text() if out.exists() else '# Benchmarks\n'
    head, *secs = old.split('\n## ')
    secs = [s for s in secs if not s.startswith(TITLE)] + [f"{TITLE}\n\n{markdown(r)}\n"]
    text = head.rstrip('\n') + '\n\n' + '\n'.join('## ' + s.rstrip('\n') + '\n' for s in secs)
    from ntk_finetune.core import atomic_path
    with atomic_path(out) as t: t.write_text(text)

if __name__ == '__main__':
    sys.path.insert(0, str(ROOT / 'bench'))
    from entk import machine
    if '--rewrite' in sys.argv:
        write_section(json.loads(RESULTS.read_text())); sys.exit(0)
    out = Path(tempfile.mkdtemp()) / 'report'
    exe = Path(sys.executable).parent / 'ntk-finetune'
    env = {**os.environ, 'HF_HUB_OFFLINE': '1'}
    t0 = time.perf_counter()
    p = subprocess.run([str(exe), 'analyze', '--out', str(out)], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"ntk-finetune analyze failed: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}")
    m = json.loads((out / 'metrics.json').read_text())
    s = m['settings']
    r = {'command': 'python bench/demo.py', 'machine': machine(), 'date': time.strftime('%Y-%m-%d'), 'seconds': seconds,
         'peak_rss_gb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20,
         'settings': ', '.join(f"{k} {s[k]}" for k in ('model', 'data', 'params', 'n', 'n_test', 'max_length') if k in s)}
    RESULTS.parent.mkdir(exist_ok=True)
    from ntk_finetune.core import save_json
    save_json(r, RESULTS)
    write_section(r)
    print(markdown(r))
