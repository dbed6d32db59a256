import math, os, tempfile
from pathlib import Path
import pytest, torch
import ntk_finetune.entk as E
import ntk_finetune.entk_capture as EC
import ntk_finetune.entk_gram as EG
from ntk_finetune.kernel_cache import KernelCache
from ntk_finetune.entk import empirical_ntk, make_ntk_fn, random_init_ntk, jacobian_reference
from ntk_finetune.models import tiny_model, select_params
from ntk_finetune.outputs import LabelWordMargin, HeadOutput, tokenize, make_output_fn
from ntk_finetune.data import load_task, task_info

from ntk_finetune.outputs import tiny_output_fn

def batch(n, T, seed, pad=True):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 128, (n, T), generator=g); mask = torch.ones_like(ids)
    if pad:
        for i in range(0, n, 2): mask[i, max(2, T - 1 - i):] = 0
    return {'input_ids': ids, 'attention_mask': mask}

def output(arch, kind, multi):
    if kind == 'lm': return tiny_output_fn(3 if multi else 2, multi=multi)
    return HeadOutput(multi=multi)

CASES = [('gpt2', 'lm'), ('gpt-neo', 'lm'), ('llama', 'lm'), ('bert', 'classification'), ('llama', 'classification')]
REGEX = {'gpt2': r'h\.1\.(attn|mlp)', 'gpt-neo': r'h\.0\.attn.*(q_proj|out_proj)', 'llama': r'layers\.1\.(self_attn\.v|mlp\.up)', 'bert': r'layer\.0\.(attention|output)'}

@pytest.mark.parametrize('arch, kind', CASES)
@pytest.mark.parametrize('which', ['attention', 'all', 'regex'])
@pytest.mark.parametrize('multi', [False, True])
@pytest.mark.parametrize('cross', [False, True])
def test_structured_matches_reference_float64(arch, kind, which, multi, cross):
    m = tiny_model(arch, kind=kind, dtype=torch.float64, seed=1)
    fn = output(arch, kind, multi); sel = REGEX[arch] if which == 'regex' else which
    b1 = batch(5, 8, 0); b2 = batch(3, 6, 1) if cross else None
    G = empirical_ntk(m, b1, fn, sel, b2, progress=False)
    R = empirical_ntk(m, b1, fn, sel, b2, method='reference', progress=False)
    assert G.dtype == torch.float64 and G.shape == R.shape
    assert float((G - R).abs().max()) <= 1e-8 * float(R.abs().max())
    if not cross:
        M = G if not multi else G.permute(0, 2, 1, 3).reshape(G.shape[0] * G.shape[2], -1)
        assert float((M - M.T).abs().max()) <= 1e-12 * float(M.abs().max())
        assert float(torch.linalg.eigvalsh(M).min()) >= -1e-10 * float(M.abs().max())

def test_x2_none_equals_x1():
    m = tiny_model('llama', dtype=torch.float64); fn = output('llama', 'lm', False); b = batch(4, 6, 3)
    torch.testing.assert_close(empirical_ntk(m, b, fn, progress=False), empirical_ntk(m, b, fn, batch2=b, progress=False), rtol=1e-12, atol=0)

def test_symmetric_tiles_equal_the_cross_product():
    """Upper tiles mirrored (x2 = None) equal the full cross block x2 = x1, over several tiles."""
    m = tiny_model('gpt2', dtype=torch.float64); fn = output('gpt2', 'lm', False); b = batch(150, 6, 2)
    G = empirical_ntk(m, b, fn, 'attention', progress=False)
    X = empirical_ntk(m, b, fn, 'attention', batch2=b, progress=False)
    assert len(EG._tiles(150)) == 3 and torch.equal(G, G.T)
    assert float((G - X).abs().max()) <= 1e-12 * float(X.abs().max())

def test_per_module_sums_to_total_and_names_layers():
    m = tiny_model('llama', dtype=torch.float64); b = batch(4, 6, 0)
    G, parts = empirical_ntk(m, b, output('llama', 'lm', False), 'attention', per_module=True, progress=False)
    assert len(parts) == 2 * 4 and all('self_attn' in k for k in parts)
    torch.testing.assert_close(sum(parts.values()), G, rtol=1e-12, atol=1e-12)

