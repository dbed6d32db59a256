import json, math, subprocess, sys
from pathlib import Path
import numpy as np, pytest, torch
from ntk_finetune.finetune import FinetuneConfig, TaskData, History, finetune, prepare_task, LinearizedModel, targets
from ntk_finetune.finetune import CheckpointMismatch, CheckpointRestart, save_checkpoint, load_checkpoint
from ntk_finetune.compare import compare, SpectralEarlyStoppingCallback
from ntk_finetune.analysis import RULES
from ntk_finetune.models import tiny_model, load_model
from ntk_finetune.outputs import LabelWordMargin, HeadOutput, tokenize, make_output_fn
from ntk_finetune.entk import empirical_ntk
from ntk_finetune.dynamics import kernel_gd
from ntk_finetune.data import load_task, task_info

from ntk_finetune.outputs import tiny_output_fn
from ntk_finetune.finetune import toy_task_data as toy

@pytest.mark.parametrize('arch', ['gpt2', 'llama'])
def test_network_approaches_kernel_gd_as_lr_shrinks(arch):
    """Network GD deviates from kernel GD from f0 at second order in the movement: 4x smaller steps, >2x smaller
    relative deviation, and within 5 % at the smaller one (float64)."""
    fn = tiny_output_fn(); d = toy(); devs = []
    for frac in (0.01, 0.0025):
        m = tiny_model(arch, dtype=torch.float64)
        G = empirical_ntk(m, d.train, fn, 'attention', progress=False); f0 = fn(m, d.train).detach().double()
        lr = frac / float(torch.linalg.eigvalsh(G / 16)[-1])
        h = finetune(m, d, fn, FinetuneConfig(lr=lr, steps=10), progress=False)
        kg = kernel_gd(G / 16, targets(d.y_train), lr, 10, f0)
        devs.append(float((torch.stack(h.probe_train) - kg.train).abs().max() / (kg.train[-1] - f0).abs().max()))
    assert devs[1] < 0.05 and devs[1] < devs[0] / 2, devs

def test_linearized_gd_is_exactly_kernel_gd():
    m = tiny_model('gpt2', dtype=torch.float64); m.config._attn_implementation = 'eager'
    fn = tiny_output_fn(); d = toy(n=8)
    G = empirical_ntk(m, d.train, fn, 'attention', progress=False); f0 = fn(m, d.train).detach().double()
    lin = LinearizedModel(m, fn, 'attention')
    h = finetune(lin, d, lambda mm, b: mm(b), FinetuneConfig(params=r'^delta\.', lr=0.01, steps=12), progress=False)
    kg = kernel_gd(G / 8, targets(d.y_train), 0.01, 12, f0)
    torch.testing.assert_close(torch.stack(h.probe_train), kg.train, rtol=0, atol=1e-9)

def test_linearized_needs_eager():
    m = tiny_model('llama'); m.config._attn_implementation = 'sdpa'
    with pytest.raises(ValueError, match='eager attention'): LinearizedModel(m, tiny_output_fn())

def test_history_roundtrip_with_kernels(tmp_path):
    m = tiny_model('gpt2', dtype=torch.float64); fn = tiny_output_fn(); d = toy()
    kfn = lambda mm, p: empirical_ntk(mm, d.train, fn, p, progress=False)
    h = finetune(m, d, fn, FinetuneConfig(lr=0.01, steps=4, kernel_steps=(0, 4)), progress=False, kernel_fn=kfn)
    assert sorted(h.kernels) == [0, 4] and h.kernels[0].shape == (16, 16)
    h.save(tmp_path / 'h'); h2 = History.load(tmp_path / 'h')
    assert h2.steps == h.steps and torch.equal(h2.kernels[4], h.kernels[4]) and h2.config == h.config

@pytest.mark.parametrize('bad', [dict(lr=-1.0), dict(lr=math.inf), dict(steps=0), dict(loss='hinge'), dict(setting='lora')])
def test_bad_config(bad):
    with pytest.raises(ValueError): FinetuneConfig(**bad)

def test_nan_stops_with_history():
    m = tiny_model('gpt2', dtype=torch.float64); fn = tiny_output_fn()
    h = finetune(m, toy(), fn, FinetuneConfig(params='all', lr=1e8, steps=10), progress=False)
    assert h.stopped.startswith('diverged') and 'step' in h.stopped and len(h.train_loss) >= 1

