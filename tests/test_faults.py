"""Bad input, faults and interruption across the public API: every case gives a correct result or a one-line error,
leaves nothing half-written, and never loads a tampered file. (The command line's one-line errors are in test_cli.)"""
import json, math, os, signal, subprocess, sys, textwrap, time
from pathlib import Path
import datasets, numpy as np, pytest, torch
from ntk_finetune.analysis import analyze, Analysis
from ntk_finetune.entk import empirical_ntk, CacheError
from ntk_finetune.models import tiny_model, load_tokenizer
from ntk_finetune.outputs import tiny_output_fn

WORDS = (' bad', ' good')


@pytest.fixture(scope='module')
def lm():
    "A tiny random Llama on SmolLM2's real tokenizer: real text in, a kernel in about a second."
    import transformers
    tok = load_tokenizer('smollm2-135m')
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256,
                                   pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).eval(), tok


@pytest.fixture(scope='module')
def reg(lm):
    "The same tiny Llama with a new regression head."
    import transformers
    cfg = transformers.LlamaConfig(**{**lm[0].config.to_dict(), 'num_labels': 1, 'problem_type': 'regression'})
    return transformers.LlamaForSequenceClassification(cfg).eval(), lm[1]


def dataset(texts=None, labels=None, n=24):
    texts = [f'review number {i} was {"good" if i % 2 else "bad"}' for i in range(n)] if texts is None else texts
    labels = [i % 2 for i in range(len(texts))] if labels is None else labels
    return datasets.Dataset.from_dict({'text': texts, 'label': labels})


def one_line(fn, exc=ValueError, match=''):
    with pytest.raises(exc) as e:
        fn()
    msg = str(e.value)
    assert '\n' not in msg and match in msg, msg
    return msg


def run(lm, data, **kw):
    return analyze(lm, data, **{'label_words': WORDS, 'n': 8, 'progress': False, **kw})


# ---- data: each a one-line error before the kernel, or a correct result
BAD_DATA = {
    'nan regression target': (lambda: dataset(labels=[0.5, float('nan')] * 12), dict(kind='regression'), 'missing'),
    'inf regression target': (lambda: dataset(labels=[0.5, float('inf')] * 12), dict(kind='regression'),
                              'not finite'),
    'missing class label': (lambda: dataset(labels=[0, 1, None] * 8), {}, 'missing'),
    'one class': (lambda: dataset(labels=[1] * 24), {}, 'has 1 class'),
    'empty dataset': (lambda: dataset(texts=[], labels=[]), {}, 'no rows'),
    'text None': (lambda: dataset(texts=['fine text', None] + ['fine text'] * 22), {}, 'text 1 '),
    'a number as text': (lambda: dataset(texts=[3.5] * 24), {}, 'not a string'),
    'empty text': (lambda: dataset(texts=[''] * 24), dict(template=None), 'empty after tokenization'),
    'dataset smaller than n': (lambda: dataset(n=6), {}, 'lower n (--n)'),
    'n_test larger than what is left': (lambda: dataset(n=24), dict(n_test=20), 'n_test (--n-test)'),
    'unknown text column': (lambda: dataset(), dict(text_column='body'), "column 'body'"),
    'template without a slot': (lambda: dataset(), dict(template='no slot here'), "'{text}'"),
    'label word of two tokens': (lambda: dataset(), dict(label_words=(' bad', ' forsale')), "' forsale' is not"),
    'unknown rule': (lambda: dataset(), dict(rules=('oracle',)), "unknown rule 'oracle'"),
    'step size nan': (lambda: dataset(), dict(step_size=float('nan')), 'step_size'),
    'step size past 2/λ1': (lambda: dataset(), dict(step_size=1e9), 'diverges'),
    'lr inf': (lambda: dataset(), dict(lr=float('inf')), 'lr'),
    'batch size 0': (lambda: dataset(), dict(batch_size=0), 'batch_size'),
    'max_length 0': (lambda: dataset(), dict(max_length=0), 'max_length'),
    'params matching nothing': (lambda: dataset(), dict(params=r'^nothing$'), 'selects no parameters'),
    'kind unknown': (lambda: dataset(), dict(kind='ordinal'), 'kind must be'),
    'memory budget of one byte': (lambda: dataset(), dict(memory_budget=1), 'too small for one example'),
    'block size 0': (lambda: dataset(), dict(block_size=0), 'block_size'),
}


