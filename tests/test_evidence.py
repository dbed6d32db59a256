"""The shipped evidence and what the package recommends from it: the bootstrap against a simulation with a known
median, the chosen rule against medians computed here from the raw results, every warning of `recommend`, and the
samples prediction on a kernel problem whose test loss is known by simulation."""
import json
from pathlib import Path
from types import SimpleNamespace
import numpy as np, pytest, torch
from ntk_finetune.evidence import (bootstrap_median, choose_rule, load_evidence, recommend, RULE_ORDER,
                                   accuracy_from_loss)

ROOT = Path(__file__).resolve().parents[1]

def test_bootstrap_interval_covers_the_median_about_95_percent():
    rng = np.random.default_rng(0)
    hits = [(b := bootstrap_median(rng.exponential(1.0, 40), draws=500, seed=i))['low'] <= np.log(2) <= b['high']
            for i in range(300)]
    assert 0.88 <= np.mean(hits) <= 0.99, np.mean(hits)  # the percentile bootstrap of a median: close to nominal

@pytest.mark.parametrize('optimizer', ['gd', 'adamw'])
def test_the_chosen_rule_has_the_lowest_median_in_the_raw_results(optimizer):
    res = json.loads((ROOT / 'results' / 'stopping.json').read_text())
    ch = choose_rule(load_evidence(), 'smollm2-135m', optimizer)
    rows = [{**r, 'optimizer': 'gd'} for r in res['rows']] + res.get('more', [])
    rows = [r for r in rows if r['model'] in ch['models'] and r['optimizer'] == ch['optimizer']]
    def excess(r, q):  # GD: the recorded stop; AdamW: kernel step x the best/kernel ratio on the other tasks' runs
        if optimizer == 'gd' or ch['optimizer'] == 'gd':  # of the same model at the same n_train
            return r.get(f'{q}_excess_test_loss')
        ratios = [o['oracle_step'] / o[f'{q}_kernel_step'] for o in rows
                  if o['task'] != r['task'] and o['model'] == r['model'] and o.get('n_train') == r.get('n_train')
                  and (o.get(f'{q}_kernel_step') or 0) > 0]
        if not ratios:
            return None
        ev, tl = np.array(r['eval_steps']), np.array(r['test_loss_curve'])
        return tl[np.abs(ev - np.median(ratios) * r[f'{q}_kernel_step']).argmin()] - tl.min()
    ex = {q: [e for r in rows if f'{q}_step' in r and (e := excess(r, q)) is not None] for q in RULE_ORDER}
    med = {q: np.median(v) for q, v in ex.items() if len(v) >= 6}
    assert ch['rule'] == min(med, key=med.get) and np.isclose(ch['median'], med[ch['rule']])

def _analysis(**kw):
    s = dict(model='smollm2-135m', lr=0.001, batch_size=64, optimizer='gd')
    s.update(kw.pop('settings', {}))
    base = dict(settings=s, n=64, spectrum={'lambda_1': 100.0}, notes={}, at_convergence={}, diagnostics={},
                stops={q: 10 for q in RULE_ORDER},
                schedule={q: {'optimizer_steps': 10, 'epochs': 10.0} for q in RULE_ORDER})
    return SimpleNamespace(**{**base, **kw})

@pytest.mark.parametrize('kw, optimizer, starts', [
    (dict(settings=dict(batch_size=8)), 'sgd', 'batch 8 << n = 64'),
    (dict(settings=dict(lr=0.05)), 'gd', 'lr 0.05 >= 2/λ_1'),
    (dict(settings=dict(model='my-model')), 'gd', "model 'my-model' was not measured"),
    (dict(n=1000), 'gd', 'n = 1000 lies outside the measured n'),
    (dict(), 'adamw', 'adamw: the stop is the rule'),
    (dict(diagnostics={'sigma_ratio': {'value': 0.97}}), 'gd', "σ̂ is close to the labels' spread"),
])
def test_recommend_warns_outside_what_was_measured(kw, optimizer, starts):
    a = _analysis(**kw)
    rule = 'cp' if 'diagnostics' in kw else None  # a σ̂-based rule, for the σ̂ warning
    rec = recommend(a, optimizer, rule)
    assert any(w.startswith(starts) for w in rec['warnings']), rec['warnings']
    assert not any(w.startswith(starts) for w in recommend(_analysis(), 'gd', rule)['warnings'])

