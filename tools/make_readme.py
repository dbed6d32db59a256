"""Generate README.md from nbs/index.ipynb without Quarto (nbdev_readme needs Quarto, which cannot be installed offline).

Markdown cells are copied, code cells become fenced python blocks; outputs are left out, and so are the cells the site
runs without showing (`#| echo: false`: the landing page's answer and figure). Links to the site's pages point at the
hosted site, under the names nbdev gives them there (without the notebook's number: `analysis.html`). `--check` fails
if README.md is out of date instead of writing it.
"""
import json, re, sys
from pathlib import Path
from pages import hosted_base, hosted_page

HEADER = "<!-- Generated from nbs/index.ipynb by tools/make_readme.py: do not edit by hand. -->\n\n"

def _hosted(md: str) -> str:
    "Links to the site's pages (relative `.html`) pointed at the hosted site, whose address settings.ini gives."
    base = hosted_base()
    def sub(m):
        page, _, anchor = m.group(1).partition('#')                      # 07_analysis.html -> analysis.html
        return f"]({base}{hosted_page(page)}{'#' + anchor if anchor else ''})"
    return re.sub(r'\]\((?![a-z]+:)([\w/.-]+\.html(?:#[\w.-]+)?)\)', sub, md)

def render(nb_path='nbs/index.ipynb') -> str:
    nb = json.loads(Path(nb_path).read_text())
    out = []
    for c in nb['cells']:
        src = ''.join(c['source']).strip()
        if not src or src.startswith('#| hide') or re.search(r'^#\|\s*echo:\s*false', src, re.M): continue
        if c['cell_type'] == 'markdown': out.append(_hosted(src))
        elif c['cell_type'] == 'code':
            lines = [l for l in src.splitlines() if not l.startswith('#|')]
            out.append('```python\n' + '\n'.join(lines) + '\n```')
    return HEADER + '\n\n'.join(out) + '\n'

if __name__ == '__main__':
    text, readme = render(), Path('README.md')
    if '--check' in sys.argv:
        if not readme.exists() or readme.read_text() != text:
            sys.exit("README.md is out of date with nbs/index.ipynb: run `python tools/make_readme.py` and commit it.")
        print("README.md is up to date")
    else:
        readme.write_text(text); print("wrote README.md")
