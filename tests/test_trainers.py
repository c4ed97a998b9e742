"""Stock trainers on the cls config: ``mmvitscale::`` inheritance, mim, torchrun, resume.

Training runs are subprocesses on 64 Fashion-MNIST items (two iterations of 32 an epoch), so
they exercise the real entry points: ``tools/train.py`` / ``tools/test.py``, ``mim train`` with
our and mmpretrain's train scripts, ``tools/dist_train.sh`` (2 CPU ranks, gloo) and ``--resume``
after a SIGKILL. ``tools/slurm_train.sh`` is tested in ``test_slurm.py``.
"""
import hashlib
import inspect
import json
import os
import os.path as osp
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from typing import Dict, List, Optional

import pytest
from mmengine.config import Config

import mmvitscale_mmengine_hook as hook
from mmvitscale.compat import torch_load
from mmvitscale.datasets import FashionMNISTNotFoundError, prepare_classification, source_dir

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CLS_CFG = osp.join(ROOT, 'configs', 'cls', 'scaled_vit_fmnist.py')
PKG_BASE = 'mmvitscale::cls/scaled_vit_fmnist.py'
SETUP = runpy.run_path(osp.join(ROOT, 'setup.py'), run_name='mmvitscale_setup')
TIMEOUT = 300
BATCH, TRAIN_N, VAL_N = 32, 64, 32  # two iterations an epoch; small enough for 2 busy cores


def weights_digest(state_dict: dict) -> str:
    """sha256 of a state dict's tensors, in key order."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        digest.update(key.encode())
        digest.update(state_dict[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# Imported by the training subprocesses (custom_imports): per-rank samples and final weights,
# and an optional stall after a given iteration so that a test can SIGKILL a run mid-epoch.
PROBE = 'import hashlib\n\n\n' + inspect.getsource(weights_digest) + '''
import json
import os
import os.path as osp
import time

from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class ProbeHook(Hook):
    priority = 'LOWEST'  # after CheckpointHook

    def __init__(self, stall_at_iter=None):
        self.stall_at_iter = stall_at_iter

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        samples = [int(s.sample_idx) for s in data_batch['data_samples']]
        with open(osp.join(runner.work_dir, f'samples_rank{get_rank()}.jsonl'), 'a') as f:
            f.write(json.dumps(dict(iter=runner.iter, samples=samples)) + '\\n')
        flag = os.environ.get('PROBE_STALL_FLAG')
        if flag and runner.iter == self.stall_at_iter:
            with open(flag, 'w') as f:
                f.write(str(runner.iter))
            time.sleep(600)

    def after_run(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        with open(osp.join(runner.work_dir, f'weights_rank{get_rank()}.json'), 'w') as f:
            json.dump(dict(digest=weights_digest(model.state_dict()), iter=runner.iter), f)
'''


def tiny_options(data_root: str, epochs: int = 1) -> List[str]:
    """``--cfg-options`` values: tiny data, small batches, no worker processes."""
    opts = [f'train_cfg.max_epochs={epochs}']
    for split, n in (('train', TRAIN_N), ('val', VAL_N), ('test', VAL_N)):
        opts += [f'{split}_dataloader.dataset.data_root={data_root}',
                 f'{split}_dataloader.dataset.indices={n}', f'{split}_dataloader.num_workers=0',
                 f'{split}_dataloader.batch_size={BATCH}']
    return opts


def run(cmd: List[str], env: Optional[Dict[str, str]] = None, cwd: str = ROOT,
        ok: bool = True) -> subprocess.CompletedProcess:
    """Run a command; on failure (when ``ok``) show the end of its output."""
    env = venv_env() if env is None else env
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    if ok:
        assert out.returncode == 0, f'{cmd}\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}'
    return out


def venv_env(**extra: str) -> Dict[str, str]:
    """This interpreter's bin first on PATH (mim, torchrun, python); one OpenMP thread.

    Two OpenMP threads spin-waiting on two shared, busy cores make an iteration 30x slower.
    """
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', **extra)
    env['PATH'] = osp.dirname(sys.executable) + os.pathsep + env.get('PATH', '')
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def weights(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def samples(path: str) -> List[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def ckpt_digest(path: str) -> str:
    """sha256 of a checkpoint's weights, the same way the probe hashes a live model."""
    return weights_digest(torch_load(path, map_location='cpu')['state_dict'])


