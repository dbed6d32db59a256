import math, warnings
import numpy as np, pytest, torch, datasets
from ntk_finetune import analyze, Analysis
from ntk_finetune.analysis import RULES, analyze_sample, make_sample, stopping_steps
from ntk_finetune.data import load_task
from ntk_finetune.models import tiny_model, load_model
from ntk_finetune.outputs import tiny_output_fn

def test_top_level_names():
    import ntk_finetune as nf
    for k in ('analyze', 'Analysis', 'load_model', 'load_task', 'empirical_ntk', 'tokenize', 'FinetuneConfig', 'TaskVector'):
        assert callable(getattr(nf, k)), k

def test_minilm_loaded_with_head(minilm):
    """An encoder with a new head (setting 2), passed as a loaded (model, tokenizer)."""
    model, tok = minilm
    a = analyze((model, tok), 'sms-spam', n=8, n_test=4, max_length=24, progress=False)
    assert a.settings['head'] == 'new' and a.G.shape == (8, 8) and a.settings['output_fn'] == 'head_scalar'
    assert set(a.stops) == set(RULES)

def test_schedule_matches_the_stop():
    g = torch.Generator().manual_seed(1); tb = {'input_ids': torch.randint(1, 128, (16, 6), generator=g)}
    y = torch.arange(16) % 2
    m = tiny_model('llama', kind='classification', dtype=torch.float64)
    a = analyze((m, None), tb, labels=y, lr=0.01, batch_size=4, progress=False)
    for r, t in a.stops.items():
        s = a.schedule[r]
        assert s['optimizer_steps'] == math.ceil(a.step_size * t / 0.01) and s['epochs'] == s['optimizer_steps'] * 4 / 16

@pytest.mark.parametrize('bad, match', [
    (dict(text_column='body'), "column 'body' is not in the dataset"),
    (dict(label_words=(' bad', ' forsale')), "' forsale' is not"),
    (dict(n=200), 'fewer than n \\+ n_test'),
    (dict(n=3), 'n must be an integer >= 4'),
    (dict(head='other'), 'head must be one of'),
    (dict(multiclass='all'), "multiclass must be 'joint' or 'ovr'"),
    (dict(params=r'^nothing$'), 'selects no parameters'),
])
def test_bad_input_one_line_before_the_kernel(smollm2, bad, match, monkeypatch):
    import ntk_finetune.analysis as A
    monkeypatch.setattr(A, 'train_test_ntk', lambda *a, **k: pytest.fail('the kernel was computed'))
    rt = load_task('rt-sentiment', 'train', n=40, seed=3)
    ds = datasets.Dataset.from_dict({'review': rt['text'], 'stars': ['good' if l else 'bad' for l in rt['label']]})
    kw = dict(text_column='review', label_column='stars', label_words=(' bad', ' good'), n=8, n_test=8, progress=False)
    with pytest.raises(ValueError, match=match) as e: analyze(smollm2, ds, **{**kw, **bad})
    assert '\n' not in str(e.value)

@pytest.mark.parametrize('bad, match', [
    (dict(text_column='body'), "column 'body' is not in the dataset"),
    (dict(label_words=(' bad', ' forsale')), "' forsale' is not"),
    (dict(label_words=(' bad', ' good', ' fine')), '3 label words for 2 classes'),
    (dict(label_words=None), 'needs label_words'),
    (dict(n=200), 'fewer than n \\+ n_test'),
])
def test_model_by_name_fails_before_its_weights_load(bad, match, monkeypatch):
    "With the model given by name, what the data decides is checked with the tokenizer alone: no weights are loaded."
    import ntk_finetune.targets as A  # model_for_sample loads the weights
    monkeypatch.setattr(A, 'load_model', lambda *a, **k: pytest.fail('the weights were loaded'))
    rt = load_task('rt-sentiment', 'train', n=40, seed=3)
    ds = datasets.Dataset.from_dict({'review': rt['text'], 'stars': ['good' if l else 'bad' for l in rt['label']]})
    kw = dict(text_column='review', label_column='stars', label_words=(' bad', ' good'), n=8, n_test=8, progress=False)
    with pytest.raises(ValueError, match=match) as e: analyze('smollm2-135m', ds, **{**kw, **bad})
    assert '\n' not in str(e.value)

