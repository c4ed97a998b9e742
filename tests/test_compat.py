"""Each shim of mmvitscale.compat: needed here, applied, and working."""
import os.path as osp
import subprocess
import sys

import pytest

from mmvitscale import compat


def test_shims_applied_once():
    assert compat.APPLIED.count('scoped-weights-only') == 1
    assert compat.apply_all() == []  # idempotent


def test_torchvision_and_hosts_import_in_a_fresh_interpreter():
    code = ('import mmvitscale, torchvision, torchvision.transforms, mmdet.models, '
            'mmpretrain.models, mmaction.models; '
            'from mmvitscale.compat import APPLIED; print(",".join(APPLIED))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    applied = out.stdout.strip().split(',')
    # Both package shims are needed by this stack (see stack.md); if upstream fixes them,
    # this test tells us the shim became dead code.
    assert 'torchvision-schemas' in applied
    assert 'mmaction-drn-stub' in applied


def test_torchvision_needs_the_shim():
    """Without the start-up hook's finder, torchvision does not import on this stack."""
    code = ('import sys; sys.meta_path[:] = [f for f in sys.meta_path '
            'if not getattr(f, "_mmvitscale_hook", False)]; import torchvision')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode != 0 and 'torchvision::nms does not exist' in out.stderr


def test_drn_stub_refuses_to_build():
    from mmaction.models.localizers.drn.drn import DRN
    with pytest.raises(ImportError, match='packaged without mmaction/models/localizers/drn'):
        DRN()


@pytest.mark.parametrize('first', ['timm', 'torchvision', 'mmpretrain.models', 'mmdet.models',
                                   'mmaction.models'])
def test_any_import_order(first):
    """A fresh interpreter imports each library before (or without) mmvitscale, then it."""
    code = (f'import {first}; import sys; assert "mmvitscale" not in sys.modules; '
            'import mmvitscale, torchvision.ops, mmdet.models, mmpretrain.models, '
            'mmaction.models; from mmaction.models.localizers.drn.drn import DRN; print("ok")')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == 'ok', out.stderr[-3000:]


def test_stub_drn_only_where_the_wheel_lacks_it():
    import importlib.util
    spec = importlib.util.find_spec('mmaction')
    folder = osp.join(spec.submodule_search_locations[0], 'models', 'localizers', 'drn')
    from mmaction.models.localizers import drn
    assert osp.isdir(folder) == (getattr(drn, '__file__', None) is not None)


def test_every_mmengine_checkpoint_read_goes_through_the_safe_reader():
    from mmengine.runner import Runner
    from mmengine.runner import checkpoint as ckpt_module
    assert ckpt_module.CheckpointLoader._schemes[''] is compat.load_from_local
    assert ckpt_module.load_url is compat.safe_load_url
    assert ckpt_module.torch.load is compat.torch_load
    assert getattr(Runner.resume, '__wrapped__', None) is not None
    assert getattr(Runner.load_checkpoint, '__wrapped__', None) is not None


def test_checkpoint_package_does_not_import_compat():
    """The dependency is one-way: compat imports checkpoint, never the reverse."""
    import ast
    import glob
    folder = osp.join(osp.dirname(compat.__file__), 'checkpoint')
    for path in glob.glob(osp.join(folder, '*.py')):
        with open(path) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ''] + [a.name for a in node.names]
                assert not any('compat' in n for n in names), (path, node.lineno)
            elif isinstance(node, ast.Import):
                assert not any('compat' in a.name for a in node.names), (path, node.lineno)
