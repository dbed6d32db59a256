import pytest, torch
from ntk_finetune.task_vectors import TaskVector, task_vector
from ntk_finetune.models import tiny_model

@pytest.mark.parametrize('damage', ['truncated_tensors', 'manifest_without_tensors', 'missing'])
def test_damaged_task_vector_is_one_line(tmp_path, damage):
    pt, ft = tiny_model('llama', seed=0), tiny_model('llama', seed=1)
    d = tmp_path / 'tv'; task_vector(pt, ft, 'attention').save(d)
    if damage == 'truncated_tensors':
        f = d / 'task_vector.safetensors'; f.write_bytes(f.read_bytes()[:100])
    elif damage == 'manifest_without_tensors':
        (d / 'task_vector.json').write_text('{"meta": {}}')
    else:
        (d / 'task_vector.safetensors').unlink()
    with pytest.raises(ValueError, match='holds no readable task vector') as e: TaskVector.load(d)
    assert '\n' not in str(e.value)