def test_regression_with_label_words_and_base_model_are_refused(monkeypatch):
    g = torch.Generator().manual_seed(0); tb = {'input_ids': torch.randint(1, 128, (8, 5), generator=g)}
    with pytest.raises(ValueError, match='regression target cannot use label-word'):
        analyze((tiny_model('llama'), None), tb, labels=torch.linspace(0, 1, 8), progress=False)
    with pytest.raises(ValueError, match='neither an LM head'):
        analyze((tiny_model('llama', kind='base'), None), tb, labels=torch.arange(8) % 2, progress=False)

def test_long_prompts_are_capped_at_the_positions():
    """A max_length beyond the model's positions is capped (GPT-2 tiny: 64), with a warning."""
    class Tok:
        pad_token_id = 0
        def __call__(self, texts, **kw):
            enc = lambda t: [1 + (len(w) % 100) for w in t.split()]
            return {'input_ids': enc(texts) if isinstance(texts, str) else [enc(t) for t in texts]}
    ds = datasets.Dataset.from_dict({'text': [' '.join(['word'] * (100 + i)) for i in range(12)], 'label': [i % 2 for i in range(12)]})
    clf = tiny_model('gpt2', kind='classification')
    with pytest.warns(UserWarning, match='exceeds the model.s 64 positions'):
        a = analyze((clf, Tok()), ds, n=6, n_test=4, max_length=512, progress=False)
    assert a.settings['T'] <= 64

def test_multiclass_joint_equals_contrasts_of_the_multi_output_kernel():
    from ntk_finetune.entk import empirical_ntk
    from ntk_finetune.outputs import HeadOutput
    from ntk_finetune.analysis import helmert
    m = tiny_model('gpt2', kind='classification', dtype=torch.float64); m.score = torch.nn.Linear(32, 4, bias=False).double()
    tb = {'input_ids': torch.randint(1, 128, (8, 5), generator=torch.Generator().manual_seed(2))}
    a = analyze((m, None), tb, labels=torch.arange(8) % 4, progress=False)
    G4 = empirical_ntk(m, tb, HeadOutput(multi=True), 'attention', progress=False)        # (8, 8, 4, 4)
    Q = helmert(4); J = torch.einsum('ao,ijop,bp->iajb', Q, G4, Q).reshape(24, 24)
    torch.testing.assert_close(a.G, J)
    assert a.curves['train_accuracy'][0] == float(((a.f0.reshape(8, 3) @ Q).argmax(1) == a.labels).double().mean())

def test_analysis_load_errors(tmp_path):
    with pytest.raises(ValueError, match='holds no analysis'): Analysis.load(tmp_path)
    (tmp_path / 'analysis.json').write_text('{"trunc'); (tmp_path / 'analysis.safetensors').write_bytes(b'x')
    with pytest.raises(ValueError, match='unreadable'): Analysis.load(tmp_path)

# ---- GPU (run by `make gpu-check` on a machine with CUDA)
gpu = pytest.mark.gpu

@gpu
def test_gpu_analyze_and_demo():
    a = analyze('smollm2-135m', 'rt-sentiment', n=16, n_test=16, max_length=32, device='cuda', progress=False)
    assert a.settings['device'].startswith('cuda') and set(a.stops) == set(RULES)

@gpu
def test_gpu_cli_analyze_writes_the_report(tmp_path):
    """The main job on a GPU: `ntk-finetune analyze --device cuda` (what `make demo` runs, smaller)."""
    from ntk_finetune import cli
    from ntk_finetune.core import load_json
    assert cli.main(['analyze', '--n', '16', '--n-test', '16', '--max-length', '32', '--device', 'cuda',
                     '--out', str(tmp_path / 'r')]) == 0
    mt = load_json(tmp_path / 'r' / 'metrics.json')
    assert (tmp_path / 'r' / 'report.html').exists() and mt['settings']['device'].startswith('cuda')

@gpu
def test_gpu_kernel_matches_float64_reference():
    from ntk_finetune.entk import empirical_ntk
    from ntk_finetune.outputs import make_output_fn, tokenize
    from ntk_finetune.data import task_info
    model, tok = load_model('smollm2-135m', device='cuda')
    info = task_info('rt-sentiment'); b = tokenize(tok, load_task('rt-sentiment', 'train', n=8, seed=0)['text'], 32, info.template)
    fn = make_output_fn(model, tok, info)
    G = empirical_ntk(model, b, fn, 'attention', progress=False)
    m64, _ = load_model('smollm2-135m', device='cuda', dtype=torch.float64)
    R = empirical_ntk(m64, b, make_output_fn(m64, tok, info), 'attention', method='reference', progress=False)
    assert float((G - R).abs().max()) <= 1e-5 * float(R.abs().max())
    for ac in (torch.bfloat16, torch.float16):
        H = empirical_ntk(model, b, fn, 'attention', autocast=ac, progress=False)
        assert float((H - R).abs().max()) <= 5e-2 * float(R.abs().max())