def test_dict_params_and_make_ntk_fn_and_random_init():
    m = tiny_model('gpt-neo', dtype=torch.float64); fn = output('gpt-neo', 'lm', False); b = batch(4, 6, 0)
    sel = select_params(m, 'attention')
    k = make_ntk_fn(m, fn, sel, progress=False)
    torch.testing.assert_close(k(b), empirical_ntk(m, b, fn, 'attention', progress=False))
    Gr = random_init_ntk(m, b, fn, 'attention', seed=3, progress=False)
    assert Gr.shape == (4, 4) and not torch.allclose(Gr, k(b))

def test_reused_weight_is_detected():
    """A weight used outside its layer's forward is never silently wrong."""
    m = tiny_model('llama', dtype=torch.float64); b = batch(3, 5, 0)
    q = m.model.layers[0].self_attn.q_proj
    def fn(model, bb):   # uses q_proj.weight directly as well as through the layer
        return output('llama', 'lm', False)(model, bb) + (q.weight.sum() * bb['attention_mask'].sum(1)).to(q.weight.dtype) * 1e-2
    with pytest.raises(ValueError, match='from outside its layer'):
        empirical_ntk(m, b, fn, r'layers\.0\.self_attn\.q_proj', progress=False)

def test_bad_inputs():
    m = tiny_model('gpt2', dtype=torch.float64); fn = output('gpt2', 'lm', False); b = batch(3, 5, 0)
    with pytest.raises(ValueError, match="must be a dict"): empirical_ntk(m, [1, 2], fn)
    with pytest.raises(ValueError, match='different keys'): empirical_ntk(m, b, fn, batch2={**b, 'token_type_ids': torch.zeros_like(b['input_ids'])})
    with pytest.raises(ValueError, match='selects no parameters'): empirical_ntk(m, b, fn, r'^nothing$')
    with pytest.raises(ValueError, match='do not belong'): empirical_ntk(m, b, fn, {'x': torch.nn.Parameter(torch.zeros(2))})
    with pytest.raises(ValueError, match='multi must be'): empirical_ntk(m, b, fn, multi='sum')

def test_real_minilm_matches_reference(minilm):
    model, tok = minilm
    ds = load_task('sms-spam', 'train', n=6, seed=0)
    b = tokenize(tok, ds['text'], 24)
    G = empirical_ntk(model, b, HeadOutput(), 'attention', progress=False)
    R = empirical_ntk(model, b, HeadOutput(), 'attention', method='reference', progress=False)
    assert float((G - R).abs().max()) <= 1e-6 * float(R.abs().max())

def test_real_smollm2_streaming_matches_in_memory(smollm2):
    """Memory-mapped captures under a small budget give the kernel of the in-memory run with the same tiny blocks. (The
    blocks are the same in both: on some CPUs a float32 forward pass rounds differently with the batch's shape, which
    is not what this tests.)"""
    model, tok = smollm2; info = task_info('rt-sentiment')
    b = tokenize(tok, load_task('rt-sentiment', 'train', n=6, seed=2)['text'], 24, info.template)
    fn = make_output_fn(model, tok, info)
    G = empirical_ntk(model, b, fn, r'layers\.(0|29)\.self_attn', block_size=2, progress=False)
    S = empirical_ntk(model, b, fn, r'layers\.(0|29)\.self_attn', memory_budget=120 << 20, block_size=2, progress=False)
    assert float((G - S).abs().max()) <= 1e-9 * float(G.abs().max())

def _f32_setup(n=40, T=7):
    m = tiny_model('llama', seed=2); fn = output('llama', 'lm', False); return m, fn, batch(n, T, 5)

