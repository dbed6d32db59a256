import subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def test_docs_site_has_one_page_per_notebook():
    """The offline docs route (nbdev processing + smalldocs) renders every notebook to HTML."""
    r = subprocess.run([sys.executable, 'tools/build_docs.py'], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    nbs = sorted(p.relative_to(ROOT / 'nbs').with_suffix('.html') for p in (ROOT / 'nbs').rglob('*.ipynb') if '.ipynb_checkpoints' not in str(p))
    out = ROOT / '_proc' / '_docs'
    missing = [str(p) for p in nbs if not (out / p).exists()]
    assert not missing, missing
    assert 'empirical_ntk' in (out / '03_entk.html').read_text()
