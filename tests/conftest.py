import os
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_VERBOSITY', 'error')
import pytest, torch

def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: takes more than ~30 s; run with `make test-slow`')
    config.addinivalue_line('markers', 'gpu: needs a CUDA device')

def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available(): return
    skip = pytest.mark.skip(reason='needs a CUDA device')
    for it in items:
        if 'gpu' in it.keywords: it.add_marker(skip)

@pytest.fixture(scope='session')
def smollm2():
    from ntk_finetune.models import load_model
    return load_model('smollm2-135m')

@pytest.fixture(scope='session')
def minilm():
    from ntk_finetune.models import load_model
    return load_model('minilm-l6', kind='classification')