def test_prepare_task_real_and_one_class_error(smollm2):
    _, tok = smollm2
    d = prepare_task(tok, 'sms-spam', 8, 4, 4, 32)
    assert d.train['input_ids'].shape == (8, d.train['input_ids'].shape[1]) and sorted(d.y_train.tolist()) == [0]*4 + [1]*4
    with pytest.raises(ValueError, match='one class'): prepare_task(tok, 'sms-spam', 1, 4, 4, 32)

def test_compare_on_tiny_model_keys_and_tracking():
    m = tiny_model('llama', dtype=torch.float64)
    r = compare(m, None, 'toy', steps=15, lr=0.001, data=toy(), output_fn=tiny_output_fn(), progress=False)
    assert r['linearization_r2'] > 0.95 and len(r['kernel_drift']) == 3 and set(r['predicted_stop_step']) == set(RULES)
    assert json.loads(json.dumps(r.to_dict()))["steps"] == r.steps == 15  # typed, and JSON-ready through to_dict()
    import dataclasses
    from ntk_finetune.report import _strict
    bad = dataclasses.replace(r, condition_number=float('inf'))  # the report's strict JSON nulls it inside a result too
    assert json.loads(json.dumps(_strict(bad), allow_nan=False))['condition_number'] is None

def test_callback_stops_trainer_tiny(tmp_path):
    from transformers import Trainer, TrainingArguments
    from datasets import Dataset
    m = tiny_model('llama', kind='classification', dtype=torch.float32); d = toy(n=16)
    ds = Dataset.from_dict({'input_ids': d.train['input_ids'].tolist(), 'attention_mask': d.train['attention_mask'].tolist(), 'labels': d.y_train.tolist()})
    cb = SpectralEarlyStoppingCallback(d.train, d.y_train, HeadOutput(), 'attention', rule='cp')
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=500, per_device_train_batch_size=16, learning_rate=0.05, optim='sgd',
                             lr_scheduler_type='constant', report_to=[], save_strategy='no', logging_steps=1000, use_cpu=True, disable_tqdm=True)
    tr = Trainer(model=m, args=args, train_dataset=ds, callbacks=[cb]); tr.train()
    assert cb.stop_step is not None and tr.state.global_step == min(cb.stop_step, 500)
    assert any('spectral_stop_step' in e for e in tr.state.log_history)

def test_callback_real_trainer_smollm2(tmp_path):
    """A real Trainer on the embedded SmolLM2 (new head) and rt-sentiment stops at the predicted step."""
    from transformers import Trainer, TrainingArguments
    from datasets import Dataset
    m, tok = load_model('smollm2-135m', kind='classification')
    for n_, p in m.named_parameters(): p.requires_grad_('self_attn' in n_ or n_.startswith('score'))
    tr_ds = load_task('rt-sentiment', 'train', n=16, seed=0); b = tokenize(tok, tr_ds['text'], 32)
    ds = Dataset.from_dict({'input_ids': b['input_ids'].tolist(), 'attention_mask': b['attention_mask'].tolist(), 'labels': tr_ds['label']})
    cb = SpectralEarlyStoppingCallback(b, tr_ds['label'], HeadOutput(), 'attention', rule='cp')
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=12, per_device_train_batch_size=16, learning_rate=0.005, optim='sgd',
                             lr_scheduler_type='constant', report_to=[], save_strategy='no', logging_steps=1000, use_cpu=True, disable_tqdm=True)
    trainer = Trainer(model=m, args=args, train_dataset=ds, callbacks=[cb]); trainer.train()
    assert cb.result['rule'] == 'cp' and cb.result['sigma_hat'] > 0
    assert trainer.state.global_step == min(cb.stop_step, 12)

def test_callback_report_only_and_bad_rule():
    with pytest.raises(ValueError, match='rule must be'): SpectralEarlyStoppingCallback({}, [0, 1], rule='aic')

def test_callback_default_output_fn_is_the_head():
    """Without output_fn the callback uses the model's head output (regression: the library module lacked the import)."""
    from ntk_finetune import compare as C
    cb = C.SpectralEarlyStoppingCallback(toy().train, toy().y_train, rule='cp')
    class A: per_device_train_batch_size, gradient_accumulation_steps, learning_rate = 16, 1, 0.05
    class S: log_history = []
    cb.on_train_begin(A(), S(), None, model=tiny_model('llama', kind='classification'))
    assert cb.stop_step >= 1 and cb.result['rule'] == 'cp'

