import os
import stat

import pytest

from mmvitscale.fileio import atomic_path, atomic_write


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
