import os, subprocess, sys, pytest, torch, transformers
from ntk_finetune.models import (load_model, select_params, count_params, tiny_model, reinit_model, _smollm2_folder,
    TINY_ARCHS)
from ntk_finetune.outputs import tokenize, LabelWordMargin, HeadOutput, make_output_fn, tiny_output_fn
from ntk_finetune.data import task_info, load_task

def test_smollm2_answers_paris(smollm2):
    model, tok = smollm2
    ids = tok('The capital of France is', return_tensors='pt')
    with torch.no_grad(): out = model.generate(**ids, max_new_tokens=2, do_sample=False)
    assert tok.decode(out[0, ids['input_ids'].shape[1]:]).strip().startswith('Paris')

def test_smollm2_param_counts(smollm2):
    model, _ = smollm2
    assert count_params(select_params(model, 'attention')) == 26542080
    assert count_params(select_params(model, 'all')) == 134515008
    assert count_params(select_params(model, 'mlp')) == 30 * 3 * 576 * 1536

def test_minilm_loads_and_counts(minilm):
    model, tok = minilm
    att = select_params(model, 'attention')
    assert count_params(att) == 6 * 4 * (384 * 384 + 384)       # q, k, v, output.dense weights + biases
    assert count_params(select_params(model, 'head')) == 384 * 2 + 2
    b = tokenize(tok, ['a fine film', 'dreadful'], 16)
    assert b['input_ids'][0, 0] == tok.cls_token_id              # BERT special tokens kept
    assert HeadOutput()(model, b).shape == (2,)

def test_minilm_base_embeddings_are_pretrained():
    model, tok = load_model('minilm-l6', kind='base')
    b = tokenize(tok, ['A man is playing a guitar.', 'Someone plays an instrument.', 'The stock market fell today.'], 32)
    with torch.no_grad(): h = model(**b).last_hidden_state
    m = b['attention_mask'].unsqueeze(-1).float()
    e = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)   # the sentence-transformers mean pooling
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.2, sim                      # related sentences are closer: real weights

@pytest.mark.parametrize('arch', TINY_ARCHS)
@pytest.mark.parametrize('which', ['attention', 'mlp', 'all'])
def test_presets_on_tiny(arch, which):
    m = tiny_model(arch)
    sel = select_params(m, which)
    assert count_params(sel) > 0 and all(p.requires_grad for p in sel.values())
    if which == 'attention': assert not any('norm' in n.lower() for n in sel)
    if which == 'mlp': assert not set(sel) & set(select_params(m, 'attention'))       # the two presets are disjoint
    if which == 'all': assert count_params(sel) == sum(p.numel() for p in m.parameters())

@pytest.mark.parametrize('arch', ['gpt2', 'gpt-neo', 'llama'])
def test_label_word_output_shapes_and_padding(arch):
    m = tiny_model(arch)
    fn = tiny_output_fn()     # stand-in word ids; padding behaviour is tested on the real tokenizer below
    ids = torch.randint(1, 128, (3, 6)); mask = torch.ones_like(ids); mask[1, 4:] = 0
    out = fn(m, {'input_ids': ids, 'attention_mask': mask})
    assert out.shape == (3,)
    alone = fn(m, {'input_ids': ids[1:2, :4], 'attention_mask': mask[1:2, :4]})   # right padding changes nothing
    torch.testing.assert_close(out[1:2], alone, rtol=1e-4, atol=1e-5)
    assert tiny_output_fn(3, multi=True)(m, {'input_ids': ids, 'attention_mask': mask}).shape == (3, 3)

def test_real_padding_invariance(smollm2):
    model, tok = smollm2
    info = task_info('rt-sentiment'); fn = make_output_fn(model, tok, info)
    texts = ['Short.', 'A much longer review that goes on and on about the film and its many merits.']
    with torch.no_grad():
        both = fn(model, tokenize(tok, texts, 64, info.template))
        one = fn(model, tokenize(tok, texts[:1], 64, info.template))
    torch.testing.assert_close(both[:1], one, rtol=1e-4, atol=1e-4)

def test_reinit_differs(smollm2):
    m = tiny_model('llama'); r = reinit_model(m, seed=1)
    assert type(r) is type(m) and count_params(select_params(r, 'all')) == count_params(select_params(m, 'all'))
    assert not torch.equal(r.model.layers[0].self_attn.q_proj.weight, m.model.layers[0].self_attn.q_proj.weight)