def test_compare_validates_before_the_kernel(monkeypatch):
    """Bad step counts and a diverging learning rate are refused before any fine-tuning."""
    import ntk_finetune.compare as C
    called = []
    monkeypatch.setattr(C, 'finetune', lambda *a, **k: called.append(1))
    m = tiny_model('gpt2', dtype=torch.float64)
    with pytest.raises(ValueError, match='steps must be'): compare(m, None, 'toy', steps=0, data=toy(), output_fn=tiny_output_fn())
    with pytest.raises(ValueError, match='diverges'): compare(m, None, 'toy', steps=3, lr=1e6, data=toy(), output_fn=tiny_output_fn())
    with pytest.raises(ValueError, match='n_train must be'): compare(m, None, 'rt-sentiment', n_train=3, steps=3)
    assert not called

def test_finetune_reports_divergence():
    """A learning rate far too large is reported as diverged, not completed."""
    from ntk_finetune.finetune import FinetuneConfig, finetune
    h = finetune(tiny_model('gpt2', dtype=torch.float64), toy(), tiny_output_fn(), FinetuneConfig(params='all', lr=50.0, steps=30), progress=False)
    assert h.stopped.startswith('diverged'), h.stopped

def test_callback_warns_for_adam():
    "Under AdamW (the Trainer's default) the stop is the rule's kernel steps times the study's measured factor."
    from ntk_finetune import compare as C
    from ntk_finetune.evidence import load_evidence, choose_rule
    cb = C.SpectralEarlyStoppingCallback(toy().train, toy().y_train, rule='cp')
    class A: per_device_train_batch_size, gradient_accumulation_steps, learning_rate, optim = 16, 1, 0.05, 'adamw_torch'
    class S: log_history = []
    with pytest.warns(UserWarning, match="median ratio of the best AdamW step"):
        cb.on_train_begin(A(), S(), None, model=tiny_model('llama', kind='classification'))
    f = choose_rule(load_evidence(), None, 'adamw', 'cp')['factor']['median']
    assert cb.result['rule'] == 'cp' and cb.stop_step == max(1, math.ceil(f * cb.result['kernel_steps']))

def test_callback_default_rule_is_the_evidence_choice():
    "Without rule=, the callback stops where the analysis recommends, for the trainer's optimizer, with the evidence."
    from ntk_finetune import compare as C
    import warnings
    d = toy(n=32)
    for optim, want in (('sgd', 'gd'), ('adamw_torch', 'adamw')):
        cb = C.SpectralEarlyStoppingCallback(d.train, d.train['input_ids'][:, 1] % 2, loss='mse')
        class A: per_device_train_batch_size, gradient_accumulation_steps, learning_rate = 32, 1, 0.05
        A.optim = optim
        class S: log_history = []
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            cb.on_train_begin(A(), S(), None, model=tiny_model('llama', kind='classification'))
        rec = cb.analysis.recommended
        assert rec['chosen_by'] == 'evidence' and rec['evidence']['optimizer'] == want
        assert cb.result['rule'] == rec['rule'] and cb.stop_step == max(1, rec['optimizer_steps'])
        assert cb.result['evidence']['runs'] >= 6 and S.log_history[-1]['rule'] == rec['rule']

@pytest.mark.parametrize('loss, run_steps, want', [('auto', 0, {'cross-entropy'}), ('mse', 0, set()),
                                                    ('mse', 1, {'beyond'}), ('ce', 10**9, {'cross-entropy'})])
def test_callback_warns_where_the_conversion_does_not_hold(loss, run_steps, want):
    "Class labels train on cross-entropy unless loss='mse' says otherwise; a stop past the run's max_steps is said."
    from ntk_finetune import compare as C
    import warnings
    d = toy(n=32)
    cb = C.SpectralEarlyStoppingCallback(d.train, d.train['input_ids'][:, 1] % 2, rule='cp', loss=loss)  # learnable
    class A: per_device_train_batch_size, gradient_accumulation_steps, learning_rate, optim = 16, 1, 0.05, 'sgd'
    class S: log_history, max_steps = [], run_steps
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        cb.on_train_begin(A(), S(), None, model=tiny_model('llama', kind='classification'))
    said = {k for k in ('cross-entropy', 'beyond') for x in w if k in str(x.message)}
    assert cb.stop_step > 1 and said == want, [str(x.message) for x in w]
    with pytest.raises(ValueError, match="loss must be 'auto', 'mse' or 'ce'"):
        C.SpectralEarlyStoppingCallback({}, [0, 1], loss='hinge')

