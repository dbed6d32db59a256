"The store: spec identity, artefacts (atomic, checksummed, no pickle), ledgers and tables."
import dataclasses, json, os, warnings
import numpy as np, pytest, torch
from ntk_finetune.store import (Spec, spec_key, canonical, pack, unpack, save_artifact, load_artifact, ArtifactError,
                                Store, Ledger, Table)


@dataclasses.dataclass(frozen=True)
class S(Spec):
    a: int = 1
    b: tuple = ()
    c: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class T(Spec):
    a: int = 1
    b: tuple = ()
    c: dict = dataclasses.field(default_factory=dict)


@pytest.mark.parametrize('x, y', [(S(b=(1, 2)), S(b=[1, 2])), (S(c={'x': 1, 'y': 2}), S(c={'y': 2, 'x': 1})),
                                  (S(a=np.int64(1)), S(a=1))])
def test_equal_specs_share_a_key(x, y):
    assert x.key() == y.key()


@pytest.mark.parametrize('other', [S(a=2), S(b=(1,)), S(c={'x': 1}), T()])
def test_any_difference_changes_the_key(other):
    assert S().key() != other.key()  # T(): same fields, another kind of spec


def test_key_is_sha256_of_canonical_json():
    import hashlib
    want = hashlib.sha256(json.dumps({'a': 1, 'b': [], 'c': {}, 'spec': 'S'}, sort_keys=True).encode()).hexdigest()
    assert S().key() == want


@pytest.mark.parametrize('bad, msg', [({'f': len}, "is a builtin"), ({'x': float('nan')}, 'must be finite'),
                                      ({1: 2}, 'non-string key'), ({'t': torch.ones(1)}, 'is a Tensor')])
def test_canonical_refuses_what_json_cannot_hold(bad, msg):
    with pytest.raises((TypeError, ValueError), match=msg):
        canonical(bad)


def test_pack_round_trip_of_nested_state():
    state = {'a': (1, [2.5, None], {'k': torch.arange(3)}), 3: 'int key', (1, 2): 'tuple key',
             'x': {'__tensor__': 'a user dict with a reserved key'}, 'bf': torch.ones(2, dtype=torch.bfloat16)}
    tensors, skel = pack(state)
    json.dumps(skel)  # the skeleton is plain JSON
    back = unpack(json.loads(json.dumps(skel)), tensors)
    assert back[3] == 'int key' and back[(1, 2)] == 'tuple key' and back['x'] == state['x']
    assert back['a'][:2] == (1, [2.5, None]) and torch.equal(back['a'][2]['k'], torch.arange(3))
    assert back['bf'].dtype == torch.bfloat16


def test_pack_refuses_objects():
    with pytest.raises(TypeError, match='cannot store a object'):
        pack({'x': object()})


@pytest.mark.parametrize('damage', ['flip', 'truncate', 'empty'])
def test_damaged_artifact_is_caught(tmp_path, damage):
    f = save_artifact(tmp_path / 'a.safetensors', {'G': torch.randn(50, 50, dtype=torch.float64)}, {'m': 1})
    raw = bytearray(f.read_bytes())
    if damage == 'flip':
        raw[-100] ^= 1
    f.write_bytes(bytes(raw[: len(raw) // 2] if damage == 'truncate' else b'' if damage == 'empty' else raw))
    with pytest.raises(ArtifactError, match=str(f.name)):
        load_artifact(f)


def test_failed_write_keeps_the_old_artifact(tmp_path, monkeypatch):
    f = save_artifact(tmp_path / 'a.safetensors', {'G': torch.zeros(2)}, {'v': 1})
    import safetensors.torch as st

    def boom(tensors, path, metadata=None):
        open(path, 'wb').write(b'half')
        raise OSError('disk full')

    monkeypatch.setattr(st, 'save_file', boom)
    with pytest.raises(OSError):
        save_artifact(f, {'G': torch.ones(2)}, {'v': 2})
    assert load_artifact(f).meta == {'v': 1} and [p.name for p in tmp_path.iterdir()] == ['a.safetensors']


def test_store_get_refuses_another_spec_and_corruption(tmp_path):
    st = Store(tmp_path)
    st.put(S(), {'G': torch.ones(3)}, {'note': 'x'})
    assert st.get(S()).meta == {'note': 'x'}
    os.replace(st.path(S()), st.path(S(a=5)))  # a file renamed under another spec's name
    with pytest.warns(UserWarning, match='holds another spec'):
        assert st.get(S(a=5)) is None
    st.path(S(a=5)).write_bytes(b'garbage')
    with pytest.warns(UserWarning, match='unreadable'):
        assert st.get(S(a=5)) is None


def test_store_root_that_is_a_file(tmp_path):
    (tmp_path / 'f').write_text('x')
    with pytest.raises(ValueError, match='is a file, not a folder'):
        Store(tmp_path / 'f')


def test_ledger_resumes_and_drops_what_no_longer_holds(tmp_path):
    lg = Ledger(tmp_path / 'l.json')
    for e in ([0, 2], [2, 4], [4, 6]):
        lg.add(e)
    with pytest.warns(UserWarning, match='1 finished piece'):
        lg2 = Ledger(tmp_path / 'l.json', valid=lambda e: e != [2, 4])
    assert list(lg2) == [[0, 2], [4, 6]] and json.loads((tmp_path / 'l.json').read_text()) == [[0, 2], [4, 6]]
    (tmp_path / 'l.json').write_text('[[0, 2], [4')  # truncated
    with pytest.warns(UserWarning, match='unreadable'):
        assert len(Ledger(tmp_path / 'l.json')) == 0


def test_table_resumes_after_a_crash(tmp_path):
    seen = []

    def fn(s):
        seen.append(s.a)
        if s.a == 3:
            raise RuntimeError('killed')
        return {'a2': s.a * 2}

    specs = [S(a=a) for a in (1, 2, 3, 4)]
    with pytest.raises(RuntimeError):
        Table(tmp_path / 't.json').run(specs, fn, progress=False)
    seen.clear()
    rows = Table(tmp_path / 't.json').run(specs, lambda s: {'a2': s.a * 2}, progress=False)
    assert [r['a2'] for r in rows] == [2, 4, 6, 8] and all(r['key'] == s.key() for r, s in zip(rows, specs))
    assert seen == []  # rows 1 and 2 were reused, not rerun


def test_table_refuses_a_foreign_file(tmp_path):
    (tmp_path / 't.json').write_text('[1, 2]')
    with pytest.raises(ValueError, match='not a table file'):
        Table(tmp_path / 't.json')