@pytest.mark.parametrize('case', list(BAD_DATA))
def test_bad_data_is_one_line(lm, reg, case, monkeypatch):
    import ntk_finetune.analysis as A
    monkeypatch.setattr(A, 'train_test_ntk', lambda *a, **k: pytest.fail('the kernel was computed'))
    make, kw, match = BAD_DATA[case]
    heavy = case in ('memory budget of one byte', 'block size 0', 'step size past 2/λ1')  # found by the kernel itself
    if heavy:
        monkeypatch.undo()
    one_line(lambda: run(reg if kw.get('kind') == 'regression' else lm, make(), **kw), (ValueError, TypeError), match)


GOOD_TEXTS = {
    'unicode': ['😀 très bien, 很好 — גוד', 'mauvais 👎 很差', 'Ünïcödé ñ ẞ', 'e\u0301 combining'] * 6,
    'huge texts': ['great ' * 40_000, 'awful ' * 30_000] * 12,
    'braces and newlines': ['{text} {0} }{', 'line one\nline two\r\n\ttab'] * 12,
    'whitespace only': ['   ', '\t'] * 12,
}


@pytest.mark.parametrize('case', list(GOOD_TEXTS))
def test_odd_texts_give_a_correct_kernel(lm, case):
    "Odd but valid text: a finite PSD kernel, prompts within max_length, and the small-data default for n_test."
    a = run(lm, dataset(texts=GOOD_TEXTS[case]), max_length=24)
    assert torch.isfinite(a.G).all() and a.G.shape == (8, 8) and float(torch.linalg.eigvalsh(a.G).min()) > -1e-6
    assert a.settings['T'] <= 24 and a.settings['n_test'] == 16 and a.settings['sample_notes']


def test_small_dataset_takes_what_is_left_and_says_so(lm, tmp_path):
    from ntk_finetune.report import write_report
    a = run(lm, dataset(n=20))  # n = 8 leaves 12 for the test set (the default is 64)
    assert a.settings['n_test'] == 12 and 'n_test = 12' in a.settings['sample_notes'][0]
    write_report(a, tmp_path)
    assert 'n_test = 12' in (tmp_path / 'report.html').read_text()


# ---- tokenized batches and output functions
def tiny_batch(n=4, T=6):
    return {'input_ids': torch.randint(1, 128, (n, T), generator=torch.Generator().manual_seed(0)),
            'attention_mask': torch.ones(n, T, dtype=torch.long)}


def bad_batch(k):
    b = tiny_batch()
    if k == 'vocab':
        b['input_ids'][0, 0] = 10_000
    elif k == 'negative':
        b['input_ids'][1, 2] = -3
    elif k == 'mask of 2':
        b['attention_mask'][0, 0] = 2
    elif k == 'empty':
        b = {kk: v[:0] for kk, v in b.items()}
    elif k == 'float ids':
        b['input_ids'] = b['input_ids'].double()
    return b


@pytest.mark.parametrize('k, match', [('vocab', 'outside the vocabulary'), ('negative', 'outside the vocabulary'),
                                      ('mask of 2', '0/1'), ('empty', 'non-empty'), ('float ids', 'integer')])
def test_bad_batches_are_one_line(k, match):
    m = tiny_model('gpt2', dtype=torch.float64)
    one_line(lambda: empirical_ntk(m, bad_batch(k), tiny_output_fn(), progress=False), (ValueError, TypeError), match)


@pytest.mark.parametrize('value', [float('nan'), float('inf')])
def test_non_finite_output_is_one_line(value):
    m = tiny_model('gpt2', dtype=torch.float64)
    b = tiny_batch()
    b['attention_mask'][1, -1] = 0  # example 1 is the only one of length 5
    fn = lambda mm, bb: mm(**bb).logits[:, -1, 3] + torch.where(bb['attention_mask'].sum(1) == 5, value, 0.0)
    one_line(lambda: empirical_ntk(m, b, fn, progress=False), ValueError, 'non-finite values for example 1')