def test_linearized_model_restores_the_callers_flags():
    """Wrapping freezes the model (its weights are constants of f_lin), and says so; restore() undoes it exactly."""
    m = tiny_model('gpt2')
    m.transformer.wte.weight.requires_grad_(False)
    before = {n: p.requires_grad for n, p in m.named_parameters()}
    if getattr(m.config, '_attn_implementation', None) not in (None, 'eager'):
        with pytest.raises(ValueError, match='eager attention'): LinearizedModel(m, tiny_output_fn(), 'attention')
        assert {n: p.requires_grad for n, p in m.named_parameters()} == before     # refused before touching it
        m.set_attn_implementation('eager')
    lin = LinearizedModel(m, tiny_output_fn(), 'attention')
    assert not any(p.requires_grad for p in m.parameters())
    lin.restore()
    assert {n: p.requires_grad for n, p in m.named_parameters()} == before

@pytest.mark.parametrize('labels, kind', [([0, 1, 1, 0], 'binary'), ([0, 2, 1, 1], 'multiclass'),
                                          ([0.5, -1.25, 2.0, 0.0], 'regression'), ([1.0, 5.0, 3.0], 'regression')])
def test_callback_reads_the_kind_from_the_labels(labels, kind):
    cb = SpectralEarlyStoppingCallback({}, labels, rule='cp')
    assert cb.kind == kind and len(cb.classes) == {'binary': 2, 'multiclass': 3, 'regression': 0}[kind]

@pytest.mark.parametrize('labels, kw, match', [([-1, 1, 1], {}, 'class ids'), ([0, 2, 1], {'kind': 'binary'}, '0 or 1'),
                                               ([0.5, 1.0], {'kind': 'binary'}, '0 or 1'), ([[0, 1]], {}, 'one per example'),
                                               ([0, 1], {'kind': 'ovr'}, 'kind must be'), ([0, 0, 0], {}, 'one class'),
                                               ([0.0, 2.0, 1.0], {'kind': 'multiclass'}, None)])
def test_callback_refuses_labels_it_would_misread(labels, kw, match):
    "±1 or multi-class labels are not silently turned into 2y − 1 binary targets (whole floats as classes when told)."
    if match is None:
        cb = SpectralEarlyStoppingCallback({}, labels, rule='cp', **kw)
        assert cb.labels.dtype == torch.long and cb.classes == ('0', '1', '2')
        return
    with pytest.raises(ValueError, match=match): SpectralEarlyStoppingCallback({}, labels, rule='cp', **kw)

def test_callback_multiclass_runs_on_a_multi_output_head():
    from ntk_finetune import compare as C
    d = toy(); y = d.y_train + 2 * (d.train['input_ids'][:, 1] % 2)            # four classes
    cb = C.SpectralEarlyStoppingCallback(d.train, y, None, 'all', rule='cp')   # default: the head's C logits
    class A: per_device_train_batch_size, gradient_accumulation_steps, learning_rate = 16, 1, 0.05
    class S: log_history = []
    import transformers
    from ntk_finetune.models import _tiny_config
    cfg = _tiny_config('llama', 32, 2, 4, 128); cfg.num_labels = 4; torch.manual_seed(0)
    cb.on_train_begin(A(), S(), None, model=transformers.AutoModelForSequenceClassification.from_config(cfg).eval())
    assert cb.kind == 'multiclass' and cb.analysis.G.shape == (16 * 3, 16 * 3) and cb.stop_step >= 1   # C − 1 contrasts

def _spearman_by_enumeration(x, y, alternative):
    """Reference: ρ over every pairing of y with x, by brute force (Pearson's r of the ranks, every pairing at once;
    the ranks of a permuted y are its ranks permuted)."""
    import itertools
    from scipy import stats
    rho = stats.spearmanr(x, y).statistic
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    perms = np.array(list(itertools.permutations(ry)))                      # (n!, n)
    dx, dp = rx - rx.mean(), perms - perms.mean(1, keepdims=True)
    null = dp @ dx / np.sqrt((dp ** 2).sum(1) * (dx ** 2).sum())
    assert np.isclose(np.corrcoef(rx, ry)[0, 1], rho, atol=1e-12)           # the formula is scipy's ρ
    eps = 1e-12
    ge, le = np.mean(null >= rho - eps), np.mean(null <= rho + eps)
    return rho, {'greater': ge, 'less': le, 'two-sided': min(1.0, 2 * min(ge, le))}[alternative]

