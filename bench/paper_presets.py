"""The experiments' paper presets (`ntk_finetune.presets`, size `paper`) at full size on one GPU: does each preset's heavy
work run, how long does it take, and does it fit in an 80 GB GPU?

    python bench/paper_presets.py          # on a CUDA machine: writes bench/results/paper_presets.json, BENCHMARKS.md
    python bench/paper_presets.py --tiny   # the same code on the CPU with a tiny GPT-Neo (a smoke test; writes nothing)

The GPU machine has no hub access, so the models are the published GPT-Neo-125M and GPT-Neo-1.3B architectures with
random weights, and the examples are random token ids with every one of the preset's `max_length` positions real (the
most memory and time a prompt can take). Sizes (n, T, models, parameter sets, steps) are each experiment's `paper`
preset. For each preset it runs the package's own entry points at the preset's sizes with fewer
optimizer steps (`--steps`), times them (CUDA-synchronized; the model is built and warmed up before, untimed) and
records the peak GPU memory (`torch.cuda.max_memory_allocated`), then estimates the whole preset's time from the
measured parts and the preset's counts. GD is timed evaluated before and after its steps and evaluated after every
step, which prices an evaluation apart from a step. Not covered: the GLUE-style datasets themselves (hub), the
task-arithmetic evaluations of the task-vector preset, the pilot kernels and the MiniLM fine-tuning runs of the
learning-curve preset (MiniLM ships in a package too large to take to the GPU machine); the estimates list them.
"""
import argparse, inspect, json, os, platform, re, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / 'bench' / 'results' / 'paper_presets.json'
from ntk_finetune.presets import (PRESETS, NO_EMB, SETUP, gpt_neo, label_word_output, random_batch, size, is_kernel,
                                  is_gd, over_80gb, hours, outcome, no_space, gpu_note)


def random_task(n_train, n_val, n_test, T, seed=0):
    "A `TaskData` of random batches with alternating labels."
    import torch
    from ntk_finetune.finetune import TaskData
    parts = []
    for i, n in enumerate((n_train, n_val, n_test)):
        parts += [random_batch(n, T, seed + i), torch.arange(n) % 2]
    return TaskData(*parts, task='random')


def presets():
    "Each experiment's paper preset (`ntk_finetune.presets`), by notebook name, and the all-weights regex."
    return {**{e: v['paper'] for e, v in PRESETS.items()}, 'NO_EMB': {'02_task_spectra': NO_EMB}}


class Meter:
    "Runs measured steps one after another; each row: seconds (synchronized), peak GPU GB, or the error."

    def __init__(self, out, device, budget_s, only=None):
        self.rows, self.out, self.device, self.t0, self.budget_s = [], out, device, time.time(), budget_s
        self.only = only

    def __call__(self, experiment, what, f, setup=None, **info):
        "Time `f()` after `setup()` (untimed: building and warming up the model), unless skipped."
        import torch
        row = dict(experiment=experiment, what=what, **info)
        if self.only and not re.search(self.only, what):
            return  # not asked for this run: not a row
        if time.time() - self.t0 > self.budget_s:
            row['error'] = 'skipped: the time budget was spent'
            return self._add(row)
        if setup is not None:
            setup()
        row['setup_untimed'] = setup is not None
        cuda = self.device == 'cuda'
        if cuda:
            torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats(); torch.cuda.synchronize()
        t = time.perf_counter()
        try:
            f()
            if cuda: torch.cuda.synchronize()
            row['seconds'] = time.perf_counter() - t
        except Exception as e:  # an out-of-memory is a result here, not a crash: record it and go on
            row['error'] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        if cuda: row['peak_gpu_gb'] = torch.cuda.max_memory_allocated() / 2**30
        self._add(row)

    def _add(self, row):
        from ntk_finetune.core import save_json
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        if self.out:
            save_json(self.rows, self.out)