@pytest.mark.parametrize('fn, exc, match', [
    (lambda mm, b: mm(**b).logits[:, -1, :3].reshape(-1), ValueError, 'output_fn must return'),
    ('not callable', TypeError, 'output_fn must be callable'),
])
def test_bad_output_functions_are_one_line(fn, exc, match):
    m = tiny_model('gpt2', dtype=torch.float64)
    one_line(lambda: empirical_ntk(m, tiny_batch(), fn, progress=False), exc, match)


@pytest.mark.parametrize('labels, match', [([0.0, float('nan'), 1.0, 0.5], 'label 1 is not finite'),
                                           ([0.0, 1.0, float('-inf'), 0.5], 'label 2 is not finite'),
                                           ([0, 1, 1], 'labels has 3'), ([2, 2, 2, 2], 'at least two classes')])
def test_bad_labels_of_a_tokenized_batch(labels, match):
    m = tiny_model('llama', kind='regression' if isinstance(labels[0], float) else 'lm', dtype=torch.float64)
    one_line(lambda: analyze((m, None), tiny_batch(), labels=torch.tensor(labels), label_words=(' a', ' bb'),
                             progress=False), ValueError, match)


# ---- saved analyses: round trip, and every way the files can be damaged
@pytest.fixture(scope='module')
def saved(lm, tmp_path_factory):
    a = run(lm, dataset())
    return a, a.save(tmp_path_factory.mktemp('saved') / 'analysis')


