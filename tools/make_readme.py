"""Generate README.md from nbs/index.ipynb without Quarto (nbdev_readme needs Quarto, which cannot be installed offline).

Markdown cells are copied, code cells become fenced python blocks; outputs are left out. `--check` fails if README.md
is out of date instead of writing it.
"""
import json, sys
from pathlib import Path

HEADER = "<!-- Generated from nbs/index.ipynb by tools/make_readme.py: do not edit by hand. -->\n\n"

def render(nb_path='nbs/index.ipynb') -> str:
    nb = json.loads(Path(nb_path).read_text())
    out = []
    for c in nb['cells']:
        src = ''.join(c['source']).strip()
        if not src or src.startswith('#| hide'): continue
        if c['cell_type'] == 'markdown': out.append(src)
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