def run_all(device='cuda', tiny=False, steps=5, out=None, budget_s=420, only=None):
    import torch
    from ntk_finetune.entk import empirical_ntk, train_test_ntk
    from ntk_finetune.finetune import FinetuneConfig, finetune, finetune_linearized
    from ntk_finetune.compare import compare
    from ntk_finetune.task_vectors import multitask_kernel
    P, meter, fn = presets(), Meter(out, device, budget_s, only), label_word_output()
    shrink = (lambda n: min(n, 8)) if tiny else (lambda n: n)        # the smoke test: every size cut to 8
    models = {}

    def model(name):
        "The model `name`, built (and warmed up by one forward pass) on its first use; one model at a time."
        if name not in models:
            models.clear(); torch.cuda.empty_cache() if device == 'cuda' else None
            models[name] = gpt_neo(name, device, tiny)
            with torch.no_grad():
                models[name](**{k: v.to(device) for k, v in random_batch(2, 16).items()})
        return models[name]

    def ft_rows(exp, name, n, nv, nt, T, linearized):
        """Full-batch GD of the network (and of its linearization), `steps` steps evaluated before and after them,
        then the same evaluated after every step: their difference prices one evaluation (validation + test)."""
        d = random_task(shrink(n), shrink(nv), shrink(nt), T)
        for every, tag in ((steps, ''), (1, ', evaluated every step')):
            cfg = FinetuneConfig(params='attention', lr=1e-6, steps=steps, eval_every=every)
            kw = dict(model=name, n_train=n, n_val=nv, n_test_eval=nt, T=T, steps=steps, eval_every=every,
                      setup=lambda: model(name))
            meter(exp, f'network GD{tag}', lambda: finetune(model(name), d, fn, cfg, progress=False), **kw)
            if linearized:
                meter(exp, f'linearized GD{tag}', lambda: finetune_linearized(model(name), d, fn, cfg, progress=False),
                      **kw)

    # 02 task spectra: one kernel of a pool subset per (task, model, params, init)
    c = P['02_task_spectra']
    for name in c['models']:
        for params in c['params']:
            b, sel = random_batch(shrink(c['pool']), c['max_length']), P['NO_EMB']['02_task_spectra']
            meter('02_task_spectra', f'kernel ({params})',
                  lambda: empirical_ntk(model(name), b, fn, sel if params == 'all' else params, progress=False),
                  model=name, params=params, n=c['pool'], T=c['max_length'], setup=lambda: model(name))
    # 05 stopping: compare (kernels, rules, the network run) on GPT-Neo-125M
    c = P['05_stopping']
    name = c['runs'][0][0]
    d = random_task(*(shrink(c[k]) for k in ('n_train', 'n_val', 'n_test')), c['max_length'])
    meter('05_stopping', 'compare', lambda: compare(model(name), None, data=d, output_fn=fn, steps=steps,
                                                    eval_every=steps, drift_steps=(), progress=False),
          model=name, n_train=c['n_train'], T=c['max_length'], steps=steps, setup=lambda: model(name))
    meter('05_stopping', 'kernel (attention)', lambda: train_test_ntk(model(name), d.train, d.test, fn, 'attention',
                                                                     progress=False),
          model=name, n=c['n_train'], n_test=c['n_test'], T=c['max_length'], setup=lambda: model(name))
    ft_rows('05_stopping', name, c['n_train'], c['n_val'], c['n_test'], c['max_length'], False)
    # 01 kernel vs fine-tuning: compare with the linearized run, each model at its n
    c = P['01_kernel_vs_finetuning']
    for name, n in dict((r[0], r[1]) for r in c['runs']).items():
        d = random_task(shrink(n), shrink(c['n_val']), shrink(c['n_test']), c['max_length'])
        meter('01_kernel_vs_finetuning', 'compare (linearized)',
              lambda: compare(model(name), None, data=d, output_fn=fn, steps=steps, linearized=True, progress=False),
              model=name, n_train=n, T=c['max_length'], steps=steps, setup=lambda: model(name))
        meter('01_kernel_vs_finetuning', 'kernel (attention)',
              lambda: train_test_ntk(model(name), d.train, d.test, fn, 'attention', progress=False),
              model=name, n=n, n_test=c['n_test'], T=c['max_length'], setup=lambda: model(name))
        ft_rows('01_kernel_vs_finetuning', name, n, c['n_val'], c['n_test'], c['max_length'], True)
    # 03 task vectors: the multi-task kernel of all tasks' samples, then a network and a linearized run per task
    c = P['03_task_vectors']
    bs = [random_batch(shrink(c['n']), c['max_length'], s) for s in range(len(c['tasks']))]
    meter('03_task_vectors', 'multi-task kernel', lambda: multitask_kernel(model(c['model']), bs, [fn] * len(bs),
                                                                           progress=False),
          model=c['model'], n=c['n'] * len(bs), T=c['max_length'], setup=lambda: model(c['model']))
    ft_rows('03_task_vectors', c['model'], c['n'], c['n_test'], c['n_test'], c['max_length'], True)  # val = test
    # 04 learning curves: the pool's train/test kernel, pretrained and at a random init
    c = P['04_learning_curves']
    b, bt = random_batch(shrink(c['pool']), c['max_length']), random_batch(shrink(c['n_test']), c['max_length'], 1)
    meter('04_learning_curves', 'kernel (attention)', lambda: train_test_ntk(model(c['model']), b, bt, fn, 'attention',
                                                                             progress=False),
          model=c['model'], n=c['pool'], n_test=c['n_test'], T=c['max_length'], setup=lambda: model(c['model']))
    return meter.rows


