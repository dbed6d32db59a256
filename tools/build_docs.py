"""Build the documentation website offline: nbdev's notebook processing, then smalldocs renders the HTML.

`nbdev_docs` (which needs Quarto) keeps working where Quarto is installed; this is the route that needs no network.
Run as a script (worker processes break under stdin): `make docs` -> _proc/_docs/*.html
"""
import shutil, subprocess, sys
from pathlib import Path
from nbdev.config import get_config
from nbdev.quarto import refresh_quarto_yml, nbdev_sidebar
from nbdev.serve import proc_nbs
import nbdev.doclinks

if __name__ == '__main__':
    cfg = get_config()
    refresh_quarto_yml(); nbdev.doclinks._build_modidx(); nbdev_sidebar.__wrapped__()
    cache = proc_nbs(cfg.nbs_path, n_workers=0)
    smalldocs = shutil.which('smalldocs') or str(Path(sys.executable).parent/'smalldocs')
    subprocess.run([smalldocs, 'render', str(cache)], check=True)
    out = Path(cache)/'_docs'
    pages = sorted(out.rglob('*.html'))
    print(f"docs: {len(pages)} pages in {out}")
