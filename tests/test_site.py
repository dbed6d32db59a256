"""The documentation site and the HTML report, opened in a real headless Chromium (Debian's, driven by Playwright).

`make test` runs the notebooks (tools/run_notebooks.py) and builds the site (tools/build_docs.py) before pytest; this
test builds it itself only when it is missing. Screenshots of the index, a theory page and an experiment page are
saved in test-artifacts/. Each page is checked for what a reader needs: no horizontal overflow at 1280 px, every image
loaded with alt text, no raw maths, every local link and anchor resolving, a reference entry (and parameters table) for
every public name of the page's module, and on experiment pages the findings and a figure on the first screen.
"""
import functools, http.server, json, os, re, shutil, subprocess, sys, threading, urllib.parse, urllib.request
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
from pages import hosted_base, module_pages              # tools/pages.py: the page each module's notebook becomes

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

OVERFLOW = """() => {
  const bad = [];
  const doc = document.documentElement;
  if (doc.scrollWidth > window.innerWidth) bad.push(`the page is ${doc.scrollWidth} px wide`);
  const scrolls = el => { for (let p = el; p && p !== document.body; p = p.parentElement) {
    const o = getComputedStyle(p).overflowX; if (o === 'auto' || o === 'scroll') return true; } return false; };
  for (const el of document.querySelectorAll('pre, table, .katex-display'))
    if (el.scrollWidth > el.clientWidth + 1 && !scrolls(el)) bad.push(`${el.tagName}: ${el.innerText.slice(0, 60)}`);
  return bad;
}"""

RAW_TEX = """() => {
  const w = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {acceptNode: n =>
    n.parentElement.closest('pre, code, script, style, .katex, .sourceCode') ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
  const bad = []; let n;
  while ((n = w.nextNode())) if (/\\$[^$\\s]|\\\\[a-zA-Z]{2,}/.test(n.textContent)) bad.push(n.textContent.trim().slice(0, 80));
  return bad;
}"""

# The position of the first figure, the findings box and the first long code block a reader sees (px from the top).
LAYOUT = """() => {
  const top = el => el ? el.getBoundingClientRect().top + window.scrollY : null;
  const visible = el => el.offsetParent !== null && !el.closest('details:not([open])');
  const fig = [...document.querySelectorAll('main img, #quarto-document-content img')].find(e => e.naturalWidth > 100);
  const code = [...document.querySelectorAll('pre.cell-code, div.cell > div.sourceCode pre, .code-copy-outer-scaffold pre')]
    .filter(e => visible(e) && !e.closest('.cell-output') && e.innerText.split('\\n').length > 15)[0];
  return {fig: top(fig), code: top(code), findings: top(document.querySelector('.findings'))};
}"""

# The reference entries: each show_doc (or constant) heading, its anchor, and whether a parameters table follows it.
ENTRIES = """() => [...document.querySelectorAll('h3[data-anchor-id], h4[data-anchor-id]')].map(h => {
  const box = h.closest('.cell-output-markdown');
  return [h.dataset.anchorId, h.innerText.trim(), !!(box && box.querySelector('table'))];
})"""

@functools.lru_cache(maxsize=None)
def _ids(path: Path) -> frozenset:
    "Every id (and name) a built page defines, the targets of `page.html#anchor`."
    text = path.read_text()
    return frozenset(urllib.parse.unquote(m) for m in re.findall(r'\b(?:id|name)="([^"]+)"', text))

def _check_links(site, rel, refs):
    "Every local link and resource resolves, and every `#anchor` exists on its page."
    bad = []
    for tag, ref in refs:
        if ref.startswith(('mailto:', 'data:', 'javascript:')): continue
        if re.match(r'[a-z]+://', ref):
            if tag != 'A': bad.append(f'{tag} loads an external resource {ref}')
            elif ref.startswith(HOSTED): bad.append(f'a link to the hosted site instead of the page here: {ref}')
            continue
        path, _, anchor = ref.partition('#')
        target = (site / rel).parent / urllib.parse.unquote(path) if path else site / rel
        if target.is_dir(): target = target / 'index.html'
        if not target.resolve().is_file(): bad.append(f'broken {tag.lower()} {ref}'); continue
        if anchor and target.suffix == '.html' and urllib.parse.unquote(anchor) not in _ids(target.resolve()):
            bad.append(f'no anchor #{anchor} on {target.relative_to(site)} ({ref})')
    return bad

