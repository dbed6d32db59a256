"""Give the committed study results their specs, once: each row of `results/linearization.json`,
`results/task_vectors.json`, `results/lora_kernels.json`, `results/learning_curves.json` and
`results/task_spectra.json` and the five row families of `results/stopping.json` get the `key` and `spec` that `store.Table` reuses it by, built from the settings
recorded beside it (the learning curves' flat lists become one row per task; the stopping study's derived long
table, which no reader uses, is dropped). Nothing is rerun and no measured value
changes; a row that already has its spec is left as it is, so running this twice changes nothing.

    python tools/migrate_results.py [results-folder]
"""
import sys
import numpy as np
import torch
from pathlib import Path
from ntk_finetune.core import load_json, save_json
from ntk_finetune.evidence import curve_views
from ntk_finetune.experiments import (LinearizationRun, TaskVectorRun, LoraKernels, LoraFinetuneRun, CurveTaskRun,
                                      CurveFinetuneRun, SpectrumRun)
from ntk_finetune.stopping_study import StoppingRun, SgdStoppingRun, AdamwCpRun, HalfStepRun, SGD_PLAN
from ntk_finetune.compare import run_length
from ntk_finetune.presets import MINILM_PARAMS
from ntk_finetune.experiments import kernel_path
from ntk_finetune.kernel_cache import save_kernel, load_kernel
from ntk_finetune.spectrum import eigendecomposition


def _keyed(row: dict, spec) -> dict:
    "The row with its spec's key and spec first; a row keyed already must carry exactly this spec."
    if isinstance(row.get('spec'), dict):
        if row['key'] != spec.key():
            raise SystemExit(f"a row's recorded spec is not the one its settings give: {row['spec']} vs {spec}")
        return row
    return {'key': spec.key(), 'spec': spec.to_dict(), **{k: v for k, v in row.items() if k != 'key'}}


def _same(row: dict, cfg: dict, *names):
    "The row was run with the file's settings (a row that says otherwise would get a wrong spec)."
    for k in names:
        if k in row and row[k] != cfg[k]:
            raise SystemExit(f"row {row.get('model')} has {k} = {row[k]}, the file's config {cfg[k]}")


def linearization(doc: dict) -> dict:
    c = doc['config']
    runs = []
    for r in doc['runs']:
        _same(r, c, 'n_test')
        spec = LinearizationRun(r['model'], r['n_train'], r['steps'], r['lr_scale'], c['n_val'], c['n_test'],
                                c['max_length'], task=c['task'], params=r['params'])
        runs.append(_keyed(r, spec))
    return {**doc, 'runs': runs}


def task_vectors(doc: dict) -> dict:
    c = doc['config']
    runs = []
    for r in doc['runs']:
        _same(r, c, 'n', 'n_test', 'steps', 'alphas', 'tasks', 'params')
        spec = TaskVectorRun(c['model'], c['tasks'], c['n'], c['n_test'], c['max_length'], c['steps'], r['seed'],
                             c['families'], c['alphas'], params=c['params'])
        runs.append(_keyed(r, spec))
    return {**doc, 'runs': runs}


def lora(doc: dict) -> dict:
    c = doc['config']
    sample = {k: c[k] for k in ('seed', 'n_train', 'n_val', 'n_test', 'max_length')}
    kspec = lambda m, t: LoraKernels(m, t, ranks=tuple(c['ranks']), **sample)
    kernels = [_keyed(s, kspec(s['model'], s['task'])) for s in doc['kernels']]
    finetune = []
    for r in doc['finetune']:
        if isinstance(r.get('spec'), dict):
            finetune.append(r)
            continue
        name, task, rank, steps, max_steps, eval_every, *scale = r['key']  # the plan the notebook keyed runs by
        spec = LoraFinetuneRun(kspec(name, task), rank, scale[0] if scale else 1.0, steps, max_steps, eval_every,
                               c['past_rules'])
        finetune.append(_keyed(r, spec))
    return {**doc, 'kernels': kernels, 'finetune': finetune}