@pytest.mark.parametrize('alternative', ['greater', 'less', 'two-sided'])
@pytest.mark.parametrize('seed', range(4))
def test_spearman_test_exact_against_enumeration(seed, alternative):
    """Up to 8 points the p-value is exact: it equals the brute-force count over all pairings, ties included."""
    from ntk_finetune.compare import spearman_test
    rng = np.random.default_rng(seed); n = 4 + seed
    x = rng.standard_normal(n); y = x + rng.standard_normal(n)
    if seed == 3: y = np.round(y)   # ties in y
    rho, p = spearman_test(x, y, alternative)
    ref_rho, ref_p = _spearman_by_enumeration(x, y, alternative)
    assert rho == pytest.approx(ref_rho, abs=1e-12) and p == pytest.approx(ref_p, abs=1e-12), (p, ref_p)

@pytest.mark.parametrize('alternative', ['greater', 'less', 'two-sided'])
@pytest.mark.parametrize('x, y', [([1, 2, 3, 4], [1, 3, 0, 2]), ([1, 2, 3, 4, 5, 6, 7, 8], [2, 3, 5, 8, 7, 6, 4, 1])])
def test_spearman_test_exact_when_rho_is_zero(x, y, alternative):
    """At ρ = 0 exactly, pairings with ρ = 0 count on both sides (a float statistic splits them by round-off)."""
    from ntk_finetune.compare import spearman_test
    rho, p = spearman_test(x, y, alternative)
    ref_rho, ref_p = _spearman_by_enumeration(x, y, alternative)
    assert abs(rho) < 1e-12 and abs(ref_rho) < 1e-12 and p == pytest.approx(ref_p, abs=1e-12), (p, ref_p)
    assert p >= 0.5

def test_spearman_test_monte_carlo():
    """Beyond 8 points: random pairings, reproducible by seed, never below 1/(R + 1), close to the exact value at 9
    points (the exact one by enumeration of all 9! pairings)."""
    from ntk_finetune.compare import spearman_test
    x = np.arange(9.0); y = np.array([2, 0, 1, 4, 3, 6, 8, 5, 7.0])
    import itertools
    from scipy import stats
    rho = stats.spearmanr(x, y).statistic
    d = np.array([np.sum((x - np.array(q)) ** 2) for q in itertools.permutations(range(9))])  # Σd² of each pairing
    exact = np.mean(1 - 6 * d / (9 * 80) >= rho - 1e-12)
    r1, p1 = spearman_test(x, y, n_resamples=20000, seed=1)
    assert r1 == pytest.approx(rho) and (r1, p1) == spearman_test(x, y, n_resamples=20000, seed=1)
    assert abs(p1 - exact) < 4 * np.sqrt(exact * (1 - exact) / 20000), (p1, exact)
    assert spearman_test(x, x, n_resamples=99)[1] == pytest.approx(1 / 100)

@pytest.mark.parametrize('x, y, match', [([1, 2], [1, 2], r'got shapes \(2,\) and \(2,\)'),
                                         ([1, 2, 3], [1, 2], r'got shapes \(3,\) and \(2,\)'),
                                         ([1, 2, np.nan], [1, 2, 3], 'finite')])
def test_spearman_test_bad_input(x, y, match):
    from ntk_finetune.compare import spearman_test
    with pytest.raises(ValueError, match=match): spearman_test(x, y)
    with pytest.raises(ValueError, match='alternative must be'): spearman_test([1, 2, 3], [1, 2, 3], 'bigger')
    with pytest.raises(ValueError, match='n_resamples must be'): spearman_test([1, 2, 3], [1, 2, 3], n_resamples=0)