@pytest.fixture(scope='session')
def fmnist_root(tmp_path_factory) -> str:
    """Fashion-MNIST laid out for mmpretrain in a temporary folder (skip if the source lacks)."""
    try:
        source_dir()
    except FashionMNISTNotFoundError as e:
        pytest.skip(f'Debian Fashion-MNIST files absent: {e}')
    root = str(tmp_path_factory.mktemp('data') / 'fashion_mnist')
    prepare_classification(root)
    return root


@pytest.fixture(scope='session')
def probe_dir(tmp_path_factory) -> str:
    """A folder, unrelated to the repository, holding the probe module and user configs."""
    d = tmp_path_factory.mktemp('user_project')
    (d / 'trainer_probe.py').write_text(PROBE)
    return str(d)


def user_config(probe_dir: str, name: str, data_root: str, epochs: int,
                stall_at_iter: Optional[int] = None, train: int = TRAIN_N) -> str:
    """A config outside the repository that inherits ours through ``mmvitscale::``."""
    path = osp.join(probe_dir, name)
    with open(path, 'w') as f:
        f.write(f'''_base_ = {PKG_BASE!r}
custom_imports = dict(imports=['trainer_probe'], allow_failed_imports=False)
custom_hooks = [dict(type='ProbeHook', stall_at_iter={stall_at_iter!r})]
randomness = dict(seed=0, deterministic=True)
train_cfg = dict(max_epochs={epochs})
train_dataloader = dict(batch_size={BATCH}, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root={data_root!r}, indices={train}))
val_dataloader = dict(batch_size={BATCH}, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root={data_root!r}, indices={VAL_N}))
test_dataloader = val_dataloader
''')
    return path


# --------------------------------------------------------------------------- the mmengine hook
def test_hook_is_active_at_startup_without_heavy_imports():
    code = ('import json, sys; print(json.dumps(dict(hook="mmvitscale_mmengine_hook" in '
            'sys.modules, loaded=[m for m in ("torch", "mmengine", "mmvitscale") '
            'if m in sys.modules])))')
    # -c runs after site.py: what is imported before our code came from .pth files
    info = json.loads(run([sys.executable, '-c', code], cwd=tempfile.gettempdir()).stdout)
    assert info == dict(hook=True, loaded=[])
    assert hook.installed()
    pth = osp.join(sysconfig.get_paths()['purelib'], SETUP['HOOK_PTH'])
    with open(pth) as f:
        assert f.read() == SETUP['HOOK_PTH_LINE']


def test_hook_scope_and_module_table_in_process():
    from mmengine.config.utils import MODULE2PACKAGE
    assert MODULE2PACKAGE['mmvitscale'] == 'mmvitscale'
    path, scope = Config._get_cfg_path(PKG_BASE, 'user.py')
    assert scope is None and osp.realpath(path) == osp.realpath(CLS_CFG)
    assert Config._get_cfg_path('mmpretrain::_base_/default_runtime.py', 'u.py')[1] == 'mmpretrain'
    assert not hook.patch_config_scope(sys.modules['mmengine.config.config'])  # idempotent
    fake = type(sys)('fake_utils')
    fake.MODULE2PACKAGE = {}
    assert hook.patch_module2package(fake) and not hook.patch_module2package(fake)
    assert fake.MODULE2PACKAGE == {'mmvitscale': 'mmvitscale'}


def test_pkg_base_loads_in_fresh_interpreter_only_with_hook(tmp_path):
    cfg = tmp_path / 'user_cfg.py'
    cfg.write_text(f'_base_ = {PKG_BASE!r}\ntrain_cfg = dict(max_epochs=2)\n')
    load = ('import json, sys; from mmengine.config import Config; '
            f'cfg = Config.fromfile({str(cfg)!r}); print(json.dumps(dict('
            'scopes=[cfg.model.get("_scope_"), cfg.train_dataloader.dataset.get("_scope_")], '
            'default_scope=cfg.default_scope, backbone=cfg.model.backbone.type, '
            'epochs=cfg.train_cfg.max_epochs)))')
    info = json.loads(run([sys.executable, '-c', load], cwd=str(tmp_path)).stdout)
    assert info == dict(scopes=[None, None], default_scope='mmpretrain',
                        backbone='mmvitscale.ScaledViT', epochs=2)
    unhook = ('import sys; sys.meta_path[:] = [f for f in sys.meta_path '
              'if not getattr(f, "_mmvitscale_hook", False)]; ')
    out = run([sys.executable, '-c', unhook + load], cwd=str(tmp_path), ok=False)
    assert out.returncode != 0
    assert 'mmengine does not support to load mmvitscale config' in out.stderr


