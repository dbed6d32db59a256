"""The notebooks as pages: every code cell a reader sees fits the page width (120 columns), and every notebook opens
with a title and a one-line summary (the exported module's docstring)."""
import json, re
from pathlib import Path
import pytest

NBS = sorted(p for p in (Path(__file__).resolve().parents[1] / 'nbs').rglob('*.ipynb') if '.ipynb_checkpoints' not in str(p))

@pytest.mark.parametrize('nb', NBS, ids=lambda p: p.stem)
def test_visible_code_fits_the_page(nb):
    cells = json.loads(nb.read_text())['cells']
    long = [(i, len(ln)) for i, c in enumerate(cells) if c['cell_type'] == 'code'
            for src in [''.join(c['source'])] if not re.search(r'#\|\s*echo:\s*false', src)
            for ln in src.splitlines() if len(ln) > 120 and not ln.startswith('#|')]   # options are not shown
    assert not long, f"{nb.name}: code lines over 120 columns in (cell, length) {long[:5]}"

@pytest.mark.parametrize('nb', NBS, ids=lambda p: p.stem)
def test_title_and_one_line_summary(nb):
    first = ''.join(json.loads(nb.read_text())['cells'][0]['source']).splitlines()
    assert first[0].startswith('# '), f"{nb.name}: the first cell is not a title"
    summary = [ln for ln in first[1:] if ln.startswith('>')]
    assert len(summary) == 1, f"{nb.name}: the summary must be one '>' line, got {len(summary)}"

# plain-text maths outside $…$: a symbol with a _ or ^ index (λ_k, n^{-2β}, θ_0) or ≍ — the site renders only $…$
PLAIN_MATH = re.compile(r"(?<![\w\\])(?:[^\W\d_][\u0300-\u036f]*|\))(?:_\{|_[A-Za-z0-9]|\^\{|\^[−\-]?\w)"
                        r"|[\w‖)]\^[{−\-\w]|≍")

def _prose(md):
    "Markdown without code blocks, maths, code spans and links: what is left is read as prose."
    for pat in (r'```.*?```', r'\$\$.*?\$\$', r'(?<!\\)\$.*?(?<!\\)\$', r'`[^`]*`', r'\[[^\]]*\]\([^)]*\)'):
        md = re.sub(pat, ' ', md, flags=re.S)
    return md

def test_plain_math_detector():
    for plain in ('the rate n^{-2β/(2β+1)}', 'λ_k falls', 'T̂_op stops', 'ε_t', 'of 2^k', '‖y‖^2', 'λ_k ≍ k'):
        assert PLAIN_MATH.search(_prose(plain)), plain
    assert not PLAIN_MATH.search(_prose('the rate $n^{-2\\beta/(2\\beta+1)}$, `eig_vals`, [a_b](x_y.html), snake_case'))

@pytest.mark.parametrize('nb', NBS, ids=lambda p: p.stem)
def test_maths_is_written_for_katex(nb):
    cells = json.loads(nb.read_text())['cells']
    bad = [(i, m.group(0)) for i, c in enumerate(cells) if c['cell_type'] == 'markdown'
           for m in PLAIN_MATH.finditer(_prose(''.join(c['source'])))]
    assert not bad, f"{nb.name}: maths outside $…$ in (cell, text) {bad[:5]}"


def _package_imports():
    "{module: {module it imports (at the top or inside a function)}} within the package."
    import ast
    pkg = Path(__file__).parents[1] / 'ntk_finetune'
    mods = {p.stem: p for p in pkg.glob('*.py') if p.stem not in ('__init__', '_modidx')}
    graph = {}
    for m, p in mods.items():
        deps = set()
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.ImportFrom) and (n.level == 1 or (n.module or '').startswith('ntk_finetune.')):
                name = (n.module or '').split('.')[0] if n.level == 1 else n.module.split('.')[1]
                if name in mods and name != m:
                    deps.add(name)
        graph[m] = deps
    return graph


def test_no_import_cycle():
    "Nothing in the package imports upward: the module graph, lazy imports included, has no cycle."
    graph, state, path = _package_imports(), {}, []

    def visit(m):
        state[m] = 'open'
        path.append(m)
        for d in sorted(graph[m]):
            assert state.get(d) != 'open', f"import cycle: {' -> '.join(path[path.index(d):] + [d])}"
            if d not in state:
                visit(d)
        path.pop()
        state[m] = 'done'

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert {'store', 'entk', 'analysis'} <= set(graph)  # the graph is the package's, not an empty one