def test_compare_past_rules_runs_past_the_latest_rule_within_bounds():
    """With past_rules the run lasts c x the latest rule's step, never less than `steps`, never more than max_steps."""
    d, fn = toy(n=32), tiny_output_fn()
    r = compare(tiny_model('gpt2', dtype=torch.float64), None, 'toy', steps=5, data=d, output_fn=fn, progress=False,
                past_rules=1.5, max_steps=20, eval_every=5)
    assert max(r['predicted_stop_step'].values()) * 1.5 > 20 and r['steps'] == 20 and r['eval_steps'][-1] == 20
    r = compare(tiny_model('llama', dtype=torch.float64), None, 'toy', steps=10, data=toy(n=16), output_fn=fn,
                progress=False, past_rules=1.5, max_steps=50, eval_every=5)
    assert 1.5 * max(r['predicted_stop_step'].values()) <= 10 and r['steps'] == r['steps_min'] == 10

@pytest.mark.parametrize('kw, match', [(dict(past_rules=0.5, max_steps=10), 'past_rules must be >= 1'),
                                       (dict(past_rules=2.0), 'past_rules needs max_steps'),
                                       (dict(past_rules=2.0, max_steps=3), 'past_rules needs max_steps'),
                                       (dict(past_rules='x', max_steps=10), 'past_rules must be a finite number')])
def test_compare_past_rules_bad_input(kw, match):
    with pytest.raises(ValueError, match=match):
        compare(tiny_model('gpt2'), None, 'toy', steps=5, data=toy(), output_fn=tiny_output_fn(), **kw)

class _Killed(Exception): pass

def _dies_at(fn, k):
    "`fn` (the same output, by name), raising at its k-th call: a process killed midway."
    calls = []
    def f(model, batch):
        calls.append(1)
        if len(calls) == k: raise _Killed
        return fn(model, batch)
    f.name, f.calls = fn.name, calls
    return f

def _same_history(a, b):
    keys = ('steps', 'train_loss', 'train_acc', 'val_loss', 'test_loss', 'displacement', 'best_step', 'stopped')
    assert all(getattr(a, k) == getattr(b, k) for k in keys), [k for k in keys if getattr(a, k) != getattr(b, k)]
    assert all(torch.equal(x, y) for x, y in zip(a.probe_train + a.probe_test, b.probe_train + b.probe_test))

def _fake_seconds(ck, seconds=1e6):
    "Mark the checkpoint's time spent, so that a run can tell it took up from it."
    s = load_checkpoint(ck)
    save_checkpoint({**s, 'seconds': seconds}, ck)

@pytest.mark.parametrize('cfg', [dict(optimizer='sgd', batch_size=4, lr=0.005),
                                 dict(optimizer='adamw', loss='ce', lr=2e-3, restore_best=True),
                                 dict(optimizer='adamw', lr=2e-3, patience=3)])
@pytest.mark.parametrize('kill', [12, 16, 'last'])
def test_killed_run_resumes_to_the_same_history_and_weights(tmp_path, cfg, kill):
    """A mini-batch or AdamW run killed midway (or in its last evaluation) and resumed from its checkpoint ends exactly
    where an uninterrupted run ends: the batch order, the optimizer's moments, the best weights and the patience count
    are in the checkpoint."""
    cfg, fn, ck = FinetuneConfig(params='all', steps=14, eval_every=2, **cfg), tiny_output_fn(), tmp_path / 'c.safetensors'
    m0, count = tiny_model('gpt2', dtype=torch.float64), _dies_at(fn, 0)
    h0 = finetune(m0, toy(), count, cfg, progress=False)
    if cfg.patience: assert h0.stopped.startswith('early stopping') and h0.steps[-1] < 14
    if cfg.restore_best: assert h0.best_step < 14   # the weights it ends with are restored ones
    with pytest.raises(_Killed):
        dies = _dies_at(fn, len(count.calls) if kill == 'last' else kill)
        finetune(tiny_model('gpt2', dtype=torch.float64), toy(), dies, cfg, progress=False, checkpoint=ck,
                 checkpoint_every=3)
    at = load_checkpoint(ck)['step']
    assert 0 < at <= h0.steps[-1] and (kill != 'last' or cfg.patience or at == 14)
    m1 = tiny_model('gpt2', dtype=torch.float64)
    h1 = finetune(m1, toy(), fn, cfg, progress=False, checkpoint=ck, checkpoint_every=3)
    assert h1.resumed['step'] == at
    _same_history(h1, h0)
    assert all(torch.equal(a, b) for a, b in zip(m0.parameters(), m1.parameters()))