def learning_curves(doc: dict) -> dict:
    "The flat lists (rows, predicted, beta, pools, and the derived long table) become one keyed row per task."
    c = doc['config']
    plan = {k: c[k] for k in ('pool', 'n_test', 'ns', 'seeds', 'pilot', 'max_length', 'subset')}
    if 'tasks' in doc:  # migrated: each row must carry the spec its task and the file's settings give
        for t in doc['tasks']:
            _keyed(t, CurveTaskRun(c['model'], t['task'], random_init=t['task'] == c['tasks'][0], params=c['params'],
                                   **plan))
        return doc
    tasks = []
    for t in doc['beta']:  # in the order the study ran them
        rows = [r for r in doc['rows'] if r['task'] == t]
        random = any(r['init'] == 'random' for r in rows)
        if random != (t == c['tasks'][0]):
            raise SystemExit(f"{t}: a random-initialization arm where the study runs none, or none where it runs one")
        spec = CurveTaskRun(c['model'], t, random_init=random, params=c['params'], **plan)
        row = {'task': t, 'pool': doc['pools'][t], 'beta': doc['beta'][t], 'rows': rows,
               'predicted': [q for q in doc['predicted'] if q['task'] == t]}
        tasks.append(_keyed(row, spec))
    ft_plan = (c['ft_steps'], c['ft_eval_every'], c['ft_val'], c['ft_test'], c['max_length'])
    finetuned = [_keyed(r, CurveFinetuneRun(r['task'], r['n_train'], r['seed'], *ft_plan, model=r['model'],
                                            params=c['ft_params'])) for r in doc['finetuned']]
    new = {k: v for k, v in doc.items() if k not in ('rows', 'predicted', 'beta', 'pools', 'table', 'finetuned')}
    new = {**new, 'tasks': tasks, 'finetuned': finetuned}
    if curve_views(new) != curve_views(doc):  # the views the readers use are exactly the committed lists
        raise SystemExit("the keyed rows do not give back the committed learning curves")
    return new


def task_spectra(doc: dict) -> dict:
    c = doc['config']
    plan = {k: c[k] for k in ('pool', 'subset', 'n_subsets', 'n_boot', 'n_resample', 'max_length')}
    rows = []
    for r in doc['rows']:
        if 'alignment' not in r or r.get('resample', {}).get('n_fits') != c['n_resample']:
            raise SystemExit(f"{r['model']} {r['task']}: a row without every protocol and diagnostic")
        rows.append(_keyed(r, SpectrumRun(r['task'], r['model'], r['params'], r['init'], r['seed'], **plan)))
    return {**doc, 'rows': rows}


def _ran_planned(r: dict, steps, past_rules, max_steps, eval_every, rules=('rwy', 'cp', 'discrepancy')):
    "The row ran the length its plan gives (from its recorded rule steps), or diverged before it."
    n = run_length({q: r[f'{q}_step'] for q in rules}, steps, past_rules, max_steps, eval_every)
    if not (r['steps_run'] == n or (str(r.get('stopped')).startswith('diverged') and r['steps_run'] <= n)):
        raise SystemExit(f"{r['model']} {r['task']} {r['seed']}: ran {r['steps_run']} steps, its plan {n}")


