"""Build the documentation website offline, with every notebook's outputs and figures, and maths by a local KaTeX.

    python tools/build_docs.py            # uses the executed notebooks in _exec/ (tools/run_notebooks.py); -> _proc/_docs/

Steps: stage a copy of nbs/ in which each notebook is replaced by its executed copy from _exec/ (when there is one);
nbdev's notebook processing (`proc_nbs`) into _proc/; smalldocs renders the HTML into _proc/_docs/; then every page's
KaTeX links, which smalldocs points at a CDN, are pointed at site_libs/katex/, a copy of the KaTeX this package ships
(ntk_finetune/assets/katex, the dist files of the npm package), so the site needs no network. Every `show_doc` entry
gets its parameters table (nbdev draws one only when a parameter has a docment; here the types and defaults are shown
for every parameter, with the docment where there is one). The links nbdev writes to the hosted site's page names
(`https://<doc_host><doc_baseurl>/analysis.html#analyze`) are pointed at the pages built here (`07_analysis.html#analyze`),
as relative links, so they resolve offline and wherever the folder is served. `nbdev_docs` keeps working where Quarto
is installed. Run as a script (worker processes break under stdin).
"""
import os, re, shutil, subprocess, sys
from pathlib import Path
from pages import hosted_base, module_pages

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

def relink(text: str, page: Path, site: Path, host: str, names: dict, ids: dict) -> str:
    """Point links at the hosted site's page names to the built page, relative to `page`. A link to a method's anchor
    that has no entry of its own goes to its class's entry; one to a name with no entry (a private helper) is dropped,
    its text kept."""
    def sub(m):
        target, anchor, attrs, inner = names.get(m.group(1)), m.group(2), m.group(3), m.group(4)
        if target is None: return m.group(0)
        have = ids.get(target, frozenset())
        if anchor and anchor not in have: anchor = anchor.split('.')[0] if anchor.split('.')[0] in have else None
        if anchor is None and m.group(2): return inner
        rel = os.path.relpath(site / target, page.parent).replace(os.sep, '/')
        return f'<a href="{rel}' + (f'#{anchor}' if anchor else '') + f'"{attrs}>{inner}</a>'
    return re.sub(rf'<a href="{re.escape(host)}/([^"#]+\.html)(?:#([^"]*))?"([^>]*)>(.*?)</a>', sub, text, flags=re.S)