def test_longer_run_continues_a_finished_one(tmp_path):
    "7 steps, then 12 from the 7-step run's checkpoint: the history of 12 steps from the start (7 is off the grid)."
    fn, ck, d = tiny_output_fn(), tmp_path / 'c.safetensors', toy()
    cfg = lambda steps: FinetuneConfig(params='all', lr=0.005, steps=steps, eval_every=2)
    finetune(tiny_model('gpt2', dtype=torch.float64), d, fn, cfg(7), progress=False, checkpoint=ck)
    _fake_seconds(ck)
    h = finetune(tiny_model('gpt2', dtype=torch.float64), d, fn, cfg(12), progress=False, checkpoint=ck)
    assert h.resumed['step'] == 7 and h.seconds > 1e6 and h.steps == [0, 2, 4, 6, 8, 10, 12]
    _same_history(h, finetune(tiny_model('gpt2', dtype=torch.float64), d, fn, cfg(12), progress=False))

def test_checkpoint_keeps_kernels_and_refuses_what_it_cannot_resume(tmp_path):
    fn, ck = tiny_output_fn(), tmp_path / 'c.safetensors'
    kfn = lambda m, p: empirical_ntk(m, toy().train, fn, p, progress=False)
    run = lambda cfg, m=None, out=fn, k=kfn: finetune(m or tiny_model('llama', dtype=torch.float64), toy(), out, cfg,
                                                      progress=False, kernel_fn=k, checkpoint=ck)
    h = run(FinetuneConfig(params='attention', lr=0.005, steps=6, kernel_steps=(0, 6)))
    longer = FinetuneConfig(params='attention', lr=0.005, steps=10, kernel_steps=(0, 10))
    _fake_seconds(ck)
    h2 = run(longer)   # continues the finished run from its checkpoint, with its kernel at step 0
    assert h2.seconds > 1e6 and sorted(h2.kernels) == [0, 10] and torch.equal(h2.kernels[0], h.kernels[0])
    assert run(longer, k=None).kernels == {}   # no kernel function: no kernels, as in a run without a checkpoint
    with pytest.raises(CheckpointMismatch, match=r'no kernel at steps \[3\]'):
        run(FinetuneConfig(params='attention', lr=0.005, steps=10, kernel_steps=(3,)))
    m = tiny_model('llama', dtype=torch.float64)
    with torch.no_grad(): next(m.parameters()).add_(1.0)   # a frozen (embedding) weight: another starting point
    with pytest.raises(CheckpointMismatch, match='another run'):
        run(longer, m)
    with pytest.raises(CheckpointMismatch, match='another run'):   # another output: other label words
        run(longer, out=tiny_output_fn(3))
    with pytest.raises(ValueError, match='checkpoint_every must be an integer >= 1'):
        finetune(m, toy(), fn, longer, progress=False, checkpoint=ck, checkpoint_every=0)
    ck.write_bytes(b'truncated')
    with pytest.raises(CheckpointMismatch, match='cannot be read'):
        run(longer)
    keys = dict(config={}, run='', step=0, params={}, optimizer={}, generator=None, history={}, best=None, bad=0,
                first=None, seconds=0.0)
    for other, lacks in (({'step': 3}, 'config, run, '), ([1, 2], 'config, run, '), ({**keys, 'config': 1}, 'config and'),
                         (keys, 'history of kernels')):   # a readable file of something else: no KeyError, what it lacks
        save_checkpoint(other, ck)
        with pytest.raises(CheckpointMismatch, match=r'not a fine-tuning checkpoint of this version \(no ' + lacks):
            run(longer)

def test_restart_on_mismatch_replaces_the_checkpoint_with_the_new_run(tmp_path):
    "on_mismatch='restart': an unreadable checkpoint gives the fresh run's history, with a warning, and is replaced."
    fn, ck, d = tiny_output_fn(), tmp_path / 'c.safetensors', toy()
    cfg = FinetuneConfig(params='all', lr=0.005, steps=6, eval_every=2)
    fresh = finetune(tiny_model('gpt2', dtype=torch.float64), d, fn, cfg, progress=False)
    ck.write_bytes(b'truncated')
    with pytest.warns(CheckpointRestart, match='cannot be read.*starting over'):
        h = finetune(tiny_model('gpt2', dtype=torch.float64), d, fn, cfg, progress=False, checkpoint=ck,
                     on_mismatch='restart')
    assert h.resumed is None
    _same_history(h, fresh)
    assert load_checkpoint(ck)['step'] == 6   # the file holds the new run, which the next call resumes
    assert finetune(tiny_model('gpt2', dtype=torch.float64), d, fn, cfg, progress=False,
                    checkpoint=ck).resumed['step'] == 6