def stopping(doc: dict) -> dict:
    "Each of the five row families keyed by the spec its recorded settings give; the long table dropped."
    c = doc['config']
    if c.get('minilm_params', MINILM_PARAMS) != MINILM_PARAMS:
        raise SystemExit("the stopping study ran MiniLM on other parameters than the package's MINILM_PARAMS")
    sample = lambda r, n=None: dict(model=r['model'], task=r['task'], seed=r['seed'], n_train=n or c['n_train'],
                                    n_val=c['n_val'], n_test=c['n_test'], max_length=c['max_length'],
                                    params=MINILM_PARAMS if r['model'] == 'minilm-l6' else 'attention')
    out = {k: v for k, v in doc.items() if k != 'table'}
    out['rows'] = []
    for r in doc['rows']:
        cap = r['max_steps'] if 'max_steps' in r else c['max_steps'][r['model']]  # early rows: the plan's, if they ran it
        spec = StoppingRun(**sample(r), steps=r['steps_min'], past_rules=r['past_rules'], max_steps=cap,
                           eval_every=c['eval_every'])
        _ran_planned(r, spec.steps, spec.past_rules, spec.max_steps, spec.eval_every)
        out['rows'].append(_keyed(r, spec))
    out['more'] = []
    for r in doc['more']:
        _same(r, c, 'n_val', 'n_test')
        plan = {k: r[k] for k in ('optimizer', 'loss', 'lr', 'batch_size', 'steps', 'max_steps', 'eval_every')}
        spec = StoppingRun(**sample(r, r['n_train']), **plan, past_rules=1.25 if r['optimizer'] == 'gd' else None)
        out['more'].append(_keyed(r, spec))
    out['sgd'] = []
    for r in doc['sgd']:
        spec = SgdStoppingRun(**sample(r), loss=r['loss'], **{k: r[f'sgd_{k}'] for k in SGD_PLAN})
        _ran_planned(r, spec.steps, spec.past_rules, spec.max_steps, spec.eval_every)
        out['sgd'].append(_keyed(r, spec))
    out['adamw'] = []
    for r in doc['adamw']:
        if r['rule'] != 'cp (converted)':
            raise SystemExit(f"an AdamW row of another rule: {r['rule']}")
        spec = AdamwCpRun(**sample(r), lr=r['lr'], batch_size=r['batch_size'], steps=r['steps_run'],
                          eval_every=r['eval_every'])
        out['adamw'].append(_keyed(r, spec))
    out['half_step'] = [_keyed(r, HalfStepRun(**sample(r), lr_scale=r['lr_scale'], steps=r['steps_run'],
                                              eval_every=int(c['eval_every'] / r['lr_scale'])))
                        for r in doc['half_step']]
    return out


def kernels(folder: Path):
    """The spectra study's stored kernels (`kernels/*.npz`) become store artefacts with their spec, pool and truncation
    in the header, each checked first against its row: the shape is the pool's and the eigenvalues are the row's."""
    doc = load_json(folder / 'task_spectra.json')
    done = 0
    for r in doc['rows']:
        spec = SpectrumRun.from_dict(r['spec'])
        new = kernel_path(folder / 'kernels', spec)
        old = new.with_suffix('.npz')
        if not old.is_file():
            continue
        G, y, f0, _ = load_kernel(old)
        w = eigendecomposition(G / spec.pool).eigvals
        if G.shape[0] != spec.pool or not np.allclose(w.numpy(), r['eigvals'], rtol=1e-9, atol=1e-15):
            raise SystemExit(f"{old} is not the kernel of its row")
        save_kernel(new, G, y, f0, {'pool': spec.pool, 'max_length': spec.max_length, 'spec': spec.to_dict()})
        back = load_kernel(new)
        if not all(torch.equal(a, b) for a, b in zip(back[:3], (G, y, f0))):
            raise SystemExit(f"{new} does not read back as {old}")
        old.unlink()
        done += 1
    print(f"{done} stored kernels moved to store artefacts" if done else "every stored kernel is an artefact already")


def main(folder='results'):
    d = Path(folder)
    studies = (('linearization', linearization), ('task_vectors', task_vectors), ('lora_kernels', lora),
               ('learning_curves', learning_curves), ('task_spectra', task_spectra),
               ('stopping', stopping))
    for name, fn in studies:
        p = d / f'{name}.json'
        if not p.is_file():
            continue
        doc = load_json(p)
        new = fn(doc)
        if new != doc:
            save_json(new, p)
            print(f"migrated {p}")
        else:
            print(f"{p}: every row has its spec already")
    if (d / 'task_spectra.json').is_file():
        kernels(d)


if __name__ == '__main__':
    main(*sys.argv[1:])