HOSTED = hosted_base()

def _anchor(mod, nm):
    "Where a name's entry is anchored: a function's or class's at its lower-cased name (nbdev's links), a constant's at its name."
    return nm.lower() if callable(getattr(mod, nm)) else nm

def _shrunk(html, page):
    """(intended, shown) widths in CSS px of the figures the page draws smaller than they were made: a matplotlib PNG is
    made at 100 px per inch times its dpi's multiple (2 for the notebooks' retina output), and a figure wider than the
    text column is scaled down, its 9 pt legends with it."""
    import base64, io
    from PIL import Image
    pngs = [Image.open(io.BytesIO(base64.b64decode(b))) for b in re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)]
    shown = page.eval_on_selector_all('img[src^="data:image/png"]', 'els => els.map(e => e.getBoundingClientRect().width)')
    made = [p.width * 100 / p.info.get('dpi', (100,))[0] for p in pngs]
    return [(round(m), round(w)) for m, w in zip(made, shown) if w and m > 1.02 * w]

def _has_params(obj):
    import inspect
    try: ps = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError): return False
    return any(p.name != 'self' and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in ps)

@pytest.mark.parametrize('rel', PAGES)
def test_page(browser, server, site, rel):
    "What a reader of the page at 1280 px needs: it loads clean, fits, its maths is typeset, its links resolve."
    assert (site / rel).exists(), f"{rel} was not rendered"
    page, errors = _open(browser, f'{server}/{rel}')
    try:
        assert not errors, errors
        refs = page.eval_on_selector_all('a[href], img[src], link[href], script[src]',
                                         'els => els.map(e => [e.tagName, e.getAttribute("href") || e.getAttribute("src")])')
        bad = _check_links(site, rel, refs)
        assert not bad, f"{rel}: {bad[:5]}"
        html = (site / rel).read_text()
        if 'class="math' in html: assert page.locator('.katex').count() > 0, f"{rel}: maths not typeset"
        kerr = page.locator('.katex-error')
        assert kerr.count() == 0, f"{rel}: KaTeX could not parse {kerr.first.inner_text()!r}"
        raw = page.evaluate(RAW_TEX)
        assert not raw, f"{rel}: raw maths in the text: {raw[:3]}"
        residue = [t[:80] for t in page.eval_on_selector_all('.cell-output-stderr', 'els => els.map(e => e.innerText)')
                   if re.search(r'it/s\]|\d+%\||Warning', t)]
        assert not residue, f"{rel}: progress bars or warnings in the outputs: {residue[:3]}"
        flat = [t[:80] for t in page.eval_on_selector_all('p', 'els => els.map(e => e.innerText)') if re.match(r'\|.*\|.*\|', t)]
        assert not flat, f"{rel}: a Markdown table printed as a paragraph: {flat[:2]}"
        wide = page.evaluate(OVERFLOW)
        assert not wide, f"{rel}: wider than the page at 1280 px: {wide[:3]}"
        imgs = page.eval_on_selector_all('img', 'els => els.map(e => [e.complete && e.naturalWidth > 0, e.alt || ""])')
        assert all(ok for ok, _ in imgs), f"{rel}: {sum(not ok for ok, _ in imgs)} image(s) did not load"
        assert all(alt.strip() for _, alt in imgs), f"{rel}: {sum(not a.strip() for _, a in imgs)} image(s) without alt text"
        tight = _shrunk(html, page)
        assert not tight, f"{rel}: figures wider than the column, drawn smaller than their fonts were set: {tight[:3]}"
        mod = _module(rel)
        if mod is not None:                     # every public name has its reference entry: heading, anchor, parameters
            entries = {(a, t): tbl for a, t, tbl in page.evaluate(ENTRIES)}     # (anchor, heading) -> has a table
            missing = [nm for nm in mod.__all__ if (_anchor(mod, nm), nm) not in entries]
            assert not missing, f"{rel}: no reference entry anchored at its name for {missing}"
            untabled = [nm for nm in mod.__all__ if _has_params(getattr(mod, nm)) and not entries[_anchor(mod, nm), nm]]
            assert not untabled, f"{rel}: no parameters table for {untabled}"
            import inspect
            private = [n for n, o in vars(mod).items() if n.startswith('_') and (inspect.isfunction(o) or inspect.isclass(o))
                       and o.__module__ == mod.__name__]      # the module's own helpers: their source stays out of sight
            shown = page.eval_on_selector_all('pre', 'els => els.map(e => e.innerText)')
            leaked = [n for n in private if any(re.search(rf'^\s*(def|class) {n}\b', t, re.M) for t in shown)]
            assert not leaked, f"{rel}: private helpers' source is shown: {leaked}"
        if rel.startswith('experiments/') or _draws(rel):
            shown = page.eval_on_selector_all('img', 'els => els.filter(e => e.naturalWidth > 100).length')
            assert shown >= 1, f"{rel}: a page whose notebook draws a figure shows none"
        if rel.startswith('experiments/'):      # the finding and its figure on the first screen, before any long code
            lay = page.evaluate(LAYOUT)
            assert lay['findings'] is not None and lay['findings'] < 900, f"{rel}: no findings box on the first screen {lay}"
            assert lay['fig'] is not None and lay['fig'] < 900, f"{rel}: no figure on the first screen {lay}"
            assert lay['code'] is None or lay['fig'] < lay['code'], f"{rel}: a long code block comes before the figure {lay}"
        if rel in ('index.html', '07_analysis.html', 'theory/02_rwy_rule.html', 'experiments/05_stopping.html'):
            ART.mkdir(exist_ok=True); page.screenshot(path=str(ART / rel.replace('/', '_').replace('.html', '.png')), full_page=True)
    finally:
        page.close()