def test_bad_inputs():
    with pytest.raises(ValueError, match='unknown model'): load_model('not a model name!')
    with pytest.raises(ValueError, match='not in the local Hugging Face cache'): load_model('EleutherAI/gpt-neo-1.3B')
    with pytest.raises(ValueError, match='selects no parameters'): select_params(tiny_model('gpt2'), r'^nothing$')
    with pytest.raises(ValueError, match='texts is empty'): tokenize(None, [])

def test_interrupted_conversion_leaves_nothing(tmp_path, monkeypatch):
    """A conversion killed half-way leaves no folder that a later load would trust."""
    monkeypatch.setenv('NTK_FINETUNE_CACHE', str(tmp_path))
    code = ("import os, threading, ntk_finetune.models as M\n"
            "orig = M.atomic_dir\n"
            "import contextlib\n"
            "@contextlib.contextmanager\n"
            "def killer(p):\n"
            "    with orig(p) as t:\n"
            "        (t/'config.json').write_text('{}'); os._exit(3)\n"
            "        yield t\n"
            "M.atomic_dir = killer\n"
            "M._smollm2_folder()\n")
    r = subprocess.run([sys.executable, '-c', code], env={**os.environ, 'NTK_FINETUNE_CACHE': str(tmp_path)})
    assert r.returncode == 3
    from ntk_finetune.models import _embedded_folder
    out = _embedded_folder('smollm2-135m')  # under tmp_path: the variable is set here too
    assert out.parent == tmp_path / 'models'
    assert not out.exists()                                   # only a hidden temporary folder may remain

# ---- canonical prompts, padding, architectures, hygiene
from ntk_finetune.data import list_tasks
from ntk_finetune.models import TINY_ARCHS, ENCODERS
from ntk_finetune.outputs import is_causal_lm, LabelWordMargin, HeadOutput, check_inputs
from ntk_finetune.core import as_batch

@pytest.fixture(scope='module')
def tokenizers():
    from transformers import AutoTokenizer
    from ntk_finetune.models import resolve_model
    return {m: AutoTokenizer.from_pretrained(resolve_model(m)) for m in ('smollm2-135m', 'minilm-l6')}

@pytest.mark.parametrize('model', ['smollm2-135m', 'minilm-l6'])
@pytest.mark.parametrize('task', list_tasks())
def test_tokenize_is_canonical_for_every_task_and_model(tokenizers, model, task):
    """tokenize == tokenizer(template.format(text=t)) token for token when nothing is cut; when the prompt is too long,
    only the text is shortened and the result is the canonical encoding of the shortened prompt."""
    tok = tokenizers[model]; info = task_info(task)
    texts = load_task(task, 'train', n=6, seed=1)['text']
    b = tokenize(tok, texts, 512, info.template)
    for i, t in enumerate(texts):
        want = tok(info.template.format(text=t))['input_ids']
        if len(want) <= 512: assert b['input_ids'][i, :len(want)].tolist() == want and b['attention_mask'][i].sum() == len(want)
    short = tokenize(tok, texts, 24, info.template)
    pre, post = info.template.split('{text}')
    for i, t in enumerate(texts):
        ids = short['input_ids'][i, :int(short['attention_mask'][i].sum())].tolist()
        assert len(ids) <= 24
        cuts = [0] + sorted({e for _, e in tok(t, add_special_tokens=False, return_offsets_mapping=True)['offset_mapping']})
        enc = [tok(pre + t[:c] + post)['input_ids'] for c in cuts[:64]]    # 24 tokens hold fewer than 64 text tokens
        hit = [k for k, e in enumerate(enc) if e == ids]
        assert hit, 'not the canonical encoding of any shortened prompt'
        assert hit[-1] == len(cuts) - 1 or len(enc[hit[-1] + 1]) > 24      # and the longest one that fits

def test_left_and_right_padding_give_the_same_outputs(smollm2):
    model, tok = smollm2; info = task_info('rt-sentiment'); fn = make_output_fn(model, tok, info)
    texts = load_task('rt-sentiment', 'test', n=4, seed=0)['text']
    with torch.no_grad():
        r = fn(model, tokenize(tok, texts, 48, info.template))
        l = fn(model, tokenize(tok, texts, 48, info.template, padding_side='left'))
        enc = tok([info.template.format(text=t) for t in texts], padding=True, return_tensors='pt', padding_side='left')
        be = fn(model, enc)                                            # a BatchEncoding from the user's own call
    torch.testing.assert_close(l, r, rtol=1e-4, atol=1e-4); torch.testing.assert_close(be, r, rtol=1e-4, atol=1e-4)