@pytest.mark.parametrize('f', ['finetune', 'compare'])
def test_on_mismatch_takes_raise_or_restart(tmp_path, f, monkeypatch):
    "A misspelt on_mismatch is refused in one line before any work (in `compare`, before its kernels)."
    import ntk_finetune.compare as C
    def ran(*a, **k): raise AssertionError('work started before on_mismatch was checked')
    for nm in ('analyze_sample', 'empirical_ntk', 'prepare_task', 'finetune'): monkeypatch.setattr(C, nm, ran)
    d, fn = toy(), tiny_output_fn()
    m = tiny_model('gpt2', dtype=torch.float64)
    call = (lambda: finetune(m, d, fn, FinetuneConfig(steps=2), progress=False, on_mismatch='ignore')) if f == 'finetune' \
        else (lambda: compare(m, None, 'toy', steps=2, data=d, output_fn=fn, progress=False, on_mismatch='ignore'))
    with pytest.raises(ValueError, match="on_mismatch must be 'raise' or 'restart', got 'ignore'"):
        call()

def test_compare_resumes_its_network_run(tmp_path):
    "`compare` with a checkpoint gives the result of an uninterrupted `compare`, and counts the time spent before."
    d, fn, ck = toy(), tiny_output_fn(), tmp_path / 'c.safetensors'
    kw = dict(steps=8, lr=0.002, data=d, output_fn=fn, progress=False, drift_steps=(), eval_every=2)
    r0 = compare(tiny_model('llama', dtype=torch.float64), None, 'toy', **kw)
    with pytest.raises(_Killed):
        compare(tiny_model('llama', dtype=torch.float64), None, 'toy', **{**kw, 'output_fn': _dies_at(fn, 12)},
                checkpoint=ck, checkpoint_every=2)
    _fake_seconds(ck)
    r1 = compare(tiny_model('llama', dtype=torch.float64), None, 'toy', **kw, checkpoint=ck, checkpoint_every=2)
    assert r1['test_loss'] == r0['test_loss'] and r1['predicted_stop_step'] == r0['predicted_stop_step']
    assert r1['seconds'] > 1e6


def test_compare_spec_is_validated_once_and_keyed():
    "CompareSpec validates at construction (the same one-line errors compare gives) and keys runs by their values."
    from ntk_finetune.compare import CompareSpec
    for kw, msg in ((dict(steps=0), 'steps must be an integer >= 1'), (dict(on_mismatch='x'), 'on_mismatch must be'),
                    (dict(past_rules=2.0), 'past_rules needs max_steps'), (dict(past_rules=0.5, max_steps=99), '>= 1')):
        with pytest.raises(ValueError, match=msg):
            CompareSpec(**kw)
    assert CompareSpec().key() == CompareSpec(lr=None).key() != CompareSpec(seed=1).key()
    s = CompareSpec(lr=np.float32(0.5))
    assert type(s.lr) is float and s.lr == 0.5 and CompareSpec.from_dict(s.to_dict()) == s


@pytest.mark.parametrize('labels, kind, C', [([0, 1, 1, 0], 'binary', 2), ([0, 2, 1, 0], 'multiclass', 3),
                                             ([0.5, 1.5, 0.1, 2.0], 'regression', 0)])
def test_task_data_is_a_sample_with_a_validation_split(labels, kind, C):
    "One container: TaskData builds a Sample; fine-tuning's names read and write the sample's fields."
    from ntk_finetune.sample import Sample
    b = {'input_ids': torch.ones(4, 3, dtype=torch.long)}
    y = torch.tensor(labels)
    d = TaskData(b, y, b, y.clone(), b, y.clone(), task='t')
    assert isinstance(d, Sample) and (d.kind, d.num_classes, d.task, d.n) == (kind, C, 't', 4)
    assert d.y_train is d.labels and d.y_val is d.val_labels and d.y_test is d.test_labels
    d.y_train = y + 0
    assert d.labels is d.y_train and d.description == 't'