def test_api_index(site):
    "The API index links every public name of every module to its entry."
    import importlib, pkgutil, ntk_finetune
    page = site / 'api.html'
    assert page.exists(), "the API index page was not rendered"
    links = set(re.findall(r'href="([^"#]+\.html#[^"]+)"', page.read_text()))
    pages = {p.module: p.local for p in module_pages()}
    for m in pkgutil.iter_modules(ntk_finetune.__path__):
        if m.name.startswith('_'): continue
        mod = importlib.import_module(f'ntk_finetune.{m.name}')
        missing = [nm for nm in getattr(mod, '__all__', []) if f'{pages[m.name]}#{_anchor(mod, nm)}' not in links]
        assert not missing, f"api.html: no link to the entry of {m.name}.{missing}"

def _draws(rel):
    "True when a cell that runs on the page (not exported, not slow, gpu or eval: false) draws at its top level."
    cells = json.loads((ROOT / 'nbs' / rel.replace('.html', '.ipynb')).read_text())['cells']
    src = [''.join(c['source']) for c in cells if c['cell_type'] == 'code']
    runs = [s for s in src if not re.search(r'#\|\s*(export|exporti|slow|gpu|eval:\s*false)\b', s)]
    top = lambda s: '\n'.join(ln for ln in s.splitlines() if ln[:1] not in (' ', '\t', ')', ']'))   # not in a def body
    return any(re.search(r'\bplt\.|\bplot_\w+\(|\.plot\(', top(s)) for s in runs)

MODULES = {p.local: p.module for p in module_pages()}      # '07_analysis.html' -> 'analysis'

def _module(rel):
    "The exported module a notebook page documents (None for theory, experiments and the index)."
    import importlib
    name = MODULES.get(rel)
    return None if name in (None, '__init__') else importlib.import_module(f'ntk_finetune.{name}')

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
