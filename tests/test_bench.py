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
    return r


def _results(tmp_path, rows):
    res = pp.merge([_run(tmp_path, 'a.json', rows)])
    res['estimates'] = pp.estimates(res['rows'], pp.presets(), res['steps'])
    p = tmp_path / 'res.json'
    p.write_text(json.dumps(res))
    return p


def test_merge_keeps_measured_rows_over_skipped_or_failed_ones(tmp_path):
    a = _run(tmp_path, 'a.json', [_row('network GD', 3.0), _row('kernel (attention)')])
    b = _run(tmp_path, 'b.json', [_row('network GD', error='OutOfMemoryError: CUDA'), _row('kernel (attention)', 8.0)])
    res = pp.merge([a, b])
    got = {r['what']: r.get('seconds') for r in res['rows']}
    assert got == {'network GD': 3.0, 'kernel (attention)': 8.0}
    assert res['command'] == 'cmd a.json ; cmd b.json' and res['wall_seconds'] == 20.0
    # a failure replaces a skipped row (it says more), a later measurement replaces an earlier one
    c = _run(tmp_path, 'c.json', [_row('kernel (all)'), _row('network GD', 2.0)])
    d = _run(tmp_path, 'd.json', [_row('kernel (all)', error='CacheError: disk full'), _row('network GD', 4.0)])
    got = {r['what']: r.get('seconds', r.get('error')) for r in pp.merge([c, d])['rows']}
    assert got == {'kernel (all)': 'CacheError: disk full', 'network GD': 4.0}
    # the same step at two sizes is two rows
    e = _run(tmp_path, 'e.json', [_row('network GD', 1.0, n_train=64)])
    assert sorted(r['n_train'] for r in pp.merge([a, e])['rows']) == [64, 256, 256]
    f = _run(tmp_path, 'f.json', [_row('network GD', 1.0)], steps=10)
    with pytest.raises(SystemExit, match='different numbers of steps'): pp.merge([a, f])


def test_estimates_count_what_each_notebook_computes():
    P = pp.presets()
    rows = [_row('network GD', 2.5), _row('kernel (attention)', 4.0)]
    est = {(e['experiment'], e['part'], e['case']): e for e in pp.estimates(rows, P, steps=5)}
    c = P['05_stopping']
    runs, lo, hi = len(c['runs']), c['steps']['gpt-neo-125m'], c['max_steps']['gpt-neo-125m']
    gd = lambda case: est['05_stopping', 'network GD, gpt-neo-125m', case]
    assert (gd('shortest')['count'], gd('longest')['count']) == (runs * lo, runs * hi)
    assert gd('shortest')['seconds'] == pytest.approx(runs * lo * 2.5 / 5)
    assert gd('longest')['seconds'] == pytest.approx(runs * hi * 2.5 / 5)
    assert gd('shortest')['bias'][0] == 'high'  # measured with more evaluations per step than the preset makes
    assert est['05_stopping', 'kernel (attention), gpt-neo-125m', None]['seconds'] == pytest.approx(runs * 4.0)
    # 01: per run the analysis' train + test kernel and three train-only drift kernels; 5 runs on two models
    c = P['01_kernel_vs_finetuning']
    for m in ('gpt-neo-125m', 'gpt-neo-1.3b'):
        k = sum(r[0] == m for r in c['runs'])
        assert est['01_kernel_vs_finetuning', f'kernel (attention), {m}', None]['count'] == k
        assert est['01_kernel_vs_finetuning', f'drift kernel (attention, train only), {m}', None]['count'] == 3 * k
        assert est['01_kernel_vs_finetuning', f'network GD, {m}', None]['bias'][0] == 'low'
    # 04: every task's pool kernel plus the first task's at a random init, and the MiniLM runs (not measured)
    c = P['04_learning_curves']
    assert est['04_learning_curves', 'kernel (attention), gpt-neo-1.3b', None]['count'] == len(c['tasks']) + 1
    ft = est['04_learning_curves', 'fine-tuning (MiniLM-L6), minilm-l6', None]
    assert ft['count'] == len(c['ft_tasks']) * len(c['ft_ns']) * len(c['ft_seeds']) and ft['seconds'] is None
    c = P['03_task_vectors']
    assert est['03_task_vectors', 'multi-task kernel, gpt-neo-1.3b', None]['count'] == len(c['seeds'])
    assert all(e['seconds'] is None for e in est.values() if e['experiment'] == '02_task_spectra')  # none measured


def test_note_reports_failures_missing_parts_the_span_and_the_80gb_line(tmp_path):
    rows = [_row('network GD', 5.0, peak=None), _row('kernel (attention)', error='CacheError: cannot write: disk full'),
            _row('linearized GD', 2.0, experiment='03_task_vectors', model='gpt-neo-1.3b', peak=81.0),
            _row('multi-task kernel', 1.0, experiment='03_task_vectors', model='gpt-neo-1.3b', peak=90.0)]
    rows[1]['peak_gpu_gb'] = 86.0
    p = _results(tmp_path, rows)
    md = pp.note('05_stopping', p)
    c = pp.presets()['05_stopping']
    h = lambda s: f"{len(c['runs']) * c[s]['gpt-neo-125m'] * 5.0 / 5 / 3600:.1f}"
    assert f"come to {h('steps')} to {h('max_steps')} GPU hours" in md
    assert 'failed: cannot write: disk full' in md and 'ran out of disk' in md
    assert 'not measured: kernel (attention), gpt-neo-125m (× 12).' in md and 'Overestimated (network GD' in md
    assert '| network GD | gpt-neo-125m | 256 × 128 | 5.0 | — |' in md and 'Over 80 GB' not in md  # a kernel's 86
    md3 = pp.note('03_task_vectors', p)
    assert 'Over 80 GB at its peak: linearized GD, gpt-neo-1.3b.' in md3  # the kernel's 90 GB follows its budget
    assert 'Underestimated (linearized GD, gpt-neo-1.3b)' in md3 and 'GD rows are 5 steps' in md3
    md4 = pp.note('04_learning_curves', _results(tmp_path, [_row('kernel (attention)', experiment='04_learning_curves',
                                                                 model='gpt-neo-1.3b', n=1024, n_test=512)]))
    assert '| kernel (attention) | gpt-neo-1.3b | (1024 + 512) × 128 | not run | — |' in md4
    assert md4.endswith('(× 36).') and md4.count('Not measured: ') == 1 and 'GD rows' not in md4
    assert 'memory budget' in md and 'memory budget' not in md4  # said where a kernel's peak is shown
    assert 'not been measured' in pp.note('02_task_spectra', p)  # nothing of it in the file
    assert 'not been measured' in pp.note('05_stopping', tmp_path / 'none.json')