def copy(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return dst


def test_saved_analysis_round_trips(saved):
    a, path = saved
    b = Analysis.load(path)
    assert torch.equal(a.G, b.G) and a.stops == b.stops and a.settings == b.settings


def _truncate(p):
    f = p / 'analysis.safetensors'
    f.write_bytes(f.read_bytes()[:-100])


def _flip(p):  # one byte of a tensor, same size: only a checksum sees it
    f = p / 'analysis.safetensors'
    b = bytearray(f.read_bytes())
    b[-9] ^= 0x01
    f.write_bytes(bytes(b))


def _edit_json(p):
    f = p / 'analysis.json'
    d = json.loads(f.read_text())
    d['stops'] = {k: 1 for k in d['stops']}
    f.write_text(json.dumps(d))


def _as_format2(p):
    "Rewrite a saved analysis as the previous version wrote it: plain safetensors, SHA-256 of both files in the JSON."
    from safetensors.torch import load_file, save_file
    from ntk_finetune.core import file_sha256, json_sha256
    body = json.loads((p / 'analysis.json').read_text())
    save_file(load_file(str(p / 'analysis.safetensors')), str(p / 'analysis.safetensors'))
    body['format'] = 2
    body['checksums'] = {'tensors': file_sha256(p / 'analysis.safetensors'), 'meta': json_sha256(body)}
    (p / 'analysis.json').write_text(json.dumps(body))
    return p


DAMAGE = {
    'truncated tensors': (_truncate, 'unreadable'),
    'a flipped byte in the tensors': (_flip, 'analysis.safetensors does not match its checksum'),
    'an edited stop in the JSON': (_edit_json, "analysis.json does not match the record in the tensors' header"),
    'a flipped byte in a format-2 folder': (lambda p: _flip(_as_format2(p)),
                                            'analysis.safetensors does not match its checksum'),
    'an edited stop in a format-2 folder': (lambda p: _edit_json(_as_format2(p)),
                                            'analysis.json does not match its checksum'),
    'JSON replaced by a list': (lambda p: (p / 'analysis.json').write_text('[1, 2]'), 'not an analysis'),
    'tensors missing': (lambda p: (p / 'analysis.safetensors').unlink(), 'holds no analysis'),
    'JSON of another program': (lambda p: (p / 'analysis.json').write_text('{"settings": {}, "format": 7}'),
                                'not an analysis'),
}


def test_a_format2_analysis_still_loads(saved, tmp_path):
    a, path = saved
    b = Analysis.load(_as_format2(copy(path, tmp_path / 'a')))
    assert torch.equal(a.G, b.G) and a.stops == b.stops and a.settings == b.settings


@pytest.mark.parametrize('case', list(DAMAGE))
def test_damaged_analysis_is_refused_in_one_line(saved, tmp_path, case):
    damage, match = DAMAGE[case]
    p = copy(saved[1], tmp_path / 'a')
    damage(p)
    one_line(lambda: Analysis.load(p), ValueError, match)


def test_cli_refuses_an_edited_analysis(saved, tmp_path, capsys):
    from ntk_finetune import cli
    p = copy(saved[1], tmp_path / 'a')
    _edit_json(p)
    with pytest.raises(SystemExit) as e:
        cli.main(['stop', str(p)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1 and 'edited or is corrupted' in err


def test_save_where_a_file_stands_is_one_line_and_writes_nothing(saved, tmp_path):
    (tmp_path / 'a_file').write_text('x')
    one_line(lambda: saved[0].save(tmp_path / 'a_file' / 'analysis'), OSError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a_file']


def test_save_over_an_existing_analysis_and_an_interrupted_save(saved, tmp_path, monkeypatch):
    import safetensors.torch as st
    a, _ = saved
    p = a.save(tmp_path / 'analysis')
    a.save(p)  # over an existing one: replaced
    before = (p / 'analysis.json').read_text()
    monkeypatch.setattr(st, 'save_file', lambda *x, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        a.save(p)
    assert (p / 'analysis.json').read_text() == before and Analysis.load(p).stops == a.stops
    assert sorted(q.name for q in tmp_path.iterdir()) == ['analysis']  # no temporary folder left behind


# ---- interruption: kill -9 in the middle of a kernel, then the same and other settings
KERNEL_SCRIPT = textwrap.dedent('''
    import sys, time, torch
    import ntk_finetune.entk as E
    from ntk_finetune.models import tiny_model
    from ntk_finetune.outputs import tiny_output_fn
    m = tiny_model('gpt2', dtype=torch.float64, layers=4)
    b = {'input_ids': torch.randint(1, 128, (24, 8), generator=torch.Generator().manual_seed(0))}
    from ntk_finetune.kernel_cache import KernelCache
    save = KernelCache.save_layer
    def slow(*a):
        save(*a); print('layer saved', flush=True); time.sleep(5)
    KernelCache.save_layer = slow
    E.empirical_ntk(m, b, tiny_output_fn(), 'attention', cache_dir=sys.argv[1], block_size=4, progress=False)
''')


def test_kill_9_mid_kernel_then_rerun(tmp_path):
    import ntk_finetune.entk as E
    cache = tmp_path / 'cache'
    p = subprocess.Popen([sys.executable, '-c', KERNEL_SCRIPT, str(cache)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == 'layer saved'
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL and list(cache.glob('layer_*'))
    m = tiny_model('gpt2', dtype=torch.float64, layers=4)
    b = {'input_ids': torch.randint(1, 128, (24, 8), generator=torch.Generator().manual_seed(0))}
    fresh = empirical_ntk(m, b, tiny_output_fn(), 'attention', progress=False)
    resumed = empirical_ntk(m, b, tiny_output_fn(), 'attention', cache_dir=cache, block_size=4, progress=False)
    assert torch.equal(resumed, fresh)  # the same settings: the finished layer reused, the rest computed
    one_line(lambda: empirical_ntk(m, b, tiny_output_fn(), 'all', cache_dir=cache, progress=False), CacheError,
             'holds a kernel for other inputs')  # other settings: refused, never mixed
    assert not list(tmp_path.rglob('.*.tmp'))


def test_cache_dir_that_is_a_file(tmp_path):
    (tmp_path / 'f').write_text('x')
    m = tiny_model('gpt2', dtype=torch.float64)
    one_line(lambda: empirical_ntk(m, tiny_batch(), tiny_output_fn(), cache_dir=tmp_path / 'f', progress=False),
             CacheError, 'is a file')


def test_checkpoint_holding_a_pickled_object_is_refused(tmp_path):
    "A fine-tuning checkpoint is a safetensors artefact: a pickle (of anything) is refused, never unpickled."
    from ntk_finetune.finetune import finetune, FinetuneConfig, toy_task_data, CheckpointMismatch
    ck = tmp_path / 'ck.pt'
    torch.save({'config': {}, 'payload': Path('.')}, ck)  # a pickled non-tensor object
    m = tiny_model('llama', dtype=torch.float64)
    one_line(lambda: finetune(m, toy_task_data(), tiny_output_fn(), FinetuneConfig(lr=0.1, steps=2), progress=False,
                              checkpoint=ck), CheckpointMismatch, 'cannot be read (')
