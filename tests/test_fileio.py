import os
import stat
import warnings

import pytest

from mmvitscale.fileio import (JsonlError, append_jsonl, atomic_path, atomic_write, read_jsonl,
                               repair_jsonl, to_jsonl)


def test_atomic_write_text_bytes_and_mode(tmp_path):
    path = tmp_path / 'sub' / 'a.json'
    atomic_write(str(path), '{"x": 1}')
    assert path.read_text() == '{"x": 1}'
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    atomic_write(str(path), b'\x00\x01')
    assert path.read_bytes() == b'\x00\x01'
    assert os.listdir(tmp_path / 'sub') == ['a.json']


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / 'a.txt'
    path.write_text('old')
    with pytest.raises(RuntimeError, match='boom'):
        with atomic_path(str(path)) as tmp:
            with open(tmp, 'w') as f:
                f.write('half')
            raise RuntimeError('boom')
    assert path.read_text() == 'old'
    assert os.listdir(tmp_path) == ['a.txt']


# ---------------------------------------------------------------------------- JSON lines
def test_append_jsonl_writes_one_line_per_row(tmp_path):
    path = tmp_path / 'sub' / 'rows.jsonl'
    assert append_jsonl(str(path), []) == 0 and not path.exists()  # nothing: file untouched
    assert append_jsonl(str(path), [dict(b=1, a='x\ny'), dict(a=2)]) == 2
    assert append_jsonl(str(path), iter([dict(a=3)]), lock=True) == 1
    assert path.read_text() == '{"a": "x\\ny", "b": 1}\n{"a": 2}\n{"a": 3}\n'
    assert (tmp_path / 'sub' / 'rows.jsonl.lock').exists()
    assert [v for _, v in read_jsonl(str(path))] == [dict(a='x\ny', b=1), dict(a=2), dict(a=3)]
    assert to_jsonl([dict(b=1, a=2)]) == '{"a": 2, "b": 1}\n'
    with open(path, 'ab') as f:  # a crashed writer's torn line is closed, ours stays whole
        f.write(b'{"a": 4')
    append_jsonl(str(path), [dict(a=5)])
    assert path.read_bytes().endswith(b'\n{"a": 4\n{"a": 5}\n')


def test_repair_jsonl_cuts_only_a_torn_tail(tmp_path):
    path = tmp_path / 'rows.jsonl'
    assert repair_jsonl(str(path)) == 0  # no file
    whole = b'{"a": 1}\n{"a": 2}\n'
    path.write_bytes(whole + b'{"a": 3')  # no newline: torn
    assert repair_jsonl(str(path)) == len(b'{"a": 3') and path.read_bytes() == whole
    path.write_bytes(whole + b'garbage\n')  # a whole last line that is not JSON: torn too
    assert repair_jsonl(str(path)) == len(b'garbage\n') and path.read_bytes() == whole
    assert repair_jsonl(str(path)) == 0 and path.read_bytes() == whole


def test_read_jsonl_torn_tail_and_corrupt_middle(tmp_path):
    path = tmp_path / 'rows.jsonl'
    assert read_jsonl(str(path)) == []
    path.write_bytes(b'{"a": 1}\n\nnot json\n[2]\n{"a": 3')
    with pytest.raises(JsonlError, match=r'rows\.jsonl:3: not JSON') as info:
        read_jsonl(str(path))
    assert isinstance(info.value, ValueError) and info.value.lineno == 3
    with pytest.warns(UserWarning, match=r'rows\.jsonl:3: skipping an unparsable line') as got:
        rows = read_jsonl(str(path), on_bad='warn', skip_torn_tail=True)
    assert rows == [(1, dict(a=1)), (4, [2])] and len(got) == 1  # the torn tail: silent
    with pytest.warns(UserWarning) as got:
        read_jsonl(str(path), on_bad='warn')
    where = [str(w.message).split(': ')[0].rsplit('/', 1)[-1] for w in got]
    assert where == ['rows.jsonl:3', 'rows.jsonl:5']  # an unparsable last line: not torn here
    path.write_bytes(b'{"a": 1}\n{"a": 2}')  # a whole object without its newline is a row
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert read_jsonl(str(path), skip_torn_tail=True) == [(1, dict(a=1)), (2, dict(a=2))]
    with pytest.raises(ValueError, match='on_bad'):
        read_jsonl(str(path), on_bad='ignore')