@gpu
def test_gpu_finetune_two_steps():
    from ntk_finetune.finetune import prepare_task, finetune, FinetuneConfig
    from ntk_finetune.outputs import make_output_fn
    model, tok = load_model('smollm2-135m', device='cuda')
    d = prepare_task(tok, 'rt-sentiment', 8, 4, 4, 32)
    h = finetune(model, d, make_output_fn(model, tok, 'rt-sentiment'), FinetuneConfig(steps=2, lr=1e-3), progress=False)
    assert h.stopped == 'completed' and len(h.train_loss) == 3

def test_tokenized_batch_bad_test_labels_and_multi_are_refused(monkeypatch):
    import ntk_finetune.analysis as A
    monkeypatch.setattr(A, 'train_test_ntk', lambda *a, **k: pytest.fail('the kernel was computed'))
    g = torch.Generator().manual_seed(0); tb = {'input_ids': torch.randint(1, 128, (8, 5), generator=g)}
    m = (tiny_model('llama', kind='classification', dtype=torch.float64), None)
    with pytest.raises(ValueError, match='class ids of the training classes 0..1'):
        analyze(m, tb, labels=torch.arange(8) % 2, test_data=tb, test_labels=torch.arange(8) % 3, progress=False)
    with pytest.raises(ValueError, match="multi is set by the analysis"):
        analyze(m, tb, labels=torch.arange(8) % 2, multi=True, progress=False)

def test_metrics_json_is_strict_with_an_infinite_condition_number(tmp_path):
    import json
    from ntk_finetune.report import write_report
    g = torch.Generator().manual_seed(0); tb = {'input_ids': torch.randint(1, 128, (8, 5), generator=g)}
    a = analyze((tiny_model('llama', kind='classification', dtype=torch.float64), None), tb, labels=torch.arange(8) % 2,
                progress=False)
    a.spectrum['condition_number'] = math.inf                                   # λ_n clipped to 0
    write_report(a, tmp_path, history={'steps': [0, 1], 'stopped': 'completed', 'oracle_best_step': 1,
                                      'train_loss': [1.0, 0.5], 'test_loss': [1.0, 0.7], 'test_acc': [0.5, 0.6]})
    bad = lambda c: pytest.fail(f'{c} in metrics.json')
    m = json.loads((tmp_path / 'metrics.json').read_text(), parse_constant=bad)
    assert m['spectrum']['condition_number'] is None
    assert 'hold-out best step' not in (tmp_path / 'report.html').read_text()

def test_learning_curve_prediction_needs_a_scalar_output():
    from ntk_finetune.analysis import predict_learning_curve
    g = torch.Generator().manual_seed(0); tb = {'input_ids': torch.randint(1, 128, (9, 5), generator=g)}
    m = tiny_model('llama', kind='classification', dtype=torch.float64)
    m.score = torch.nn.Linear(m.config.hidden_size, 3, bias=False, dtype=torch.float64)   # a three-class head
    m.num_labels = m.config.num_labels = 3
    a = analyze((m, None), tb, labels=torch.arange(9) % 3, progress=False)            # joint: 2 contrasts per example
    with pytest.raises(ValueError, match="multiclass='ovr'"): predict_learning_curve(a, [16])

def test_device_and_load_kwargs_of_a_loaded_model():
    """A loaded model is never moved: a `device` it is not on is a one-line error; load keywords need a model name.
    A BatchEncoding from the user's own tokenizer is taken as a batch."""
    from transformers import BatchEncoding
    g = torch.Generator().manual_seed(1); tb = {'input_ids': torch.randint(1, 128, (8, 6), generator=g)}
    m = tiny_model('llama', kind='classification')
    y = torch.arange(8) % 2
    # on a CPU machine get_device says CUDA is missing; with CUDA, the mismatch itself is the error
    with pytest.raises(ValueError, match=r'(CUDA is not available|the model is on cpu, not cuda:1.*move it first)'):
        analyze((m, None), tb, labels=y, device='cuda:1', progress=False)
    with pytest.raises(ValueError, match='load_kwargs .*revision.* model loaded by name'):
        analyze((m, None), tb, labels=y, load_kwargs={'revision': 'main'}, progress=False)
    be = BatchEncoding({**tb, 'attention_mask': torch.ones(8, 6, dtype=torch.long)})
    a, b = (analyze((m, None), x, labels=y, device='cpu', progress=False) for x in (be, tb))
    assert torch.equal(a.G, b.G)