@pytest.mark.parametrize('where', ['capture', 'gram', 'layer_write'])
@pytest.mark.parametrize('resume_kw', [dict(block_size=3, memory_budget=60_000_000), dict(block_size=11, memory_budget=2_500_000)])
def test_interrupted_run_resumes_bitwise(tmp_path, monkeypatch, where, resume_kw):
    """Killed in the capture pass, in the Gram, or while writing a layer file, then resumed with another block size and
    budget: the kernel is bitwise the one an uninterrupted run gives."""
    m, fn, b = _f32_setup()
    first = dict(block_size=5, memory_budget=2_500_000)             # small: captures go to files
    full = empirical_ntk(m, b, fn, 'all', progress=False, **first)
    targets = {'capture': (EC._CaptureStore, 'write', 9), 'gram': (EG, '_layer_gram', 4),
               'layer_write': (KernelCache, 'save_layer', 3)}
    obj, name, at = targets[where]; orig = getattr(obj, name); calls = {'n': 0}
    def flaky(*a, **k):
        calls['n'] += 1
        if calls['n'] == at: raise KeyboardInterrupt('simulated interruption')
        return orig(*a, **k)
    monkeypatch.setattr(obj, name, flaky)
    with pytest.raises(KeyboardInterrupt): empirical_ntk(m, b, fn, 'all', cache_dir=tmp_path, progress=False, **first)
    monkeypatch.setattr(obj, name, orig)
    assert not list(tmp_path.rglob('.*.tmp'))                       # nothing half-written is left
    again = empirical_ntk(m, b, fn, 'all', cache_dir=tmp_path, progress=False, **resume_kw)
    assert torch.equal(again, full)

def test_interrupted_in_the_middle_of_a_capture_write(tmp_path, monkeypatch):
    """Killed after half of a block's rows reached the capture file: the resumed kernel is bitwise the uninterrupted
    one (the half-written block is not recorded as finished, so it is captured again)."""
    m, fn, b = _f32_setup()
    kw = dict(block_size=5, memory_budget=2_500_000, progress=False)
    full = empirical_ntk(m, b, fn, 'all', **kw)
    orig = EC._CaptureStore.write; calls = {'n': 0}
    def half(self, key, s, e, value):
        calls['n'] += 1
        if calls['n'] == 9 and self.folder is not None:
            orig(self, key, s, s + (e - s) // 2, value[: (e - s) // 2] * 0 + 7)   # garbage in half the rows, then killed
            calls['mid'] = True
            raise KeyboardInterrupt('simulated interruption mid-write')
        return orig(self, key, s, e, value)
    monkeypatch.setattr(EC._CaptureStore, 'write', half)
    with pytest.raises(KeyboardInterrupt): empirical_ntk(m, b, fn, 'all', cache_dir=tmp_path, **kw)
    monkeypatch.setattr(EC._CaptureStore, 'write', orig)
    assert calls.get('mid')                                           # the captures went to files and one was cut
    assert torch.equal(empirical_ntk(m, b, fn, 'all', cache_dir=tmp_path, **{**kw, 'block_size': 7}), full)

def test_budget_does_not_change_the_kernel():
    m, fn, b = _f32_setup()
    ks = [empirical_ntk(m, b, fn, 'all', block_size=4, memory_budget=mb, progress=False) for mb in (1_500_000, 3_000_000, 10**9)]
    assert torch.equal(ks[0], ks[1]) and torch.equal(ks[1], ks[2])

def test_corrupt_cache_files(tmp_path, monkeypatch):
    m, fn, b = _f32_setup(12)
    kw = dict(block_size=4, memory_budget=1_500_000, progress=False)
    full = empirical_ntk(m, b, fn, 'all', cache_dir=tmp_path, **kw)
    layer = sorted(tmp_path.glob('layer_*.safetensors'))[0]
    layer.write_bytes(layer.read_bytes()[:50])                      # a truncated layer file is recomputed
    with pytest.warns(UserWarning, match='unreadable'): again = empirical_ntk(m, b, fn, 'all', cache_dir=tmp_path, **kw)
    assert torch.equal(again, full)
    for f in tmp_path.glob('layer_*'): f.unlink()
    assert not (tmp_path / 'captures0').exists()                    # a finished kernel keeps its layers, not the captures
    def stop(*a, **k): raise KeyboardInterrupt
    with monkeypatch.context() as mp:                               # interrupted after the captures, before any Gram
        mp.setattr(EG, '_layer_gram', stop)
        with pytest.raises(KeyboardInterrupt): empirical_ntk(m, b, fn, 'all', cache_dir=tmp_path, **kw)
    cap = next((tmp_path / 'captures0').glob('*.bin'))
    cap.write_bytes(cap.read_bytes()[:10])                          # a truncated capture file: captures recomputed
    with pytest.warns(UserWarning, match='truncated'): again = empirical_ntk(m, b, fn, 'all', cache_dir=tmp_path, **kw)
    assert torch.equal(again, full)
    (tmp_path / 'manifest.json').write_text('{"version": 2, "weig')  # a truncated manifest: one-line error naming it
    with pytest.raises(E.CacheError, match=r'manifest\.json.*unreadable'): empirical_ntk(m, b, fn, 'all', cache_dir=tmp_path, **kw)

def test_same_size_corruption_is_caught(tmp_path, monkeypatch):
    """Bytes changed in place (the file keeps its size and its header) fail the checksums: recomputed, never returned."""
    m, fn, b = _f32_setup(12)
    kw = dict(block_size=4, memory_budget=1_500_000, progress=False)
    full = empirical_ntk(m, b, fn, 'all', cache_dir=tmp_path, **kw)
    layer = sorted(tmp_path.glob('layer_*.safetensors'))[0]
    raw = bytearray(layer.read_bytes()); raw[-8:] = bytes(8); layer.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match='checksum'): again = empirical_ntk(m, b, fn, 'all', cache_dir=tmp_path, **kw)
    assert torch.equal(again, full)
    for f in tmp_path.glob('layer_*'): f.unlink()
    def stop(*a, **k): raise KeyboardInterrupt
    with monkeypatch.context() as mp:                               # interrupted after the captures, before any Gram
        mp.setattr(EG, '_layer_gram', stop)
        with pytest.raises(KeyboardInterrupt): empirical_ntk(m, b, fn, 'all', cache_dir=tmp_path, **kw)
    cap = next((tmp_path / 'captures0').glob('*.bin'))
    raw = bytearray(cap.read_bytes()); raw[:4] = b'\x7f\x7f\x7f\x7f'; cap.write_bytes(bytes(raw))
    with monkeypatch.context() as mp:
        mp.setattr(EG, '_layer_gram', stop)
        with pytest.warns(UserWarning, match='1 finished capture block.*corrupted'), pytest.raises(KeyboardInterrupt):
            empirical_ntk(m, b, fn, 'all', cache_dir=tmp_path, **kw)
    import shutil
    shutil.rmtree(tmp_path / 'captures0')                            # the captures are gone, their record is not
    with pytest.warns(UserWarning, match='3 finished capture block.*missing'):
        again = empirical_ntk(m, b, fn, 'all', cache_dir=tmp_path, **kw)
    assert torch.equal(again, full)

