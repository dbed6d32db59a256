"""The paper-preset benchmark's bookkeeping (bench/paper_presets.py): merging runs, the presets' time from measured
parts, and the note the experiment pages render. Its GPU measurements run by hand (`make gpu-check`)."""
import json, sys
from pathlib import Path
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'bench'))
import paper_presets as pp


def _run(tmp_path, name, rows, steps=5):
    p = tmp_path / name
    p.write_text(json.dumps(dict(command=f'cmd {name}', machine='GPU X, cpu', date='2026-01-01', wall_seconds=10.0,
                                 steps=steps, rows=rows)))
    return p


def _row(what, seconds=None, error=None, experiment='05_stopping', model='gpt-neo-125m', peak=30.0, **kw):
    r = dict(experiment=experiment, what=what, model=model, T=128, **({'n_train': 256} | kw))
    if seconds is None: r['error'] = error or 'skipped: the time budget was spent'
    else: r.update(seconds=seconds, peak_gpu_gb=peak)
    return {**r, 'setup_untimed': True} if not str(r.get('error')).startswith('skipped') else r


def _results(tmp_path, rows):
    res = pp.merge([_run(tmp_path, 'a.json', rows)])
    res['estimates'] = pp.estimates(res['rows'], pp.presets(), res['steps'])
    p = tmp_path / 'res.json'
    p.write_text(json.dumps(res))
    return p


def test_merge_keeps_measurements_over_skips_and_later_failures(tmp_path):
    a = _run(tmp_path, 'a.json', [_row('network GD', 3.0), _row('kernel (attention)'), _row('kernel (all)', 1.0)])
    b = _run(tmp_path, 'b.json', [_row('network GD', error='OutOfMemoryError: CUDA'), _row('kernel (attention)', 8.0),
                                  _row('kernel (all)')])
    res = pp.merge([a, b])
    got = {r['what']: (r.get('seconds'), r.get('later_error')) for r in res['rows']}
    assert got == {'network GD': (3.0, 'OutOfMemoryError: CUDA'), 'kernel (attention)': (8.0, None),
                   'kernel (all)': (1.0, None)}
    assert res['command'] == 'cmd a.json ; cmd b.json' and res['wall_seconds'] == 20.0
    # a later measurement replaces an earlier one, a failure a skip, and anything at other sizes (the preset changed)
    c = _run(tmp_path, 'c.json', [_row('kernel (all)'), _row('network GD', 2.0), _row('compare', 5.0)])
    d = _run(tmp_path, 'd.json', [_row('kernel (all)', error='CacheError: disk full'), _row('network GD', 4.0),
                                  _row('compare', error='OutOfMemoryError: CUDA', n_train=512)])
    got = {r['what']: r.get('seconds', r.get('error')) for r in pp.merge([c, d])['rows']}
    assert got == {'kernel (all)': 'CacheError: disk full', 'network GD': 4.0, 'compare': 'OutOfMemoryError: CUDA'}
    # rows timed before the model's construction was untimed: the first on each model carries it, and says so
    old = [_row('kernel (attention)', 1.0, n=256, n_test=256), _row('network GD', 2.0),
           _row('kernel (all)', error='CacheError: x', model='gpt-neo-1.3b'),
           _row('linearized GD', 3.0, model='gpt-neo-1.3b'), _row('compare', 4.0)]
    old = [{k: v for k, v in r.items() if k != 'setup_untimed'} for r in old]
    got = {(r['what'], r['model']): r['includes_setup'] for r in pp.merge([_run(tmp_path, 'o.json', old)])['rows']}
    assert got == {('kernel (attention)', 'gpt-neo-125m'): True, ('network GD', 'gpt-neo-125m'): False,
                   ('kernel (all)', 'gpt-neo-1.3b'): True, ('linearized GD', 'gpt-neo-1.3b'): False,
                   ('compare', 'gpt-neo-125m'): True}
    est = pp.estimates(pp.merge([_run(tmp_path, 'o.json', old)])['rows'], pp.presets(), 5)
    bias = {(e['experiment'], e['part']): e['bias'] for e in est}
    assert bias['05_stopping', 'kernel (attention), gpt-neo-125m'] == ('high', pp.SETUP)
    f = _run(tmp_path, 'f.json', [_row('network GD', 1.0)], steps=10)
    with pytest.raises(SystemExit, match='different numbers of steps'): pp.merge([a, f])


