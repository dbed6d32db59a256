"""Build the documentation website offline, with every notebook's outputs and figures, and maths by a local KaTeX.

    python tools/build_docs.py            # uses the executed notebooks in _exec/ (tools/run_notebooks.py); -> _proc/_docs/

Steps: stage a copy of nbs/ in which each notebook is replaced by its executed copy from _exec/ (when there is one);
nbdev's notebook processing (`proc_nbs`) into _proc/; smalldocs renders the HTML into _proc/_docs/; then every page's
KaTeX links, which smalldocs points at a CDN, are pointed at site_libs/katex/, a copy of the KaTeX this package ships
(ntk_finetune/assets/katex, the dist files of the npm package), so the site needs no network. `nbdev_docs` keeps
working where Quarto is installed. Run as a script (worker processes break under stdin).
"""
import os, re, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / '_proc_src'
CDN = re.compile(r'https://cdn\.jsdelivr\.net/npm/katex@[0-9.]+/dist')

def stage(exec_dir=ROOT / '_exec') -> Path:
    "A copy of nbs/ with executed notebooks swapped in."
    if STAGE.exists(): shutil.rmtree(STAGE)
    shutil.copytree(ROOT / 'nbs', STAGE, symlinks=False, ignore=shutil.ignore_patterns('.ipynb_checkpoints'))
    n = 0
    for f in exec_dir.rglob('*.ipynb') if exec_dir.exists() else []:
        dest = STAGE / f.relative_to(exec_dir)
        if dest.exists(): shutil.copy2(f, dest); n += 1
    print(f"docs: {n} executed notebooks staged from {exec_dir.relative_to(ROOT)}/")
    return STAGE

def localize(site: Path):
    "Point KaTeX at the local copy, drop web-font imports, give pages an inline icon; report anything external left."
    kdir = site / 'site_libs' / 'katex'
    if kdir.exists(): shutil.rmtree(kdir)
    shutil.copytree(ROOT / 'ntk_finetune' / 'assets' / 'katex', kdir)
    for css in site.rglob('*.css'):                          # themes import web fonts: use the system fonts instead
        text = css.read_text()
        if 'fonts.googleapis.com' in text: css.write_text(re.sub(r'@import url\([^)]*fonts\.googleapis\.com[^)]*\);?', '', text))
    external = set()
    for page in site.rglob('*.html'):
        rel = os.path.relpath(kdir, page.parent)
        text = CDN.sub(rel, page.read_text())
        if 'rel="icon"' not in text: text = text.replace('<head>', '<head><link rel="icon" href="data:,">', 1)
        external |= set(re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?://[^"]+)"', text))
        page.write_text(text)
    if external: print(f"docs: external resources left in pages: {sorted(external)}")

if __name__ == '__main__':
    from nbdev.config import get_config
    from nbdev.quarto import refresh_quarto_yml, nbdev_sidebar
    from nbdev.serve import proc_nbs
    import nbdev.doclinks
    cfg = get_config()
    refresh_quarto_yml(); nbdev.doclinks._build_modidx(); nbdev_sidebar.__wrapped__()
    src = stage()
    cache = proc_nbs(str(src), n_workers=0, force=True)
    smalldocs = shutil.which('smalldocs') or str(Path(sys.executable).parent / 'smalldocs')
    subprocess.run([smalldocs, 'render', str(cache)], check=True)
    out = Path(cache) / '_docs'
    localize(out)
    pages = sorted(out.rglob('*.html'))
    print(f"docs: {len(pages)} pages in {out}")