def test_load_kwargs_reach_from_pretrained(monkeypatch):
    """analyze(name, load_kwargs=...) hands them to load_model, hence to from_pretrained."""
    import ntk_finetune.targets as A  # model_for_sample loads the weights
    seen = {}
    def fake_load(name, kind, **kw):
        seen.update(kw); raise ValueError('stop here')
    monkeypatch.setattr(A, 'load_model', fake_load)
    with pytest.raises(ValueError, match='stop here'):
        analyze('smollm2-135m', 'rt-sentiment', head='lm', load_kwargs={'revision': 'v1', 'trust_remote_code': True})
    assert seen['revision'] == 'v1' and seen['trust_remote_code'] is True

@pytest.mark.filterwarnings('ignore:Cp is smallest at the horizon')
def test_learning_curve_rows_record_their_horizon():
    "A row's horizon is the path's last step, max(the horizon asked, the rules' steps); the oracle's step lies within it."
    from ntk_finetune.analysis import learning_curve
    rng = np.random.default_rng(0)
    x = np.sort(rng.uniform(size=80))
    G, y = np.minimum(x[:, None], x[None, :]), np.abs(x - 0.5) - 0.25 + 0.3 * rng.standard_normal(80)
    tr, te = np.arange(0, 80, 2), np.arange(1, 80, 2)
    rows = learning_curve(G[np.ix_(tr, tr)], y[tr], np.zeros(40), G[np.ix_(te, tr)], y[te], np.zeros(40), [16, 40],
                          seeds=[0, 1], horizon=30)
    for r in rows:
        steps = [r[f'{q}_step'] for q in ('rwy', 'cp', 'discrepancy') if r[f'{q}_step'] is not None]
        assert r['horizon'] == max([30] + steps) and 0 <= r['oracle_step'] <= r['horizon'], r


@pytest.fixture(scope='module')
def tiny_sketch_task():
    "A tiny float64 classifier, 16 training and 8 test examples (tokenized), and analyze's keywords for them."
    g = torch.Generator().manual_seed(2)
    tb, tt = ({'input_ids': torch.randint(1, 128, (k, 6), generator=g)} for k in (16, 8))
    m = tiny_model('llama', kind='classification', dtype=torch.float64)
    return m, tb, dict(labels=torch.arange(16) % 2, test_data=tt, test_labels=torch.arange(8) % 2, progress=False)


def test_a_sketch_that_projects_nothing_gives_the_exact_analysis(tiny_sketch_task):
    m, tb, kw = tiny_sketch_task
    ex = analyze((m, None), tb, **kw)
    sk = analyze((m, None), tb, method='sketch', sketch_dim=10**7, sketch_kind='kronecker', **kw)
    assert sk.settings['kernel_method'] == 'sketch' and sk.settings['sketch']['exact']
    torch.testing.assert_close(sk.G, ex.G, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(sk.G_test, ex.G_test, rtol=1e-9, atol=1e-12)
    assert sk.stops == ex.stops and 'kernel_method' not in ex.settings


@pytest.mark.parametrize('kind', ['countsketch', 'kronecker'])
def test_a_sketch_is_recorded_and_nearer_as_it_grows(tiny_sketch_task, kind):
    m, tb, kw = tiny_sketch_task
    ex = analyze((m, None), tb, **kw)
    err = {}
    for k in (256, 4096):
        sk = analyze((m, None), tb, method='sketch', sketch_dim=k, sketch_seed=3, sketch_kind=kind, **kw)
        s = sk.settings['sketch']
        assert not s['exact'] and (s['seed'], s['kind'], s['requested']) == (3, kind, k) and s['dim'] <= k
        err[k] = float(torch.linalg.norm(sk.G - ex.G) / torch.linalg.norm(ex.G))
    assert 0 < err[4096] < err[256], err


@pytest.mark.parametrize('kw, match', [
    (dict(method='sketch', cache_dir='x'), "method='sketch' takes sketch_dim, sketch_seed, sketch_kind and block_size, "
                                           "not cache_dir"),
    (dict(sketch_dim=64), "sketch_dim, sketch_seed and sketch_kind are for method='sketch'"),
    (dict(method='sketch', sketch_kind='dense'), "kind must be one of countsketch, kronecker"),
])
def test_sketch_keywords_are_checked(tiny_sketch_task, kw, match):
    m, tb, base = tiny_sketch_task
    with pytest.raises(ValueError, match=match):
        analyze((m, None), tb, **base, **kw)
