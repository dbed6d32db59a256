"""The package's answer on its embedded default, committed for the landing page: `ntk-finetune analyze` at its defaults.

    python tools/default_result.py        # runs `ntk-finetune analyze --out <tmp>`; keeps results/default/{analysis/, metrics.json}

The landing page (nbs/index.ipynb) loads this `Analysis` and draws its figure and numbers from it; nothing is typed.
The run takes about two minutes on 2 CPU cores (what `make demo` runs).
"""
import shutil, subprocess, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / 'results' / 'default'

if __name__ == '__main__':
    from ntk_finetune.core import atomic_dir
    exe = Path(sys.executable).parent / 'ntk-finetune'
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([str(exe), 'analyze', '--out', f'{tmp}/r'], check=True, cwd=ROOT)
        with atomic_dir(OUT) as d:
            shutil.copytree(f'{tmp}/r/analysis', Path(d) / 'analysis')
            shutil.copy2(f'{tmp}/r/metrics.json', Path(d) / 'metrics.json')
    print(f'wrote {OUT.relative_to(ROOT)}/')
