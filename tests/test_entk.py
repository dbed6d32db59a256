import math, os, tempfile
from pathlib import Path
import pytest, torch
import ntk_finetune.entk as E
from ntk_finetune.entk import empirical_ntk, make_ntk_fn, random_init_ntk, jacobian_reference
from ntk_finetune.models import tiny_model, LabelWordMargin, HeadOutput, select_params, tokenize, make_output_fn
from ntk_finetune.data import load_task, task_info

from ntk_finetune.models import tiny_output_fn

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

def test_ghost_and_explicit_paths_agree():
    """Short sequences take the Σ<a,a><g,g> path; long ones explicit per-example gradients: both equal the reference."""
    m = tiny_model('gpt2', dtype=torch.float64, hidden=64); fn = output('gpt2', 'lm', False)
    for T in (2, 12):       # T² < d_in d_out/(d_in+d_out) ≈ 24 for T = 2 only
        b = batch(4, T, T, pad=False)
        G = empirical_ntk(m, b, fn, 'attention', progress=False); R = empirical_ntk(m, b, fn, 'attention', method='reference', progress=False)
        assert float((G - R).abs().max()) <= 1e-10 * float(R.abs().max())

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
    with pytest.raises(ValueError, match='different keys'): empirical_ntk(m, b, fn, batch2={'input_ids': b['input_ids']})
    with pytest.raises(ValueError, match='selects no parameters'): empirical_ntk(m, b, fn, r'^nothing$')
    with pytest.raises(ValueError, match='do not belong'): empirical_ntk(m, b, fn, {'x': torch.nn.Parameter(torch.zeros(2))})
    with pytest.raises(ValueError, match='multi must be'): empirical_ntk(m, b, fn, multi='sum')

def test_resume_after_interrupt_is_identical(tmp_path, monkeypatch):
    m = tiny_model('gpt2', dtype=torch.float64); fn = output('gpt2', 'lm', False); b = batch(6, 8, 0)
    full = empirical_ntk(m, b, fn, 'all', memory_budget=3_000_000, progress=False)
    calls = {'n': 0}; orig = E._layer_gram
    def flaky(*a, **k):
        calls['n'] += 1
        if calls['n'] == 4: raise KeyboardInterrupt('simulated interruption')
        return orig(*a, **k)
    monkeypatch.setattr(E, '_layer_gram', flaky)
    with pytest.raises(KeyboardInterrupt): empirical_ntk(m, b, fn, 'all', memory_budget=3_000_000, cache_dir=tmp_path, progress=False)
    done = list(tmp_path.glob('layer_*.pt')); assert len(done) == 3 and not list(tmp_path.glob('.*tmp'))
    monkeypatch.setattr(E, '_layer_gram', orig)
    again = empirical_ntk(m, b, fn, 'all', memory_budget=3_000_000, cache_dir=tmp_path, progress=False)
    assert torch.equal(again, full)

def test_real_minilm_matches_reference(minilm):
    model, tok = minilm
    ds = load_task('sms-spam', 'train', n=6, seed=0)
    b = tokenize(tok, ds['text'], 24)
    G = empirical_ntk(model, b, HeadOutput(), 'attention', progress=False)
    R = empirical_ntk(model, b, HeadOutput(), 'attention', method='reference', progress=False)
    assert float((G - R).abs().max()) <= 1e-6 * float(R.abs().max())

def test_real_smollm2_streaming_matches_in_memory(smollm2):
    """Forcing tiny blocks and memory-mapped captures gives the same kernel as the in-memory run."""
    model, tok = smollm2; info = task_info('rt-sentiment')
    b = tokenize(tok, load_task('rt-sentiment', 'train', n=6, seed=2)['text'], 24, info.template); fn = make_output_fn(model, tok, info)
    G = empirical_ntk(model, b, fn, r'layers\.(0|29)\.self_attn', progress=False)
    S = empirical_ntk(model, b, fn, r'layers\.(0|29)\.self_attn', memory_budget=120 << 20, block_size=2, progress=False)
    assert float((G - S).abs().max()) <= 1e-9 * float(G.abs().max())

def test_resume_during_capture_is_identical(tmp_path, monkeypatch):
    """Interrupted while streaming captures to disk: finished blocks are kept and the rerun gives the same kernel."""
    m = tiny_model('gpt2', dtype=torch.float64); fn = output('gpt2', 'lm', False); b = batch(6, 8, 0)
    full = empirical_ntk(m, b, fn, 'attention', progress=False)
    calls = {'n': 0}; orig = E._Store.flush
    def flaky(self):
        calls['n'] += 1
        if calls['n'] == 3: raise KeyboardInterrupt('simulated interruption')
        return orig(self)
    monkeypatch.setattr(E._Store, 'flush', flaky)
    kw = dict(memory_budget=150_000, block_size=2, cache_dir=tmp_path, progress=False)   # small enough for disk captures
    with pytest.raises(KeyboardInterrupt): empirical_ntk(m, b, fn, 'attention', **kw)
    assert E.load_json(tmp_path / 'captures0.done.json') == [0, 2]
    monkeypatch.setattr(E._Store, 'flush', orig)
    again = empirical_ntk(m, b, fn, 'attention', **kw)
    assert float((again - full).abs().max()) <= 1e-12 * float(full.abs().max())