def test_recommend_without_an_applicable_rule_says_so():
    a = _analysis(stops={q: None for q in RULE_ORDER}, notes={q: 'diverges' for q in RULE_ORDER})
    rec = recommend(a)
    assert rec['rule'] is None and 'does not apply (diverges)' in rec['says']

def test_accuracy_calibration_is_monotone_and_within_measured_accuracies():
    cal = load_evidence()['accuracy']
    L = np.geomspace(*cal['loss_range'], 50)
    acc = accuracy_from_loss(L, cal)
    assert cal['b'] < 0 and np.all(np.diff(acc) < 0) and cal['pairs'] >= 100 and 0 < cal['rmse'] < 0.2

def test_samples_prediction_on_a_kernel_problem_with_a_known_answer():
    "Kernel GD on the Brownian kernel min(x, x') with a smooth target: the true oracle test loss at each n is measured"
    " by simulation; the anchored prediction from a 32-example pilot lands within a factor 2 of it up to 8x the pilot."
    from ntk_finetune.curves import _pilot_prediction
    from ntk_finetune.dynamics import kernel_gd
    rng = np.random.default_rng(0)
    fstar = lambda x: np.sin(2 * np.pi * x) + 0.5 * x
    sigma = 0.5
    draw = lambda m: (lambda x: (x, fstar(x) + sigma * rng.normal(size=m)))(rng.uniform(size=m))
    def oracle(n, reps=6):
        out = []
        for _ in range(reps):
            x, y = draw(n); xt = rng.uniform(size=400)
            K = torch.tensor(np.minimum(x[:, None], x[None]) / n)
            Kt = torch.tensor(np.minimum(xt[:, None], x[None]) / n)
            p = kernel_gd(K, torch.tensor(y), 1.0, 3000, K_test_train=Kt).test.numpy()
            out.append(((p - (fstar(xt) + sigma * rng.normal(size=400))) ** 2).mean(1).min() / 2)
        return float(np.mean(out))
    x, y = draw(32)
    G = torch.tensor(np.minimum(x[:, None], x[None]))
    pred = _pilot_prediction(G, torch.tensor(y), torch.zeros(32, dtype=torch.float64), [32, 64, 256])
    for p in pred:
        truth = oracle(p['n'])
        assert 0.5 < p['predicted_test_loss'] / truth < 2, (p['n'], p['predicted_test_loss'], truth)

@pytest.mark.parametrize('scale, covered, error', [(1.0, 1.0, 0.0), (10.0, 0.0, -0.9)])
def test_samples_validation_scores_the_band_it_reports(tmp_path, scale, covered, error):
    "A measured curve equal to one pilot's own prediction is inside its band with no error; ten times it, outside."
    from ntk_finetune.curves import _pilot_band, samples_validation
    rng = np.random.default_rng(1)
    x = rng.uniform(size=48)
    G = np.minimum(x[:, None], x[None])
    y, f0 = np.sign(np.sin(6 * x) + 0.3 * rng.normal(size=48)), np.zeros(48)
    np.savez(tmp_path / 'm__attention__t__pretrained.npz', G=G, y=y, f0=f0)
    idx = np.sort(np.random.default_rng(0).choice(48, 32, replace=False))  # the pilot samples_validation draws
    T = lambda a: torch.tensor(a, dtype=torch.float64)
    point, lo, hi = _pilot_band(T(G[idx][:, idx]), T(y[idx]), T(f0[idx]), [32, 64, 128])
    assert np.all(lo <= 0) and np.all(hi >= 0)
    rows = [{'task': 't', 'n': p['n'], 'seed': 0, 'oracle_test_loss': scale * p['predicted_test_loss']} for p in point]
    V = samples_validation(tmp_path, {'config': {'model': 'm'}, 'rows': rows}, pilot=32, seeds=(0,))
    assert [v['n'] for v in V['by_n']] == [32, 64, 128] and V['coverage'] == covered
    assert all(abs(v['anchored_median'] - error) < 1e-9 and v['coverage'] == covered for v in V['by_n'])