def test_gram_reads_captures_in_column_chunks_under_a_small_budget(monkeypatch):
    """A layer whose captures do not fit in half the budget is read a column chunk at a time: same kernel."""
    m, fn, b = _f32_setup(40)
    full = empirical_ntk(m, b, fn, 'all', block_size=4, progress=False)
    orig, chunked = EC._CaptureStore.read, []
    def read(self, key, s=0, e=None, cols=None):
        if cols is not None: chunked.append(key)
        return orig(self, key, s, e, cols)
    monkeypatch.setattr(EC._CaptureStore, 'read', read)
    small = empirical_ntk(m, b, fn, 'all', block_size=4, memory_budget=150_000, progress=False)
    assert chunked and torch.equal(small, full)

@pytest.mark.parametrize('change', [dict(gram_dtype=torch.float64), dict(autocast=torch.bfloat16)])
def test_cache_knows_the_gram_dtype_and_autocast(tmp_path, change):
    m = tiny_model('gpt2'); fn = output('gpt2', 'lm', False); b = batch(4, 6, 0)
    empirical_ntk(m, b, fn, 'attention', cache_dir=tmp_path, progress=False)
    key = 'gram_dtype' if 'gram_dtype' in change else 'autocast'
    with pytest.raises(E.CacheError, match=f'other inputs.*{key}'):
        empirical_ntk(m, b, fn, 'attention', cache_dir=tmp_path, progress=False, **change)

def test_cache_knows_the_output_function(tmp_path):
    """An output function is cached by its name: none, a one-line error; two names, two kernels; other weights, refused."""
    m = tiny_model('gpt2'); b = batch(4, 6, 0)
    f7 = lambda mm, bb: mm(**bb).logits[:, -1, 7]
    with pytest.raises(E.CacheError, match='needs an output function with a `name`'):
        empirical_ntk(m, b, f7, 'attention', cache_dir=tmp_path, progress=False)
    f11 = lambda mm, bb: mm(**bb).logits[:, -1, 11]
    f7.name, f11.name = 'logit 7', 'logit 11'
    empirical_ntk(m, b, f7, 'attention', cache_dir=tmp_path, progress=False)
    with pytest.raises(E.CacheError, match=r'other inputs \(output_fn, probe_output differ'):
        empirical_ntk(m, b, f11, 'attention', cache_dir=tmp_path, progress=False)
    m2 = tiny_model('gpt2', seed=9)                                  # other weights with the same names and shapes
    with pytest.raises(E.CacheError, match='weights'): empirical_ntk(m2, b, f7, 'attention', cache_dir=tmp_path, progress=False)
    assert empirical_ntk(m, b, f7, 'attention', progress=False).shape == (4, 4)  # without a cache no name is needed