def test_estimates_count_what_each_notebook_computes():
    "The counts of the committed presets, read off their notebooks' loops by hand."
    est = pp.estimates([], pp.presets(), steps=5)
    count = {(e['experiment'], e['part'], e['case']): e['count'] for e in est}
    assert all(e['seconds'] is None for e in est)  # nothing measured
    assert count == {
        ('02_task_spectra', 'kernel (attention), gpt-neo-125m', None): 20,  # 5 tasks × (pretrained + 3 inits)
        ('02_task_spectra', 'kernel (all), gpt-neo-125m', None): 20,
        ('02_task_spectra', 'kernel (attention), gpt-neo-1.3b', None): 20,
        ('02_task_spectra', 'kernel (all), gpt-neo-1.3b', None): 20,
        ('05_stopping', 'kernel (attention), gpt-neo-125m', None): 12,  # 4 tasks × 3 seeds
        ('05_stopping', 'network GD, gpt-neo-125m', 'shortest'): 6000,  # 12 runs × 500 to 4000 steps
        ('05_stopping', 'network GD, gpt-neo-125m', 'longest'): 48000,
        ('05_stopping', 'checkpoints, gpt-neo-125m', 'shortest'): 300,  # 12 runs × a save every 20 steps
        ('05_stopping', 'checkpoints, gpt-neo-125m', 'longest'): 2400,
        ('01_kernel_vs_finetuning', 'kernel (attention), gpt-neo-125m', None): 3,  # 3 learning rates
        ('01_kernel_vs_finetuning', 'drift kernel (attention, train only), gpt-neo-125m', None): 9,
        ('01_kernel_vs_finetuning', 'network GD, gpt-neo-125m', None): 300,
        ('01_kernel_vs_finetuning', 'linearized GD, gpt-neo-125m', None): 300,
        ('01_kernel_vs_finetuning', 'kernel (attention), gpt-neo-1.3b', None): 2,
        ('01_kernel_vs_finetuning', 'drift kernel (attention, train only), gpt-neo-1.3b', None): 6,
        ('01_kernel_vs_finetuning', 'network GD, gpt-neo-1.3b', None): 100,
        ('01_kernel_vs_finetuning', 'linearized GD, gpt-neo-1.3b', None): 100,
        ('03_task_vectors', 'multi-task kernel, gpt-neo-1.3b', None): 3,  # a seed each
        ('03_task_vectors', 'network GD, gpt-neo-1.3b', None): 600,  # 3 seeds × 4 tasks × 50 steps
        ('03_task_vectors', 'linearized GD, gpt-neo-1.3b', None): 600,
        ('03_task_vectors', 'task arithmetic evaluations, gpt-neo-1.3b', None): 6,  # 3 seeds × 2 families
        ('04_learning_curves', 'kernel (attention), gpt-neo-1.3b', None): 6,  # 5 tasks + the first at a random init
        ('04_learning_curves', 'pilot kernel, gpt-neo-1.3b', None): 5,
        ('04_learning_curves', 'fine-tuning (hold-out stopping), minilm-l6', None): 36,  # 3 tasks × 4 n × 3 seeds
    }


def test_estimates_price_steps_and_evaluations_at_the_presets_sizes():
    rows = [_row('network GD', 2.5), _row('network GD, evaluated every step', 4.5), _row('kernel (attention)', 4.0,
                                                                                         n=256, n_test=256)]
    est = {(e['experiment'], e['part'], e['case']): e for e in pp.estimates(rows, pp.presets(), steps=5)}
    gd = lambda case: est['05_stopping', 'network GD, gpt-neo-125m', case]
    # an evaluation: (4.5 - 2.5) / 4 = 0.5 s, a step: (2.5 - 2 × 0.5) / 5 = 0.3 s; 12 runs of 500 steps evaluated
    # every 20 make 12 × 26 evaluations, of 4000 steps 12 × 201
    assert gd('shortest')['seconds'] == pytest.approx(6000 * 0.3 + 12 * 26 * 0.5)
    assert gd('longest')['seconds'] == pytest.approx(48000 * 0.3 + 12 * 201 * 0.5)
    assert gd('shortest')['bias'] is None  # priced, not flagged
    assert est['05_stopping', 'kernel (attention), gpt-neo-125m', None]['seconds'] == pytest.approx(12 * 4.0)
    # measured only before and after: the per-step time as it is, flagged (the preset evaluates every 20 steps)
    one = {(e['part'], e['case']): e for e in pp.estimates(rows[:1], pp.presets(), steps=5)}
    assert one['network GD, gpt-neo-125m', 'shortest']['seconds'] == pytest.approx(6000 * 2.5 / 5)
    assert one['network GD, gpt-neo-125m', 'shortest']['bias'][0] == 'high'
    # a row at other sizes than the preset's is not the preset's step
    other = pp.estimates([_row('network GD', 2.5, n_train=64)], pp.presets(), steps=5)
    assert all(e['seconds'] is None for e in other)