def localize(site: Path):
    "Point KaTeX at the local copy, drop web-font imports, give pages an inline icon; report anything external left."
    kdir = site / 'site_libs' / 'katex'
    if kdir.exists(): shutil.rmtree(kdir)
    shutil.copytree(ROOT / 'ntk_finetune' / 'assets' / 'katex', kdir)
    for css in site.rglob('*.css'):                          # themes import web fonts: use the system fonts instead
        text = css.read_text()
        if 'fonts.googleapis.com' in text: css.write_text(re.sub(r'@import url\([^)]*fonts\.googleapis\.com[^)]*\);?', '', text))
    external = set()
    ids = {p.relative_to(site).as_posix(): frozenset(re.findall(r'\bid="([^"]+)"', p.read_text())) for p in site.rglob('*.html')}
    for page in site.rglob('*.html'):
        rel = os.path.relpath(kdir, page.parent)
        text = relink(CDN.sub(rel, page.read_text()), page, site, HOST, NAMES, ids)
        if 'rel="icon"' not in text: text = text.replace('<head>', '<head><link rel="icon" href="data:,">', 1)
        external |= set(re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?://[^"]+)"', text))
        page.write_text(text)
    if external: print(f"docs: external resources left in pages: {sorted(external)}")

def constant_entries(max_lines=12):
    "Give each public constant of an exported cell a reference entry (heading, anchor, its assignment) beside show_doc's."
    import ast
    from nbdev import processors as P
    from nbdev.process import mk_cell
    def entry(cell, node):
        src = ast.get_source_segment(cell.source, node).splitlines()
        code = '\n'.join(src[:max_lines] + (['...'] if len(src) > max_lines else []))
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        flat = lambda t: [x for e in t.elts for x in flat(e)] if isinstance(t, (ast.Tuple, ast.List)) else \
            flat(t.value) if isinstance(t, ast.Starred) else [t]
        names = [n.id for t in targets for n in flat(t) if isinstance(n, ast.Name)]
        return [mk_cell(f'---\n\n### {nm} {{#{nm}}}\n\n```python\n{code}\n```', cell_type='markdown') for nm in names
                if not nm.startswith('_')]
    def begin(self):                              # nbdev's add_show_docs.begin, with the constants' entries added
        nb = self.nb
        exports = P.L(cell for cell in nb.cells if P._want_doc(cell))
        shown = {P._get_nm(t) for t in P._show_docs(P.L(nb.cells).map(P.NbCell.parsed_).concat())}
        for cell in reversed(exports):
            new = []
            for node in cell.parsed_() or []:
                if isinstance(node, (ast.Assign, ast.AnnAssign)): new += entry(cell, node)
                elif isinstance(node, P._def_types) and node.name not in shown and not node.name.startswith('_'):
                    sd = mk_cell(f'show_doc({P.showdoc_nm(node)})'); sd.has_sd = True; new.append(sd)
            nb.cells[cell.idx_ + 1:cell.idx_ + 1] = new
        nb.has_docs_ = shown or exports
    P.add_show_docs.begin = begin

def exported_only():
    "show_doc needs the exported cells, the import cells and the show_doc cells: not the examples that mix imports in."
    import ast
    from nbdev import processors as P
    base = P._do_eval
    def do_eval(cell):
        trees = cell.parsed_() if cell.cell_type == 'code' and cell.source else None
        mixed = trees and not (cell.directives_.keys() & {'export', 'exports', 'exporti', 'exec_doc'}) and any(
            not isinstance(t, (ast.Import, ast.ImportFrom)) for t in trees) and not P._show_docs(trees)
        return None if mixed else base(cell)
    P._do_eval = do_eval

def docment_tables():
    """Give every show_doc entry a parameters table (name, type, default, and the docment where there is one): this
    fastcore draws docments only as comments in the signature, and its table only when a parameter has one."""
    import inspect
    from fastcore.docments import DocmentTbl
    from nbdev.showdoc import BasicMarkdownRenderer
    cols = DocmentTbl._columns.fget
    DocmentTbl._columns = property(lambda self: {'anno': 'Type', 'default': 'Default', **cols(self)})
    DocmentTbl.has_docment = property(lambda self: bool(self._row_list))
    def cell(c, v):                    # a type as written (dict[str, Tensor], not dict), a default as its repr
        if v is inspect.Parameter.empty: return ''
        text = v.__name__ if isinstance(v, type) else repr(v) if c == 'default' else str(v)
        return text.replace('|', '\\|')
    DocmentTbl._row = lambda self, nm, props: [nm] + [cell(c, props[c]) for c in self._columns]
    DocmentTbl.return_str = property(lambda self: '| **Returns** | ' + ' | '.join(
        '' if (v := self.dm['return'].get(c, inspect.Parameter.empty)) in (inspect.Parameter.empty, None)
        else '**' + cell(c, v) + '**' for c in self._columns) + ' |')
    base = BasicMarkdownRenderer._repr_markdown_
    def markdown(self):
        table = DocmentTbl(self.sym)._repr_markdown_() if callable(self.sym) else ''
        return (base(self) + (f'\n\n{table}' if table else '')).replace(f'{ROOT}/', '')   # no build-machine paths
    BasicMarkdownRenderer._repr_markdown_ = markdown

if __name__ == '__main__':
    from nbdev.quarto import refresh_quarto_yml, nbdev_sidebar
    from nbdev.serve import proc_nbs
    import nbdev.doclinks
    HOST = hosted_base().rstrip('/')
    NAMES = {p.hosted: p.local for p in module_pages()}     # the page name nbdev links to -> the page built here
    docment_tables(); constant_entries(); exported_only()
    refresh_quarto_yml(); nbdev.doclinks._build_modidx(); nbdev_sidebar.__wrapped__()
    src = stage()
    cache = proc_nbs(str(src), n_workers=0, force=True)
    smalldocs = shutil.which('smalldocs') or str(Path(sys.executable).parent / 'smalldocs')
    subprocess.run([smalldocs, 'render', str(cache)], check=True)
    out = Path(cache) / '_docs'
    localize(out)
    pages = sorted(out.rglob('*.html'))
    print(f"docs: {len(pages)} pages in {out}")
