"""The package as a user installs it: an sdist and a wheel built from it (`python -m build`, the wheel from the
unpacked sdist, so the sdist must carry everything setup.py reads), the wheel installed (not editable) into a fresh virtual
environment, works from a folder outside the repository — the shipped evidence, the report's KaTeX, the notebooks'
module index and the `ntk-finetune` command. Its dependencies come from the project venv (a path, not a reinstall),
so this checks what the wheel carries, not how pip resolves torch."""
import json, os, site, subprocess, sys, venv
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('install')
    r = subprocess.run([sys.executable, '-m', 'build', '--no-isolation', '-o', str(tmp / 'dist'), str(ROOT)],
                       capture_output=True, text=True, cwd=tmp)
    assert r.returncode == 0, (r.stdout + r.stderr)[-2000:]
    wheel, = (tmp / 'dist').glob('ntk_finetune-*.whl')
    env = tmp / 'env'
    venv.EnvBuilder(with_pip=False).create(env)
    py = env / 'bin' / 'python'
    sp = Path(subprocess.check_output([py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                                      text=True).strip())
    (sp / 'project_deps.pth').write_text('\n'.join(site.getsitepackages()) + '\n')  # torch & co., not ntk_finetune
    subprocess.run([sys.executable, '-m', 'pip', '--python', str(py), 'install', '--no-deps', '-q', str(wheel)],
                   check=True, capture_output=True)
    return env, wheel, tmp


def test_wheel_carries_the_package_data(installed):
    import zipfile
    _, wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    assert 'ntk_finetune/assets/evidence.json' in names and any(n.startswith('ntk_finetune/assets/katex/') for n in names)
    assert not any(n.startswith(('nbs/', 'tests/', 'results/')) for n in names)
    meta = next(zipfile.ZipFile(wheel).read(n).decode() for n in names if n.endswith('METADATA'))
    assert 'Requires-Python: >=' in meta and 'Provides-Extra: peft' in meta and 'License: Apache-2.0' in meta
    assert 'Project-URL: Documentation' in meta and any(n.endswith('.dist-info/licenses/LICENSE') for n in names)


def test_sdist_carries_what_setup_reads(installed):
    import tarfile
    _, _, tmp = installed
    sdist, = (tmp / 'dist').glob('ntk_finetune-*.tar.gz')
    names = {n.split('/', 1)[1] for n in tarfile.open(sdist).getnames() if '/' in n}
    assert {'settings.ini', 'setup.py', 'README.md', 'LICENSE', 'ntk_finetune/assets/evidence.json'} <= names


def test_installed_package_works_outside_the_checkout(installed, tmp_path):
    env, _, _ = installed
    code = ("import ntk_finetune, json; from ntk_finetune.evidence import load_evidence; "
            "from ntk_finetune.report import katex_dir; e = load_evidence(); "
            "print(json.dumps([ntk_finetune.__file__, len(e['stopping']), str(katex_dir())]))")
    out = subprocess.run([env / 'bin' / 'python', '-c', code], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, 'PYTHONPATH': ''})
    assert out.returncode == 0, out.stderr[-2000:]
    where, groups, katex = json.loads(out.stdout.strip().splitlines()[-1])
    assert where.startswith(str(env)) and groups >= 4 and Path(katex).is_dir()
    cli = subprocess.run([env / 'bin' / 'ntk-finetune', '--help'], capture_output=True, text=True, cwd=tmp_path)
    assert cli.returncode == 0 and 'analyze' in cli.stdout