@pytest.mark.parametrize('arch', TINY_ARCHS)
def test_architecture_matrix(arch):
    """Every architecture: attention found structurally, the natural output, and the kernel equals the reference."""
    from ntk_finetune.entk import empirical_ntk
    kind = 'classification' if arch in ENCODERS else 'lm'
    m = tiny_model(arch, kind=kind, dtype=torch.float64, seed=3)
    sel = select_params(m, 'attention')
    assert sel and not any('norm' in n.lower() for n in sel)
    fn = tiny_output_fn() if kind == 'lm' else make_output_fn(m, None)
    assert is_causal_lm(m) == (kind == 'lm') and isinstance(fn, LabelWordMargin if kind == 'lm' else HeadOutput)
    b = {'input_ids': torch.randint(1, 128, (4, 7), generator=torch.Generator().manual_seed(0))}
    b['attention_mask'] = torch.ones_like(b['input_ids']); b['attention_mask'][1, 5:] = 0
    G = empirical_ntk(m, b, fn, 'attention', progress=False)
    R = empirical_ntk(m, b, fn, 'attention', method='reference', progress=False)
    assert float((G - R).abs().max()) <= 1e-8 * float(R.abs().max())

def test_gpt2_lm_head_gets_label_words_and_base_model_is_refused():
    m = tiny_model('gpt2')
    assert type(m).__name__ == 'GPT2LMHeadModel' and is_causal_lm(m)
    with pytest.raises(ValueError, match='neither an LM head'): make_output_fn(tiny_model('gpt2', kind='base'), None, 'rt-sentiment')
    with pytest.raises(ValueError, match='needs label words'): make_output_fn(m, None)

def test_partial_attention_warns():
    """T5's relative position bias lives in its attention module but is no linear layer: the selection says so."""
    import transformers
    t5 = transformers.T5ForSequenceClassification(transformers.T5Config(d_model=32, num_layers=2, num_heads=4, d_ff=64, vocab_size=128, d_kv=8))
    with pytest.warns(UserWarning, match='relative_attention_bias'): sel = select_params(t5, 'attention')
    assert all(n.endswith(('q.weight', 'k.weight', 'v.weight', 'o.weight')) for n in sel)

def test_load_model_passes_kwargs_and_keeps_remote_code_off(tmp_path, monkeypatch):
    m = tiny_model('gpt2'); m.save_pretrained(tmp_path)
    from transformers import AutoTokenizer
    tok_dir = tmp_path
    import ntk_finetune.models as M
    seen = {}
    orig = M.AutoModelForCausalLM.from_pretrained
    def spy(path, **kw): seen.update(kw); return orig(path, **kw)
    monkeypatch.setattr(M.AutoModelForCausalLM, 'from_pretrained', spy)
    monkeypatch.setattr(M.AutoTokenizer, 'from_pretrained', lambda *a, **k: type('T', (), {'pad_token': 'x', 'padding_side': 'right', 'pad_token_id': 0, 'eos_token': 'x'})())
    lm, _ = load_model(str(tmp_path), device='cpu', low_cpu_mem_usage=True)
    assert seen.get('low_cpu_mem_usage') is True and 'trust_remote_code' not in seen

def test_no_global_side_effects(smollm2):
    import transformers
    model, tok = smollm2
    state, level = torch.random.get_rng_state(), transformers.logging.get_verbosity()
    reinit_model(tiny_model('llama'), seed=5); tiny_model('gpt2', seed=9)
    assert torch.equal(torch.random.get_rng_state(), state) and transformers.logging.get_verbosity() == level
    class NoPad:                                                        # a tokenizer without a pad token is not mutated
        pad_token = pad_token_id = None; eos_token_id = 7; unk_token_id = None
        def __call__(self, texts, **kw): return {'input_ids': [[5] * (len(t) % 4 + 1) for t in texts]}
    t = NoPad(); b = tokenize(t, ['ab', 'abcd'], 8)
    assert t.pad_token is None and b['input_ids'][1, -1] == 7          # padded with eos

