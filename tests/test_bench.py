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


def _row(what, seconds=None, error=None, **kw):
    r = dict(experiment='05_stopping', what=what, model='gpt-neo-125m', n_train=256, T=128, **kw)
    if seconds is None: r['error'] = error or 'skipped: the time budget was spent'
    else: r.update(seconds=seconds, peak_gpu_gb=30.0)
    return r


def test_merge_keeps_measured_rows_over_skipped_ones(tmp_path):
    a = _run(tmp_path, 'a.json', [_row('network GD', 3.0), _row('kernel (attention)')])
    b = _run(tmp_path, 'b.json', [_row('network GD'), _row('kernel (attention)', 8.0)])
    res = pp.merge([a, b])
    got = {r['what']: r.get('seconds') for r in res['rows']}
    assert got == {'network GD': 3.0, 'kernel (attention)': 8.0}
    assert res['command'] == 'cmd a.json ; cmd b.json' and res['wall_seconds'] == 20.0
    c = _run(tmp_path, 'c.json', [_row('network GD', 1.0)], steps=10)
    with pytest.raises(SystemExit, match='different numbers of steps'): pp.merge([a, c])


def test_estimates_scale_the_measured_step_by_the_presets_counts():
    P = pp.presets()
    c = P['05_stopping']
    est = pp.estimates([_row('network GD', 2.5), _row('kernel (attention)', 4.0)], P, steps=5)
    gd = {e['case']: e for e in est if e['experiment'] == '05_stopping' and e['part'].startswith('network GD')}
    runs = len(c['runs'])
    assert gd['shortest']['count'] == runs * c['steps']['gpt-neo-125m']
    assert gd['shortest']['seconds'] == pytest.approx(runs * c['steps']['gpt-neo-125m'] * 2.5 / 5)
    assert gd['longest']['seconds'] == pytest.approx(runs * c['max_steps']['gpt-neo-125m'] * 2.5 / 5)
    kern = next(e for e in est if e['experiment'] == '05_stopping' and e['part'].startswith('kernel'))
    assert kern['seconds'] == pytest.approx(runs * 4.0)
    assert all(e['seconds'] is None for e in est if e['experiment'] == '02_task_spectra')  # nothing measured there


def test_note_reports_failures_missing_parts_and_the_80gb_line(tmp_path):
    rows = [_row('network GD', 5.0), _row('kernel (attention)', error='CacheError: cannot write: disk full; free it')]
    rows[1]['peak_gpu_gb'] = 86.0
    res = pp.merge([_run(tmp_path, 'a.json', rows)])
    res['estimates'] = pp.estimates(res['rows'], pp.presets(), res['steps'])
    p = tmp_path / 'res.json'; p.write_text(json.dumps(res))
    md = pp.note('05_stopping', p)
    assert 'failed: cannot write: disk full' in md and 'Over 80 GB at its peak: kernel (attention)' in md
    assert 'not measured: kernel (attention), gpt-neo-125m' in md and ' to ' in md  # the stopping runs' length range
    assert pp.note('04_learning_curves', p).endswith('Not measured: kernel (attention), gpt-neo-1.3b (× 10).')
    assert 'not been measured' in pp.note('05_stopping', tmp_path / 'none.json')
