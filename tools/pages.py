"""Which page each module's notebook becomes: the one helper for the docs build, the README, the browser test and the
API index.

A notebook is built here under its own name (`07_analysis.html`, relative to nbs/); on the hosted site nbdev names its
page without the number (`https://<doc_host><doc_baseurl>/analysis.html`, `experiments/stopping.html`), which for a
module's notebook is the module's name, and nbdev's links use those names.
"""
import configparser, re
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]

class Page(NamedTuple):
    module: str   # the module the notebook exports: 'analysis' ('__init__' for the package's own notebook)
    local: str    # the page built here, relative to the site's root: '07_analysis.html'
    hosted: str   # the page nbdev links to, relative to the hosted site's address: 'analysis.html'

def hosted_page(local: str) -> str:
    "The hosted site's name for the page built here as `local`: nbdev's, the notebook's name without its number."
    p = Path(local)
    return p.with_name(re.sub(r'^\d+[a-zA-Z0-9]*_', '', p.name.lower())).as_posix()

def module_pages(nbs: Path = ROOT / 'nbs') -> list[Page]:
    "A `Page` for every notebook under `nbs` that has a `#| default_exp`, in the order of their paths."
    out = []
    for nb in sorted(nbs.rglob('*.ipynb')):
        if '.ipynb_checkpoints' in nb.parts: continue
        m = re.search(r'#\|\s*default_exp\s+([\w.]+)', nb.read_text())
        local = nb.relative_to(nbs).with_suffix('.html').as_posix()
        if m: out.append(Page(m.group(1), local, hosted_page(local)))
    return out

def hosted_base(root: Path = ROOT) -> str:
    "The hosted site's address, from settings.ini, ending in '/': `https://<doc_host><doc_baseurl>/`."
    cfg = configparser.ConfigParser(); cfg.read(root / 'settings.ini'); d = cfg['DEFAULT']
    return d['doc_host'].rstrip('/') + '/' + d['doc_baseurl'].strip('/') + '/'
