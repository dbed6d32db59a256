"""PEFT models wherever a model goes: LoRA kernels against explicit per-example Jacobians in float64, at
initialisation (B = 0) and after real gradient steps, the parameter presets under the wrapper, and the main job on the
embedded SmolLM2 with LoRA adapters."""
import copy, warnings
import pytest, torch
from peft import LoraConfig, get_peft_model
from ntk_finetune.entk import empirical_ntk, jacobian_reference
from ntk_finetune.models import tiny_model, select_params, count_params
from ntk_finetune.outputs import tiny_output_fn, HeadOutput, is_causal_lm
from ntk_finetune.models import base_transformer
from ntk_finetune.outputs import has_classifier
from ntk_finetune.analysis import _resolved_params

TARGETS = {'gpt2': ['c_attn'], 'llama': ['q_proj', 'v_proj'], 'bert': ['query', 'value']}


def lora(arch, kind, r=4, seed=0, dropout=0.0):
    m = tiny_model(arch, kind=kind, dtype=torch.float64, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # gpt2's Conv1D: PEFT sets fan_in_fan_out and says so
        return get_peft_model(m, LoraConfig(r=r, lora_alpha=2 * r, target_modules=TARGETS[arch],
                                            lora_dropout=dropout, fan_in_fan_out=arch == 'gpt2'))


def batch(n, T, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 128, (n, T), generator=g); mask = torch.ones_like(ids)
    mask[0, T - 2:] = 0
    return {'input_ids': ids, 'attention_mask': mask}


def steps(pm, fn, b, k=3, lr=0.5):
    "k real SGD steps on the adapter weights (B leaves 0), on half the squared output."
    opt = torch.optim.SGD([p for p in pm.parameters() if p.requires_grad], lr=lr)
    for _ in range(k):
        opt.zero_grad(); (0.5 * (fn(pm, b) - 1.0).pow(2).sum()).backward(); opt.step()
    return pm


CASES = [('gpt2', 'lm'), ('llama', 'lm'), ('llama', 'classification'), ('bert', 'classification')]


@pytest.mark.parametrize('arch, kind', CASES)
@pytest.mark.parametrize('trained', [False, True])
@pytest.mark.parametrize('which', ['lora', 'trainable', 'attention'])
def test_lora_kernel_matches_explicit_jacobians(arch, kind, trained, which):
    pm = lora(arch, kind)
    fn = tiny_output_fn() if kind == 'lm' else HeadOutput()
    b = batch(5, 7, 0)
    if trained:
        steps(pm, fn, b)
    B = [p for n, p in pm.named_parameters() if 'lora_B' in n]
    assert all(float(p.detach().abs().max()) > 0 for p in B) == trained  # B = 0 at initialisation, moved by the steps
    sel = select_params(pm, which)
    G = empirical_ntk(pm, b, fn, sel, progress=False)
    flags = {n: p.requires_grad for n, p in pm.named_parameters()}
    for p in sel.values():
        p.requires_grad_(True)  # PEFT freezes the base weights; the reference differentiates what is selected
    J = jacobian_reference(pm.eval(), b, fn, sel)
    assert any(not v for v in flags.values()) and all(flags[n] for n in select_params(pm, 'lora'))
    R = J @ J.T
    assert G.dtype == torch.float64 and float((G - R).abs().max()) <= 1e-9 * float(R.abs().max())


@pytest.mark.parametrize('arch, kind', CASES)
def test_presets_under_the_peft_wrapper(arch, kind):
    "'lora' is the adapter weights, 'attention' the network's own, 'trainable' what requires grad; heads are found."
    pm = lora(arch, kind, r=4)
    base = tiny_model(arch, kind=kind, dtype=torch.float64)
    lo, att, tr = (select_params(pm, w) for w in ('lora', 'attention', 'trainable'))
    assert all('lora_' in n for n in lo) and not any('lora_' in n for n in att) and set(tr) == set(lo)
    # the analysis names the set: 'trainable' that is only the adapters is 'lora' (the LoRA evidence applies)
    assert [_resolved_params(w, s) for w, s in (('trainable', tr), ('attention', att), ('trainable', att))] == \
        ['lora', 'attention', 'trainable']
    assert count_params(att) == count_params(select_params(base, 'attention'))
    heads = []
    for m in (pm, base):
        try:
            heads.append(count_params(select_params(m, 'head')))
        except ValueError:  # a tied LM head (gpt2) is not a parameter of its own, with or without the wrapper
            heads.append(None)
    assert heads[0] == heads[1]
    assert is_causal_lm(pm) == is_causal_lm(base) and has_classifier(pm) == has_classifier(base)
    assert base_transformer(pm) is pm.get_base_model() and base_transformer(base) is base
    with pytest.raises(ValueError, match="selects no parameters"):
        select_params(base, 'lora')


def test_attention_kernel_is_the_merged_models():
    "After steps, the attention kernel of the LoRA model is the attention kernel of its merged weights."
    pm = lora('llama', 'lm')
    fn, b = tiny_output_fn(), batch(4, 6, 1)
    steps(pm, fn, b)
    G = empirical_ntk(pm, b, fn, 'attention', progress=False)
    merged = copy.deepcopy(pm).merge_and_unload()
    M = empirical_ntk(merged, b, fn, 'attention', progress=False)
    assert float((G - M).abs().max()) <= 1e-9 * float(M.abs().max())


def test_analyze_a_lora_smollm2(smollm2):
    "The main job on the embedded SmolLM2 with LoRA on q/v: every rule's stop, the recommendation, the samples."
    from ntk_finetune import analyze
    m, tok = smollm2
    pm = get_peft_model(copy.deepcopy(m), LoraConfig(r=8, target_modules=['q_proj', 'v_proj']))
    a = analyze((pm, tok), 'rt-sentiment', params='lora', n=16, n_test=16, max_length=32, progress=False)
    assert a.settings['n_params'] == 30 * 8 * (576 + 576 + 576 + 192)  # r (d_in + d_out) for q and v in 30 layers
    assert a.recommended['rule'] in a.stops and len(a.samples) == 5 and a.spectrum['lambda_1'] > 0
    assert a.settings['model'] == 'smollm2-135m'  # the embedded model is recognised through the PEFT wrapper
    assert any(w.startswith("params 'lora'") and 'lora_kernels.json' in w and 'smollm2-135m tracked' in w
               for w in a.recommended['warnings']), a.recommended['warnings']  # the LoRA study is cited


def test_lora_task_vector_and_multitask_kernel():
    "A LoRA fine-tune's task vector is its merged delta (θ_PT + τ is the LoRA model), and the multi-task kernel of the"
    " adapter weights is explicit Jacobians' products, block by block, each task on its own batch."
    from ntk_finetune.finetune import finetune, FinetuneConfig, toy_task_data
    from ntk_finetune.task_vectors import task_vector, apply, multitask_kernel
    pt = tiny_model('llama', dtype=torch.float64)
    fn, data = tiny_output_fn(), toy_task_data()
    pm = get_peft_model(copy.deepcopy(pt), LoraConfig(r=2, target_modules=['q_proj', 'v_proj']))
    finetune(pm, data, fn, FinetuneConfig(params='lora', lr=0.05, steps=4), progress=False)
    tau = task_vector(pt, pm, 'lora')
    assert sorted(tau.deltas) == sorted(f'model.layers.{i}.self_attn.{w}_proj.weight' for i in range(2) for w in 'qv')
    m2 = copy.deepcopy(pt).eval()
    with apply(m2, tau), torch.no_grad():
        assert float((fn(m2, data.train) - fn(pm.eval(), data.train)).abs().max()) < 1e-10
    with pytest.raises(ValueError, match="needs a PEFT model"):
        task_vector(pt, copy.deepcopy(pt), 'lora')
    fB = tiny_output_fn(3)
    bA, bB = batch(4, 6, 2), batch(3, 8, 3)
    K = multitask_kernel(pm, [bA, bB], [fn, fB], 'lora', progress=False)
    sel = select_params(pm, 'lora')
    JA, JB = jacobian_reference(pm, bA, fn, sel), jacobian_reference(pm, bB, fB, sel)
    for (a, Ja), (b, Jb) in [((0, JA), (1, JB)), ((0, JA), (0, JA)), ((1, JB), (1, JB))]:
        want = Ja @ Jb.T
        assert float((K[a, b] - want).abs().max()) <= 1e-9 * float(want.abs().max())


def test_trainer_callback_on_a_lora_classifier():
    "The callback reads a PEFT classifier's head through the wrapper and computes the LoRA kernel's stop."
    from ntk_finetune.compare import SpectralEarlyStoppingCallback
    from ntk_finetune.finetune import toy_task_data
    d = toy_task_data(n=16)
    pm = lora('llama', 'classification')
    cb = SpectralEarlyStoppingCallback(d.train, d.train['input_ids'][:, 1] % 2, params='lora', loss='mse')
    class A: per_device_train_batch_size, gradient_accumulation_steps, learning_rate, optim = 16, 1, 0.05, 'sgd'
    class S: log_history = []
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        cb.on_train_begin(A(), S(), None, model=pm)
    assert cb.analysis.settings['n_params'] == count_params(select_params(pm, 'lora')) and cb.stop_step >= 1


def test_compare_a_lora_model_against_its_kernel():
    "LoRA fine-tuning held against kernel GD on the LoRA kernel: linearization R² and the kernel's drift are reported."
    from ntk_finetune.compare import compare
    from ntk_finetune.finetune import toy_task_data
    pm = lora('llama', 'lm')
    r = compare(pm, None, 'toy', steps=10, lr=0.05, data=toy_task_data(), output_fn=tiny_output_fn(), params='lora',
                progress=False)
    assert r['linearization_r2'] > 0.9 and r['kernel_drift'] and r['kernel_drift'][0]['relative_drift'] > 0
