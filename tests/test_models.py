import os, subprocess, sys, pytest, torch
from ntk_finetune.models import (load_model, select_params, count_params, tokenize, tiny_model, reinit_model,
                                 LabelWordMargin, HeadOutput, make_output_fn, _smollm2_folder, tiny_output_fn)
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

@pytest.mark.parametrize('arch', ['gpt2', 'gpt-neo', 'llama', 'bert'])
@pytest.mark.parametrize('which', ['attention', 'mlp', 'all'])
def test_presets_on_tiny(arch, which):
    m = tiny_model(arch)
    sel = select_params(m, which)
    assert count_params(sel) > 0 and all(p.requires_grad for p in sel.values())
    if which == 'attention': assert not any('norm' in n.lower() for n in sel)

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
    out = tmp_path/'models'/'smollm2-135m-instruct'
    assert not out.exists()                                   # only a hidden temporary folder may remain
