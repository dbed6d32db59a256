import pytest, torch
from ntk_finetune.task_vectors import TaskVector, task_vector
from ntk_finetune.models import tiny_model

@pytest.mark.parametrize('damage', ['truncated_tensors', 'manifest_without_tensors', 'missing', 'flipped_byte',
                                    'edited_meta'])
def test_damaged_task_vector_is_one_line(tmp_path, damage):
    pt, ft = tiny_model('llama', seed=0), tiny_model('llama', seed=1)
    d = tmp_path / 'tv'; task_vector(pt, ft, 'attention').save(d)
    if damage == 'truncated_tensors':
        f = d / 'task_vector.safetensors'; f.write_bytes(f.read_bytes()[:100])
    elif damage == 'manifest_without_tensors':
        (d / 'task_vector.json').write_text('{"meta": {}}')
    elif damage == 'flipped_byte':  # in the last tensor's data: only the checksum can tell
        f = d / 'task_vector.safetensors'; b = bytearray(f.read_bytes()); b[-3] ^= 0xFF; f.write_bytes(bytes(b))
    elif damage == 'edited_meta':
        import json
        m = json.loads((d / 'task_vector.json').read_text()); m['meta'] = {'task': 'another'}
        (d / 'task_vector.json').write_text(json.dumps(m))
    else:
        (d / 'task_vector.safetensors').unlink()
    with pytest.raises(ValueError, match='holds no readable task vector') as e: TaskVector.load(d)
    assert '\n' not in str(e.value)

def test_a_format_1_task_vector_still_loads(tmp_path):
    "Folders written before the deltas became a store artefact (no checksum, no header meta) load unchanged."
    import json
    from safetensors.torch import save_file
    tau = task_vector(tiny_model('llama', seed=0), tiny_model('llama', seed=1), 'attention')
    d = tmp_path / 'old'; d.mkdir()
    save_file({k: v.contiguous() for k, v in tau.deltas.items()}, str(d / 'task_vector.safetensors'))
    man = {'format': 1, 'meta': tau.meta, 'tensors': {k: [list(v.shape), str(v.dtype)] for k, v in tau.deltas.items()}}
    (d / 'task_vector.json').write_text(json.dumps(man))
    back = TaskVector.load(d)
    assert back.meta == tau.meta and all(torch.equal(back.deltas[k], v) for k, v in tau.deltas.items())

from ntk_finetune.task_vectors import apply, merged, multitask_kernel, study
from ntk_finetune.entk import jacobian_reference
from ntk_finetune.models import select_params
from ntk_finetune.outputs import tiny_output_fn, LabelWordMargin, _TinyVocab

def test_shapes_and_architectures_must_match():
    pt = tiny_model('llama', seed=0)
    with pytest.raises(ValueError, match='has shape'): task_vector(pt, tiny_model('llama', seed=1, hidden=48), 'attention')
    with pytest.raises(ValueError, match='fine-tuned model is a'): task_vector(pt, tiny_model('gpt2'), 'attention')
    a, b = task_vector(pt, tiny_model('llama', seed=1), 'attention'), task_vector(pt, tiny_model('llama', seed=2), 'attention')
    k = next(iter(b.deltas))
    b.deltas[k] = b.deltas[k][:1]                               # same names, another shape
    with pytest.raises(ValueError, match='shape'): a + b

def test_heads_are_kept_apart_and_merged_equals_apply():
    """exclude_head leaves the task head out of τ; apply(head=...) puts a task's own head in; merged() is a copy with
    exactly the weights apply() gives, and the original is untouched."""
    pt, ft = tiny_model('llama', 'classification', seed=0), tiny_model('llama', 'classification', seed=1)
    heads = set(select_params(pt, 'head'))
    tau = task_vector(pt, ft, 'all', exclude_head=True)
    assert heads and not heads & set(tau.deltas) and set(tau.deltas)
    own = {k: dict(ft.named_parameters())[k].detach().clone() for k in heads}
    before = {k: v.detach().clone() for k, v in pt.named_parameters()}
    with apply(pt, tau, head=own):
        inside = {k: v.detach().clone() for k, v in pt.named_parameters()}
    m = merged(pt, tau, head=own)
    assert all(torch.equal(inside[k], v) for k, v in m.named_parameters())
    assert all(torch.equal(inside[k], dict(ft.named_parameters())[k]) for k in heads)
    assert all(torch.equal(before[k], v) for k, v in pt.named_parameters())

def test_cross_block_equals_the_explicit_jacobians():
    m = tiny_model('gpt2', dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    bA = {'input_ids': torch.randint(1, 128, (3, 5), generator=g), 'attention_mask': torch.ones(3, 5, dtype=torch.long)}
    bB = {'input_ids': torch.randint(1, 128, (4, 7), generator=g), 'attention_mask': torch.ones(4, 7, dtype=torch.long)}
    fA, fB = tiny_output_fn(2), LabelWordMargin(_TinyVocab(), [' ccc', ' a'])
    blocks = multitask_kernel(m, [bA, bB], [fA, fB], 'attention', progress=False)
    sel = select_params(m, 'attention')
    JA, JB = jacobian_reference(m, bA, fA, sel), jacobian_reference(m, bB, fB, sel)
    assert torch.allclose(blocks[(0, 1)], JA @ JB.T, rtol=1e-8, atol=1e-10)
    assert torch.allclose(blocks[(1, 0)], JB @ JA.T, rtol=1e-8, atol=1e-10)

def test_disentanglement_error_against_its_definition():
    """ξ(α1, α2) = Σ_t mean over task t's inputs of [prediction with both vectors ≠ with task t's vector alone]. With
    τ2 = 0 the first term vanishes and the second is the share of task 2's predictions that α1·τ1 flips, for every α2;
    with both vectors zero, ξ = 0."""
    from ntk_finetune.task_vectors import disentanglement_error, predictions
    m = tiny_model('gpt2')
    g = torch.Generator().manual_seed(0)
    mk = lambda: {'input_ids': torch.randint(1, 128, (32, 6), generator=g), 'attention_mask': torch.ones(32, 6, dtype=torch.long)}
    b1, b2 = mk(), mk()
    fn = tiny_output_fn(2)
    tau = task_vector(m, tiny_model('gpt2', seed=3), 'attention')
    zero = tau * 0.0
    alphas = [0.0, 0.5, 1.0]
    xi = disentanglement_error(m, [tau, zero], [fn, fn], [b1, b2], alphas)
    base = predictions(m, fn, b2)
    for i, a in enumerate(alphas):
        with apply(m, tau, [a]):
            flips = float((predictions(m, fn, b2) != base).double().mean())
        assert torch.allclose(xi[i], torch.full((3,), flips, dtype=torch.float64))
    assert xi[1:].sum() > 0                                          # τ1 does flip some of task 2's predictions
    assert torch.equal(disentanglement_error(m, [zero, zero], [fn, fn], [b1, b2], alphas), torch.zeros(3, 3, dtype=torch.float64))
