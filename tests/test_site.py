"""The documentation site and the HTML report, opened in a real headless Chromium (Debian's, driven by Playwright).

`make test` runs the notebooks (tools/run_notebooks.py) and builds the site (tools/build_docs.py) before pytest; this
test builds it itself only when it is missing. Screenshots of the index, a theory page and an experiment page are
saved in test-artifacts/.
"""
import functools, http.server, json, os, re, shutil, subprocess, sys, threading, urllib.parse, urllib.request
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / '_proc' / '_docs'
ART = ROOT / 'test-artifacts'

def _chromium():
    for c in ('chromium', 'chromium-browser'):
        if shutil.which(c): return shutil.which(c)
    return None

@pytest.fixture(scope='module')
def site():
    if not (SITE / 'index.html').exists():
        for script in ('tools/run_notebooks.py', 'tools/build_docs.py'):
            r = subprocess.run([sys.executable, script], cwd=ROOT, capture_output=True, text=True)
            assert r.returncode == 0, r.stderr[-3000:]
    return SITE

@pytest.fixture(scope='module')
def server(site):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    srv.handle_error = lambda *a: None                                     # a browser closing a connection early
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{srv.server_address[1]}'
    srv.shutdown()

@pytest.fixture(scope='module')
def browser():
    exe = _chromium()
    if exe is None: pytest.fail("Chromium is not installed: `make test` installs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True,
                              args=['--no-sandbox', '--disable-gpu', '--disable-background-networking',
                                    '--disable-component-update', '--no-first-run', '--disable-sync', '--disable-quic'])
        yield b
        b.close()

PAGES = sorted(p.relative_to(ROOT / 'nbs').with_suffix('.html').as_posix() for p in (ROOT / 'nbs').rglob('*.ipynb')
               if '.ipynb_checkpoints' not in str(p))

def _status(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r: return r.status
    except Exception as e: return getattr(e, 'code', str(e))

RAW_DOLLAR = """() => {
  const w = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {acceptNode: n =>
    n.parentElement.closest('pre, code, script, style, .katex, .sourceCode') ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
  const bad = []; let n;
  while ((n = w.nextNode())) if (/\\$[^$\\s]/.test(n.textContent)) bad.push(n.textContent.trim().slice(0, 80));
  return bad;
}"""

def _open(browser, url):
    page = browser.new_page(viewport={'width': 1280, 'height': 900})
    errors = []
    page.on('console', lambda m: errors.append(m.text) if m.type == 'error' else None)
    page.on('pageerror', lambda e: errors.append(str(e)))
    page.goto(url, wait_until='load'); page.wait_for_timeout(300)
    return page, errors

@pytest.mark.parametrize('rel', PAGES)
def test_page(browser, server, site, rel):
    assert (site / rel).exists(), f"{rel} was not rendered"
    page, errors = _open(browser, f'{server}/{rel}')
    try:
        assert not errors, errors
        refs = page.eval_on_selector_all('a[href], img[src], link[href], script[src]',
                                         'els => els.map(e => [e.tagName, e.getAttribute("href") || e.getAttribute("src")])')
        for tag, ref in refs:
            if ref.startswith(('#', 'mailto:', 'data:', 'javascript:')): continue
            url = urllib.parse.urljoin(f'{server}/{rel}', ref).split('#')[0]
            if not url.startswith(server):
                assert tag == 'A', f"{rel}: {tag} loads an external resource {ref}"
                continue
            assert _status(url) == 200, f"{rel}: broken {tag.lower()} {ref}"
        html = (site / rel).read_text()
        if 'class="math' in html: assert page.locator('.katex').count() > 0, f"{rel}: maths not typeset"
        kerr = page.locator('.katex-error')
        assert kerr.count() == 0, f"{rel}: KaTeX could not parse {kerr.first.inner_text()!r}"
        assert not page.evaluate(RAW_DOLLAR), f"{rel}: raw $ in the text: {page.evaluate(RAW_DOLLAR)[:3]}"
        mod = _module(rel)
        if mod is not None:                     # every exported name's definition (its signature) is on its page
            text = page.inner_text('body')
            sig = lambda nm: (rf'(def|class)\s+{re.escape(nm)}\s*[(:]' if callable(getattr(mod, nm))
                              else rf'\b{re.escape(nm)}\s*[:=]')
            missing = [nm for nm in mod.__all__ if not re.search(sig(nm), text)]
            assert not missing, f"{rel}: no signature shown for {missing}"
        broken = page.eval_on_selector_all('img', 'els => els.filter(e => !(e.complete && e.naturalWidth > 0)).length')
        assert broken == 0, f"{rel}: {broken} image(s) did not load"
        if rel.startswith('experiments/') or _draws(rel):
            shown = page.eval_on_selector_all('img', 'els => els.filter(e => e.naturalWidth > 100).length')
            assert shown >= 1, f"{rel}: a page whose notebook draws a figure shows none"
        if rel in ('index.html', 'theory/02_rwy_rule.html', 'experiments/02_task_spectra.html'):
            ART.mkdir(exist_ok=True); page.screenshot(path=str(ART / rel.replace('/', '_').replace('.html', '.png')), full_page=True)
    finally:
        page.close()

def _draws(rel):
    "True when a cell that runs on the page (not exported, not slow, gpu or eval: false) draws at its top level."
    cells = json.loads((ROOT / 'nbs' / rel.replace('.html', '.ipynb')).read_text())['cells']
    src = [''.join(c['source']) for c in cells if c['cell_type'] == 'code']
    runs = [s for s in src if not re.search(r'#\|\s*(export|exporti|slow|gpu|eval:\s*false)\b', s)]
    top = lambda s: '\n'.join(ln for ln in s.splitlines() if ln[:1] not in (' ', '\t', ')', ']'))   # not in a def body
    return any(re.search(r'\bplt\.|\bplot_\w+\(|\.plot\(', top(s)) for s in runs)

def _module(rel):
    "The exported module a notebook page documents (None for theory, experiments and the index)."
    import importlib
    nb = ROOT / 'nbs' / rel.replace('.html', '.ipynb')
    m = re.search(r'#\|\s*default_exp\s+([\w.]+)', nb.read_text())
    if m is None or m.group(1) == '__init__': return None
    return importlib.import_module(f'ntk_finetune.{m.group(1)}')

def test_report_in_the_browser(browser, tmp_path):
    """report.html of a real analysis opens offline: no errors, maths typeset, its three figures shown."""
    import torch
    from ntk_finetune.analysis import analyze
    from ntk_finetune.models import tiny_model
    from ntk_finetune.report import write_report
    g = torch.Generator().manual_seed(0); tb = {'input_ids': torch.randint(1, 128, (16, 6), generator=g)}
    a = analyze((tiny_model('gpt2', kind='classification', dtype=torch.float64), None), tb, labels=torch.arange(16) % 2, progress=False)
    path = write_report(a, tmp_path / 'r')
    page, errors = _open(browser, path.as_uri())
    try:
        assert not errors, errors
        assert page.locator('.katex').count() > 5 and not page.evaluate(RAW_DOLLAR)
        assert page.eval_on_selector_all('img', 'els => els.filter(e => e.naturalWidth > 100).length') == 3
        ART.mkdir(exist_ok=True); page.screenshot(path=str(ART / 'report.png'), full_page=True)
    finally:
        page.close()
