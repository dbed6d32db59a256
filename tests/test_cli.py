import json, os, subprocess, sys
from pathlib import Path
BIN = Path(sys.executable).parent/'ntk-finetune'

def test_demo_cli(tmp_path):
    r = subprocess.run([str(BIN), 'demo', '--n', '16', '--json', str(tmp_path/'d.json')], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert 'zero-shot test accuracy' in r.stdout
    d = json.loads((tmp_path/'d.json').read_text())
    assert d['params']['attention'] == 26542080 and d['splits']['train'] > 8000

def test_cli_bad_task_one_line_error():
    r = subprocess.run([str(BIN), 'demo', '--task', 'nope'], capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stderr.strip().count('\n') == 0 and 'unknown task' in r.stderr