def test_check_inputs_errors():
    m = tiny_model('gpt2')
    with pytest.raises(ValueError, match='outside the vocabulary'): check_inputs(m, {'input_ids': torch.full((1, 3), 128)})
    with pytest.raises(ValueError, match='64 positions'): check_inputs(m, {'input_ids': torch.ones(1, 65, dtype=torch.long)})

def test_empty_text_without_a_template_is_refused(tokenizers):
    """An empty text with no template has no token to read an output from: a one-line error, not a zero kernel row."""
    tok = tokenizers['smollm2-135m']
    with pytest.raises(ValueError, match='text 1 is empty after tokenization'): tokenize(tok, ['a review', ''], 16)
    assert tokenize(tok, [''], 16, 'Review: {text}\nThe movie was')['attention_mask'].sum() > 0   # a template is fine

def test_encoder_decoder_is_not_a_causal_lm():
    """T5 has output embeddings and no classifier, but it needs decoder inputs: not a causal LM for label words."""
    from transformers import T5Config, T5ForConditionalGeneration
    t5 = T5ForConditionalGeneration(T5Config(d_model=32, d_ff=64, num_layers=1, num_heads=2, d_kv=16, vocab_size=128,
                                             eos_token_id=1, pad_token_id=0, decoder_start_token_id=0))
    assert not is_causal_lm(t5)

def _extra_lm(arch):
    "Tiny causal LMs whose forward transforms the LM head's logits: Gemma-2's soft cap, Cohere's scale, Granite's divisor."
    import transformers
    kw = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64)
    cfg = {'gemma2': lambda: transformers.Gemma2Config(**kw, head_dim=8, final_logit_softcapping=0.05,
                                                       attn_implementation='eager'),
           'cohere': lambda: transformers.CohereConfig(**kw, logit_scale=0.3),
           'granite': lambda: transformers.GraniteConfig(**kw, logits_scaling=7.0),
           'hyperclovax': lambda: transformers.HyperCLOVAXConfig(**kw, logits_scaling=0.4),      # multiplies
           'mpt': lambda: transformers.MptConfig(vocab_size=128, d_model=32, n_heads=4, n_layers=2, max_seq_len=64,
                                                 logit_scale=5.0)}[arch]()                   # MPT's forward ignores it
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(cfg).eval()

EXTRA_LMS = ('gemma2', 'cohere', 'granite',
             pytest.param('hyperclovax', marks=pytest.mark.skipif(not hasattr(transformers, 'HyperCLOVAXConfig'),
                                                                  reason='an architecture newer than transformers 5.0')),
             'mpt')

TINY_LMS = ('gpt2', 'gpt-neo', 'gpt-neox', 'llama', 'phi', 'falcon')

@pytest.mark.parametrize('arch', [*TINY_LMS, *EXTRA_LMS])
def test_label_word_margin_equals_the_models_own_logits(arch):
    "The margin is built from the label words' LM-head rows alone; it must equal what the model's forward returns."
    m = tiny_model(arch) if arch in TINY_LMS else _extra_lm(arch)
    fn = tiny_output_fn(3, multi=True)
    ids = torch.randint(1, 100, (3, 7)); mask = torch.ones_like(ids); mask[2, 5:] = 0
    b = {'input_ids': ids, 'attention_mask': mask}
    with torch.no_grad():
        full = m(**b).logits[torch.arange(3), torch.tensor([6, 6, 4])][:, fn.word_ids]
        torch.testing.assert_close(fn(m, b), full, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(tiny_output_fn(2)(m, b), full[:, 1] - full[:, 0], rtol=1e-4, atol=1e-5)

def test_an_unknown_logit_transform_is_refused():
    "A forward that changes its logits after the LM head in a way head_logits does not know: one line, not a wrong kernel."
    import transformers
    from ntk_finetune.outputs import check_label_words
    class Scaled(transformers.LlamaForCausalLM):
        def forward(self, *a, **k):
            out = super().forward(*a, **k); out.logits = out.logits * 3.0; return out
    base = tiny_model('llama'); m = Scaled(base.config).eval(); m.load_state_dict(base.state_dict())
    b = {'input_ids': torch.randint(1, 100, (2, 5)), 'attention_mask': torch.ones(2, 5, dtype=torch.long)}
    assert check_label_words(tiny_output_fn(), base, b) < 1e-5
    with pytest.raises(ValueError, match="differs from Scaled's own logits"): check_label_words(tiny_output_fn(), m, b)