@pytest.fixture(scope='module')
def src_copy(tmp_path_factory) -> str:
    """A copy of the source tree (building in place would replace ``.mim``'s symlinks)."""
    src = tmp_path_factory.mktemp('build') / 'proj'
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        '.venv', '.git', 'work_dirs', '*.egg-info', '.mim', '__pycache__', 'build', 'data',
        '.pytest_cache', 'results'))
    return str(src)


@pytest.mark.slow
def test_wheel_install_activates_hook(src_copy, tmp_path):
    run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation',
         '-w', str(tmp_path / 'dist'), src_copy])
    wheel = next((tmp_path / 'dist').glob('mmvitscale-*.whl'))
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        record = zf.read(next(n for n in names if n.endswith('.dist-info/RECORD'))).decode()
        assert zf.read(SETUP['HOOK_PTH']).decode() == SETUP['HOOK_PTH_LINE']
    assert {SETUP['HOOK_PTH'], 'mmvitscale_mmengine_hook.py'} <= names
    assert SETUP['HOOK_PTH'] + ',' in record  # so that pip uninstall removes it
    target = str(tmp_path / 'site')
    run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--no-compile', '--target',
         target, str(wheel)])
    # no site.py, then the wheel's folder first (as site-packages), then this venv for mmengine
    code = (f'import site, sys; site.addsitedir({target!r}); '
            f'site.addsitedir({sysconfig.get_paths()["purelib"]!r}); '
            'from mmengine.config import Config; '
            f'print(sys.modules["mmvitscale_mmengine_hook"].__file__); '
            f'print(Config._get_cfg_path({PKG_BASE!r}, "u.py")[0])')
    hook_file, base = run([sys.executable, '-S', '-c', code], cwd=str(tmp_path)).stdout.split()
    assert hook_file.startswith(target) and base.startswith(target)
    assert base.endswith(osp.join('mmvitscale', '.mim', 'configs', 'cls', 'scaled_vit_fmnist.py'))


def test_develop_install_writes_and_removes_pth(src_copy, tmp_path):
    site_dir = str(tmp_path)
    env = venv_env(PYTHONPATH=site_dir)
    setup = [sys.executable, 'setup.py', '-q', 'develop', '--no-deps', '--install-dir', site_dir]
    run(setup, env=env, cwd=src_copy)
    with open(osp.join(site_dir, SETUP['HOOK_PTH'])) as f:
        assert f.read() == SETUP['HOOK_PTH_LINE']
    assert osp.isfile(osp.join(site_dir, 'mmvitscale.egg-link'))
    run(setup + ['--uninstall'], env=env, cwd=src_copy)
    assert not osp.exists(osp.join(site_dir, SETUP['HOOK_PTH']))


def test_stale_pth_is_silent(tmp_path):
    (tmp_path / SETUP['HOOK_PTH']).write_text(SETUP['HOOK_PTH_LINE'])
    code = f'import site; site.addsitedir({str(tmp_path)!r}); print("ok")'
    out = run([sys.executable, '-S', '-c', code], cwd=str(tmp_path),
              env=venv_env(PYTHONPATH=''))
    assert out.stdout.strip() == 'ok' and out.stderr == ''


# --------------------------------------------------------------------------- training runs
@pytest.mark.slow
def test_train_then_test_scripts(fmnist_root, tmp_path):
    work = str(tmp_path / 'work')
    train = run([sys.executable, 'tools/train.py', CLS_CFG, '--work-dir', work,
                 '--cfg-options'] + tiny_options(fmnist_root))
    assert 'Epoch(train) [1][2/2]' in train.stdout + train.stderr  # 64 items, batch 32
    assert sorted(f for f in os.listdir(work) if f.endswith('.pth')) == ['epoch_1.pth']
    val = [line for line in (train.stdout + train.stderr).splitlines() if 'Epoch(val)' in line]
    test = run([sys.executable, 'tools/test.py', CLS_CFG, osp.join(work, 'epoch_1.pth'),
                '--work-dir', str(tmp_path / 'test'), '--cfg-options'] + tiny_options(fmnist_root))
    tested = [line for line in (test.stdout + test.stderr).splitlines() if 'Epoch(test)' in line]
    # same test items, same weights: the metric the run logged is reproduced from the file
    top1 = [line.split('accuracy/top1:')[1].split()[0] for line in val[-1:] + tested[-1:]]
    assert len(top1) == 2 and top1[0] == top1[1]