def test_cache_dir_errors(tmp_path, monkeypatch):
    m = tiny_model('gpt2'); fn = output('gpt2', 'lm', False); b = batch(4, 6, 0)
    f = tmp_path / 'file'; f.write_text('x')
    with pytest.raises(E.CacheError, match='is a file'): empirical_ntk(m, b, fn, cache_dir=f, progress=False)
    # unwritable even for root (who ignores permissions): a read-only file system (/proc); for others also a 0o500 folder
    places = ['/proc/ntk-cache'] + ([] if os.geteuid() == 0 else [tmp_path / 'ro' / 'k'])
    if os.geteuid() != 0:
        (tmp_path / 'ro').mkdir(); (tmp_path / 'ro').chmod(0o500)
    for where in places:
        with pytest.raises(E.CacheError, match='cannot write'): empirical_ntk(m, b, fn, cache_dir=where, progress=False)
    import errno
    def full_disk(*a, **k): raise OSError(errno.ENOSPC, 'No space left on device', str(tmp_path / 'k2'))
    monkeypatch.setattr(KernelCache, 'save_layer', full_disk)
    with pytest.raises(E.CacheError, match='No space left on device.*free disk space'):
        empirical_ntk(m, b, fn, cache_dir=tmp_path / 'k2', progress=False)

def test_more_bad_inputs():
    m = tiny_model('gpt2', dtype=torch.float64); fn = output('gpt2', 'lm', False); b = batch(3, 5, 0)
    for bs in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match='block_size must be a positive integer'): empirical_ntk(m, b, fn, block_size=bs)
    G = empirical_ntk(m, {'input_ids': b['input_ids']}, fn, progress=False)          # no mask: no padding
    assert torch.allclose(G, empirical_ntk(m, {**b, 'attention_mask': torch.ones_like(b['input_ids'])}, fn, progress=False))
    with pytest.raises(ValueError, match='outside the vocabulary'): empirical_ntk(m, {'input_ids': b['input_ids'] + 500}, fn)
    with pytest.raises(ValueError, match='longer than the model'): empirical_ntk(m, {'input_ids': torch.ones(2, 70, dtype=torch.long)}, fn)
    with pytest.raises(ValueError, match='does not depend on the selected'): empirical_ntk(m, b, lambda mm, bb: fn(mm, bb).detach())
    with pytest.raises(ValueError, match='example 1 has no tokens'):
        empirical_ntk(m, {'input_ids': b['input_ids'], 'attention_mask': torch.tensor([[1, 1, 0, 0, 0], [0] * 5, [1] * 5])}, fn)

def test_cross_kernel_of_different_lengths_and_left_padding():
    m = tiny_model('gpt2', dtype=torch.float64); fn = output('gpt2', 'lm', False)
    b8, b12 = batch(4, 8, 0, pad=False), batch(3, 12, 1)
    G = empirical_ntk(m, b8, fn, 'attention', b12, progress=False)
    R = empirical_ntk(m, b8, fn, 'attention', b12, method='reference', progress=False)
    assert G.shape == (4, 3) and float((G - R).abs().max()) <= 1e-10 * float(R.abs().max())
    left = {k: torch.stack([torch.roll(v[i], int((b12['attention_mask'][i] == 0).sum())) for i in range(3)]) for k, v in b12.items()}
    assert left['attention_mask'][:, 0].eq(0).any()
    torch.testing.assert_close(empirical_ntk(m, left, fn, 'attention', progress=False), empirical_ntk(m, b12, fn, 'attention', progress=False))