def test_note_reports_failures_missing_parts_the_span_and_the_80gb_line(tmp_path):
    rows = [_row('network GD', 5.0, peak=None), _row('compare', 9.0, peak=95.0),
            _row('kernel (attention)', error="CacheError: cannot write the kernel's files: No space left on device",
                 n=256, n_test=256),
            _row('linearized GD', 2.0, experiment='03_task_vectors', model='gpt-neo-1.3b', peak=81.0, n_train=64),
            _row('multi-task kernel', error='CacheError: cache_dir is a file', experiment='03_task_vectors',
                 model='gpt-neo-1.3b', n=256)]
    p = _results(tmp_path, rows)
    md = pp.note('05_stopping', p)
    assert 'come to 1.7 to 13.3 GPU hours' in md  # 12 runs × (500 to 4000 steps) × 1 s
    assert 'failed: cannot write the kernel' in md and 'ran out of disk' in md
    assert ('not measured: kernel (attention), gpt-neo-125m (× 12), checkpoints, gpt-neo-125m (× 300 to 2400: '
            'saves of the trained weights, every 20 steps and at the end of each run).') in md
    assert 'Overestimated (network GD' in md
    assert '| network GD | gpt-neo-125m | 256 × 128 | 5.0 | — |' in md and '| (256 + 256) × 128 |' in md
    assert 'Over 80 GB' not in md and 'memory budget' in md  # compare's 95 GB peak follows the kernels' budget
    md3 = pp.note('03_task_vectors', p)
    assert 'Over 80 GB at its peak: linearized GD, gpt-neo-1.3b.' in md3 and 'ran out of disk' not in md3
    assert 'Underestimated (linearized GD, gpt-neo-1.3b)' in md3 and 'GD rows are 5 steps' in md3
    assert '0.07 GPU hours' in md3  # 600 steps × 2 / 5 s = 240 s, under 0.1 h
    md4 = pp.note('04_learning_curves', _results(tmp_path, [_row('kernel (attention)', experiment='04_learning_curves',
                                                                 model='gpt-neo-1.3b', n=1024, n_test=512)]))
    assert '| kernel (attention) | gpt-neo-1.3b | (1024 + 512) × 128 | not run | — |' in md4
    assert md4.endswith('fine-tuning (hold-out stopping), minilm-l6 (× 36: MiniLM-L6 runs).')
    assert md4.count('Not measured: ') == 1 and 'GD rows' not in md4 and 'memory budget' not in md4
    md5 = pp.note('05_stopping', _results(tmp_path, [_row('kernel (attention)', 4.0, n=256, n_test=256)]))
    assert 'network GD, gpt-neo-125m (× 6000 to 48000)' in md5  # the runs' length range, one part
    assert 'not been measured' in pp.note('02_task_spectra', p)  # nothing of it in the file
    assert 'not been measured' in pp.note('05_stopping', tmp_path / 'none.json')


def test_outcome_says_why_a_row_has_no_time():
    assert pp.outcome({'seconds': 3.04}) == '3.0'
    assert pp.outcome({'seconds': 3.0, 'later_error': 'OutOfMemoryError: x'}) == '3.0 (a later run failed: ' \
                                                                                  'OutOfMemoryError: x)'
    assert pp.outcome({'error': 'skipped: the time budget was spent'}) == 'not run'
    assert pp.outcome({'error': 'OutOfMemoryError: CUDA out of memory; tried'}) == 'failed: CUDA out of memory'
    assert pp.outcome({}) == 'no result'