@pytest.mark.slow
@pytest.mark.parametrize('package', ['mmvitscale', 'mmpretrain'])
def test_mim_train_runs_stock_scripts(package, fmnist_root, probe_dir, tmp_path):
    """mim runs ``<package>/.mim/tools/train.py`` and passes the extra arguments through."""
    cfg = CLS_CFG if package == 'mmvitscale' else user_config(
        probe_dir, 'user_mim.py', fmnist_root, epochs=3)
    work = str(tmp_path / 'work')
    extra = ['--no-persistent-workers'] if package == 'mmpretrain' else []
    env = venv_env(PYTHONPATH=probe_dir + os.pathsep + os.environ.get('PYTHONPATH', ''))
    out = run([sys.executable, '-m', 'mim', 'train', package, cfg, '--work-dir', work] + extra +
              ['--cfg-options'] + tiny_options(fmnist_root), env=env)
    script = osp.join(package, '.mim', 'tools', 'train.py')
    assert script in out.stdout  # mim's "Training command is ..."
    assert sorted(f for f in os.listdir(work) if f.endswith('.pth')) == ['epoch_1.pth']
    dumped = Config.fromfile(osp.join(work, osp.basename(cfg)), import_custom_modules=False)
    assert dumped.train_cfg.max_epochs == 1 and dumped.train_dataloader.dataset.indices == TRAIN_N
    if package == 'mmpretrain':
        assert dumped.train_dataloader.persistent_workers is False
        assert weights(osp.join(work, 'weights_rank0.json'))['iter'] == 2


@pytest.mark.slow
def test_dist_train_two_cpu_ranks_agree(fmnist_root, probe_dir, tmp_path):
    cfg = user_config(probe_dir, 'user_dist.py', fmnist_root, epochs=1, train=2 * TRAIN_N)
    work = str(tmp_path / 'work')
    env = venv_env(PYTHON=sys.executable, PORT=str(free_port()),
                   PYTHONPATH=probe_dir + os.pathsep + os.environ.get('PYTHONPATH', ''))
    run(['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), cfg, '2', '--work-dir', work], env=env)
    seen = [samples(osp.join(work, f'samples_rank{r}.jsonl')) for r in (0, 1)]
    assert [[s['iter'] for s in rank] for rank in seen] == [[0, 1], [0, 1]]
    idx = [{i for s in rank for i in s['samples']} for rank in seen]
    assert not idx[0] & idx[1] and idx[0] | idx[1] == set(range(2 * TRAIN_N))  # halves
    final = [weights(osp.join(work, f'weights_rank{r}.json'))['digest'] for r in (0, 1)]
    assert final[0] == final[1] == ckpt_digest(osp.join(work, 'epoch_1.pth'))


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted(fmnist_root, probe_dir, tmp_path):
    cfg = user_config(probe_dir, 'user_resume.py', fmnist_root, epochs=3, stall_at_iter=2)
    env = venv_env(PYTHONPATH=probe_dir + os.pathsep + os.environ.get('PYTHONPATH', ''))
    train = [sys.executable, 'tools/train.py', cfg, '--work-dir']
    full = str(tmp_path / 'full')
    run(train + [full], env=env)
    expected = weights(osp.join(full, 'weights_rank0.json'))
    assert expected['iter'] == 6

    work, flag = str(tmp_path / 'work'), str(tmp_path / 'stalled')
    proc = subprocess.Popen(train + [work], cwd=ROOT, env=dict(env, PROBE_STALL_FLAG=flag),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not osp.exists(flag) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert osp.exists(flag), f'the run never reached iteration 3 (rc {proc.poll()})'
        proc.send_signal(signal.SIGKILL)  # mid epoch 2: one update past epoch_1.pth is lost
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert sorted(f for f in os.listdir(work) if f.endswith('.pth')) == ['epoch_1.pth']
    assert not osp.exists(osp.join(work, 'weights_rank0.json'))

    resumed = run(train + [work, '--resume'], env=env)
    assert 'resumed epoch: 1, iter: 2' in resumed.stdout + resumed.stderr
    # killed after iteration 2 (0-based); the resumed run redoes it, a restart would begin at 0
    iters = [s['iter'] for s in samples(osp.join(work, 'samples_rank0.jsonl'))]
    assert iters == [0, 1, 2, 2, 3, 4, 5]
    assert weights(osp.join(work, 'weights_rank0.json')) == expected
    assert ckpt_digest(osp.join(work, 'epoch_3.pth')) == expected['digest']