@pytest.mark.parametrize('arch', ['llama', 'gpt2'])
def test_cross_kernel_of_different_lengths_with_a_decoder_head(arch):
    """A decoder's classification head finds the last token by pad_token_id; each batch is read at its own length."""
    m = tiny_model(arch, kind='classification', dtype=torch.float64, seed=2); fn = HeadOutput()
    b8, b12 = batch(4, 8, 0, pad=False), batch(3, 12, 1, pad=False)
    sel = select_params(m, 'attention')
    want = jacobian_reference(m, b8, fn, sel) @ jacobian_reference(m, b12, fn, sel).T   # each batch at its own length
    for method in ('structured', 'reference'):
        G = empirical_ntk(m, b8, fn, 'attention', b12, method=method, progress=False)
        assert float((G - want).abs().max()) <= 1e-10 * float(want.abs().max()), method

def test_output_fn_running_the_model_twice():
    m = tiny_model('gpt2', dtype=torch.float64); b = batch(3, 5, 0)
    twice = lambda mm, bb: mm(**bb).logits[:, -1, 7] - mm(**bb).logits[:, -1, 11]
    G = empirical_ntk(m, b, twice, 'attention', progress=False)
    R = empirical_ntk(m, b, twice, 'attention', method='reference', progress=False)
    assert float((G - R).abs().max()) <= 1e-10 * float(R.abs().max())

def test_batch_encoding_is_accepted():
    from transformers import BatchEncoding
    m = tiny_model('gpt2', dtype=torch.float64); fn = output('gpt2', 'lm', False); b = batch(3, 5, 0)
    torch.testing.assert_close(empirical_ntk(m, BatchEncoding(b), fn, progress=False), empirical_ntk(m, b, fn, progress=False))

def test_capture_bytes_counts_every_input():
    """q/k/v share one input, the output projection reads another: both are counted."""
    m = tiny_model('llama'); fn = output('llama', 'lm', False); b = batch(2, 5, 0)
    sel = select_params(m, 'attention')
    plan = EC._probe(m, EC.check_inputs(m, b), fn, sel, EC._plan(m, sel))
    n_inputs = len(set(plan.slots.values()))
    assert n_inputs == 2 * 2                                         # per layer: the shared q/k/v input and o_proj's
    d = 32; outs = 2 * (d + 16 + 16 + d)
    assert EC._capture_bytes(plan, 5) == 4 * 5 * (n_inputs * d + outs)

RSS_SCRIPT = r"""
import resource, sys, torch
from ntk_finetune.entk import empirical_ntk
from ntk_finetune.models import tiny_model
from ntk_finetune.outputs import tiny_output_fn
m = tiny_model('llama', hidden=256, layers=4, heads=4, vocab_size=512)
b = {'input_ids': torch.randint(1, 512, (600, 48), generator=torch.Generator().manual_seed(0))}
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
empirical_ntk(m, b, tiny_output_fn(), 'attention', memory_budget=int(sys.argv[1]), progress=False)
print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""

@pytest.mark.parametrize('budget', [200 << 20, 600 << 20])
def test_peak_rss_stays_within_the_budget(tmp_path, budget):
    """Peak RSS of a child process above what it held before the call stays under the budget."""
    import subprocess, sys
    r = subprocess.run([sys.executable, '-c', RSS_SCRIPT, str(budget)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    base, peak = map(int, r.stdout.split()[-2:])
    assert peak - base <= budget, (peak - base) / 2**20

def test_two_processes_equal_one(tmp_path):
    """torch.distributed with gloo on two CPU processes: every rank returns the single-process kernel, bitwise."""
    import subprocess, sys
    script = Path(__file__).with_name('dist_worker.py')
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29517',
                        str(script), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    m, fn, b = _f32_setup(130)
    threads = torch.get_num_threads(); torch.set_num_threads(1)   # as torch.distributed.run's workers (OMP_NUM_THREADS=1):
    try:                                                           # float32 sums are bitwise only at one thread count
        singles = {sym: empirical_ntk(m, b, fn, 'all', batch2=None if sym else batch(70, 6, 7), block_size=5,
                                      progress=False) for sym in (True, False)}
    finally:
        torch.set_num_threads(threads)
    for sym, single in singles.items():
        for rank in (0, 1):
            assert torch.equal(torch.load(tmp_path / f'G_{int(sym)}_{rank}.pt'), single)
            assert torch.load(tmp_path / f'pairs_{int(sym)}_{rank}.pt') > 0    # every rank computed Gram tiles