def machine(device):
    import torch
    gpu = f"{torch.cuda.get_device_name(0)}, " if device == 'cuda' else ''
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')),
               platform.processor())
    return f"{gpu}{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, Python {platform.python_version()}"


def estimates(rows, P, steps):
    """Each preset's whole time from its measured parts and its counts: rows (experiment, part, count, case, seconds,
    bias), seconds None where the part was not measured at the preset's sizes (or failed), and `bias` (low or high,
    why) where the measured step is cheaper or dearer than the preset's own. A GD part measured both ways (evaluated
    only before and after, and after every step) is priced as steps × a step + evaluations × an evaluation."""
    from ntk_finetune.compare import compare
    out = []

    def find(e, what, model, n, T, params=None):
        "The measured row of this step at these sizes, or None."
        return next((r for r in rows if 'seconds' in r and (r['experiment'], r['what'], r.get('model'),
                     r.get('params'), r.get('n', r.get('n_train')), r['T']) == (e, what, model, params, n, T)), None)

    def with_setup(bias, *found):
        "`bias`, and whether a measured row's time includes building the model (a high bias)."
        if not any(r is not None and r.get('includes_setup') for r in found):
            return bias
        if bias is None or bias[0] == 'high':
            return ('high', '; '.join(([bias[1]] if bias else []) + [SETUP]))
        return ('unknown', f'{bias[1]}, but {SETUP}')

    def part(e, what, model, count, n, T, params=None, case=None, per=None):
        "`count` times the measured step (`per`: what one of the count is, where the step's name does not say)."
        r = find(e, what, model, n, T, params)
        out.append(dict(experiment=e, part=f'{what}, {model}', count=count, per=per, case=case,
                        bias=with_setup(None, r), seconds=None if r is None else count * r['seconds']))

    def gd(e, what, model, n, T, n_steps, n_evals, bias, case=None):
        "A GD part: `n_steps` optimizer steps and `n_evals` evaluations in all the preset's runs."
        ra, rb = find(e, what, model, n, T), find(e, f'{what}, evaluated every step', model, n, T)
        a, b = (None if r is None else r['seconds'] for r in (ra, rb))
        split = a is not None and b is not None and steps > 1
        ev = max(0.0, (b - a) / (steps - 1)) if split else None  # steps + 1 evaluations against 2
        sec = None if a is None else (n_steps * (a - 2 * ev) / steps + n_evals * ev if split else n_steps * a / steps)
        out.append(dict(experiment=e, part=f'{what}, {model}', count=n_steps, case=case,
                        bias=with_setup(None if split else bias, ra, rb), seconds=sec))

    was = f'measured with {steps} steps and an evaluation before and after them'
    c = P['02_task_spectra']
    for m in c['models']:
        for p in c['params']:
            part('02_task_spectra', f'kernel ({p})', m, len(c['tasks']) * (1 + len(c['random_seeds'])), c['pool'],
                 c['max_length'], params=p)
    # 05, per run: the analysis' train + test kernel, then GD evaluated every `eval_every` steps
    c, T = P['05_stopping'], P['05_stopping']['max_length']
    m, runs, every = c['runs'][0][0], len(c['runs']), c['eval_every']
    ckpt = inspect.signature(compare).parameters['checkpoint_every'].default  # each run checkpoints (resumable)
    part('05_stopping', 'kernel (attention)', m, runs, c['n_train'], T)
    for s, case in ((c['steps'][m], 'shortest'), (c['max_steps'][m], 'longest')):  # a run's length lies between
        gd('05_stopping', 'network GD', m, c['n_train'], T, runs * s, runs * (-(-s // every) + 1),
           ('high', f'{was}, where the preset evaluates every {every} steps'), case)
        part('05_stopping', 'checkpoints', m, runs * -(-s // ckpt), None, T, case=case,
             per=f'saves of the trained weights, every {ckpt} steps and at the end of each run')
    # 01, per run (`compare`, linearized): the analysis' train + test kernel, three train-only kernels along the
    # network run (its drift), and the linearized and the network GD, each evaluated at every step
    c, T = P['01_kernel_vs_finetuning'], P['01_kernel_vs_finetuning']['max_length']
    for m in dict.fromkeys(r[0] for r in c['runs']):
        runs = [r for r in c['runs'] if r[0] == m]
        n = runs[0][1]
        part('01_kernel_vs_finetuning', 'kernel (attention)', m, len(runs), n, T)
        part('01_kernel_vs_finetuning', 'drift kernel (attention, train only)', m, 3 * len(runs), n, T)
        for w in ('network GD', 'linearized GD'):
            gd('01_kernel_vs_finetuning', w, m, n, T, sum(r[2] for r in runs), sum(r[2] + 1 for r in runs),
               ('low', f'{was}, where the preset evaluates at every step'))
    # 03, per seed: the multi-task kernel, then per task a network and a linearized run evaluated at every step
    c, T = P['03_task_vectors'], P['03_task_vectors']['max_length']
    k, seeds = len(c['tasks']), len(c['seeds'])
    part('03_task_vectors', 'multi-task kernel', c['model'], seeds, c['n'] * k, T)
    for w in ('network GD', 'linearized GD'):
        gd('03_task_vectors', w, c['model'], c['n'], T, seeds * k * c['steps'], seeds * k * (c['steps'] + 1),
           ('low', f"{was}, where the preset evaluates {c['n_test']} validation and {c['n_test']} test examples at "
                   "every step"))
    part('03_task_vectors', 'task arithmetic evaluations', c['model'], seeds * len(c['families']), c['n'], T,
         per='seeds × families, each the test accuracy of every sum, negation and scaled pair of task vectors')
    # 04, per task: the pool's train/test kernel (the first task's also at a random init), a pilot analysis, and the
    # MiniLM fine-tuning runs
    c, T = P['04_learning_curves'], P['04_learning_curves']['max_length']
    part('04_learning_curves', 'kernel (attention)', c['model'], len(c['tasks']) + 1, c['pool'], T)
    part('04_learning_curves', 'pilot kernel', c['model'], len(c['tasks']), c['pilot'], T, per=f"n = {c['pilot']} each")
    ft = len(c['ft_tasks']) * len(c['ft_ns']) * len(c['ft_seeds'])
    part('04_learning_curves', 'fine-tuning (hold-out stopping)', 'minilm-l6', ft, None, T, per='MiniLM-L6 runs')
    return out


TITLE = 'Paper presets on one GPU: GPT-Neo-125M and GPT-Neo-1.3B shapes (random weights)'


def markdown(res) -> str:
    "The BENCHMARKS.md section: each measured step, then each preset's time from its parts."
    gb = lambda r: f"{r['peak_gpu_gb']:.1f}" if r.get('peak_gpu_gb') is not None else ''
    L = [f"Command: `{res['command']}` (from the repository root, on the GPU machine).  ",
         f"Machine: {res['machine']}.  ", f"Date: {res['date']}. Optimizer steps per measured run: {res['steps']}.", '',
         "Each step is the package's own entry point at the preset's sizes (its `paper` preset in "
         "`ntk_finetune.presets`), on random token ids with every position real. GD rows are the seconds of "
         f"{res['steps']} full-batch steps with an evaluation before and after them, or (\"evaluated every step\") "
         "after each: their difference prices an evaluation. "
         "Peak = `torch.cuda.max_memory_allocated`; "
         "the kernels' memory budget is 80 % of the free GPU memory, so on a smaller GPU they take less.", '',
         '| experiment | step | model | n (+ test) × T | seconds | peak GPU GB |', '|---|---|---|---|---|---|']
    for r in res['rows']:
        sec = outcome(r).replace('not run', 'not run (the time budget was spent)')
        L.append(f"| {r['experiment']} | {r['what']} | {r['model']} | {size(r)} | {sec} | {gb(r)} |")
    L += ['', "Each preset's time from the measured parts (count × the measured step; a run of the stopping "
          "preset lasts between its minimum and its maximum number of steps):", '',
          '| experiment | part | count | hours | the measured step against the preset\'s |', '|---|---|---|---|---|']
    h = lambda e: 'not measured' if e['seconds'] is None else hours(e['seconds'])
    word = {'low': 'cheaper', 'high': 'dearer', 'unknown': 'either'}
    bias = lambda e: '' if not e.get('bias') else f"{word[e['bias'][0]]}: {e['bias'][1]}"
    part = lambda e: e['part'] + (f" (runs of the {e['case']} length)" if e.get('case') else '') + (
        f" ({e['per']})" if e.get('per') else '')
    L += [f"| {e['experiment']} | {part(e)} | {e['count']} | {h(e)} | {bias(e)} |" for e in res['estimates']]
    return '\n'.join(L)


def note(experiment, path=RESULTS) -> str:
    "Markdown for an experiment's page (`ntk_finetune.presets.gpu_note`)."
    return gpu_note(experiment, path)


def merge(files):
    """One results file from several runs of this script. A step (experiment, step, model, parameters) measured again
    takes the later run's row, except that a measurement is kept over a later skip, and over a later failure at the same
    sizes (the failure is kept with it, as `later_error`)."""
    runs = [json.loads(Path(f).read_text()) for f in files]
    sizes = lambda r: tuple(r.get(f) for f in ('n', 'n_train', 'n_test', 'T'))
    rows = {}
    for res in runs:
        built = None  # the model in use: a run timed building it in its first step on it, until setups were untimed
        for r in res['rows']:
            if not str(r.get('error', '')).startswith('skipped') and 'setup_untimed' not in r:
                r = {**r, 'includes_setup': r['model'] != built}
                built = r['model']
            k = tuple(r.get(f) for f in ('experiment', 'what', 'model', 'params'))
            old, new = rows.get(k), {**r, 'date': res['date']}
            if old is not None and str(r.get('error', '')).startswith('skipped'):
                continue
            if old is not None and 'seconds' in old and 'seconds' not in r and sizes(old) == sizes(r):
                new = {**old, 'later_error': r.get('error')}
            rows[k] = new
    steps = {res['steps'] for res in runs}
    if len(steps) > 1:
        raise SystemExit(f'paper_presets: the runs measured different numbers of steps ({sorted(steps)})')
    return {'command': ' ; '.join(res['command'] for res in runs), 'machine': runs[-1]['machine'],
            'date': runs[-1]['date'], 'wall_seconds': sum(res['wall_seconds'] for res in runs), 'steps': steps.pop(),
            'rows': list(rows.values())}


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--tiny', action='store_true', help='tiny GPT-Neo and sizes cut to 8 on the CPU; writes nothing')
    ap.add_argument('--steps', type=int, default=5, help='optimizer steps per measured run')
    ap.add_argument('--budget', type=float, default=420, help='seconds after which the remaining rows are skipped')
    ap.add_argument('--out', default=None, help='also write the rows here as they come')
    ap.add_argument('--only', default=None, help="measure only the steps whose name matches this regex ('GD')")
    ap.add_argument('--merge', nargs='+', default=None, help='merge these results files into the committed one')
    a = ap.parse_args()
    if a.merge:
        res = merge(a.merge)
    else:
        import torch
        device = 'cpu' if a.tiny else 'cuda'
        if device == 'cuda' and not torch.cuda.is_available():
            sys.exit('paper_presets: this Python has no CUDA device (use --tiny for the CPU smoke test)')
        t0 = time.time()
        rows = run_all(device, a.tiny, a.steps, a.out, a.budget, a.only)
        cmd = f"python bench/paper_presets.py --steps {a.steps}" + (f" --only '{a.only}'" if a.only else '')
        res = {'command': cmd,
               'machine': machine(device), 'date': time.strftime('%Y-%m-%d'), 'wall_seconds': time.time() - t0,
               'steps': a.steps, 'rows': rows}
    res['estimates'] = estimates(res['rows'], presets(), res['steps'])
    print(json.dumps(res['estimates'], indent=1))
    if a.tiny:
        sys.exit(0)
    from ntk_finetune.core import save_json
    save_json(res, RESULTS)
    from entk import write_benchmarks  # bench/ is this script's folder
    write_benchmarks(res, TITLE, markdown)
    print(f'wrote {RESULTS} and BENCHMARKS.md')
