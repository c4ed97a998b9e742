"""``tools/slurm_train.sh`` against a fake ``srun`` (arguments) and a real Slurm (training).

The real cluster is Debian's ``slurm-wlm`` + ``munge``, installed with apt when missing (root)
and started in a temporary folder by ``tests/slurm_cluster.py`` (own slurm.conf, ports, munge
key; daemons stopped at teardown). Where it cannot be started the cluster tests skip with the
reason, and fail under ``CI=true``.
"""
import json
import os
import os.path as osp
import runpy
import subprocess
import sys
import time
from typing import Dict, List

import pytest

from mmvitscale import compat
from scripts import load_script
from slurm_cluster import SlurmCluster, SlurmUnavailable
from test_trainers import (  # noqa: F401  (fmnist_root, probe_dir: fixtures)
    BATCH, ROOT, TRAIN_N, ckpt_digest, fmnist_root, free_port, probe_dir, run, samples,
    user_config, venv_env, weights)

SCRIPT = osp.join(ROOT, 'tools', 'slurm_train.sh')
CFG = osp.join(ROOT, 'configs', 'cls', 'scaled_vit_fmnist.py')
LAUNCH_VARS = ('GPUS', 'GPUS_PER_NODE', 'TASKS', 'TASKS_PER_NODE', 'CPUS_PER_TASK', 'SRUN_ARGS',
               'PORT', 'MASTER_PORT', 'MASTER_ADDR')
IN_CI = os.environ.get('CI', '').lower() in ('1', 'true', 'yes')

# Imported by the training ranks next to test_trainers' ProbeHook: what each rank saw.
SLURM_PROBE = '''import json
import os
import os.path as osp

from mmengine.dist import get_backend, get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

KEYS = ('SLURM_JOB_ID', 'SLURM_PROCID', 'SLURM_LOCALID', 'SLURM_NTASKS', 'SLURMD_NODENAME',
        'RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT', 'OMP_NUM_THREADS')


@HOOKS.register_module()
class SlurmProbeHook(Hook):

    def before_train(self, runner):
        info = dict(rank=get_rank(), world_size=get_world_size(), backend=get_backend(),
                    launcher=runner.launcher, env={k: os.environ.get(k) for k in KEYS})
        with open(osp.join(runner.work_dir, f'dist_rank{get_rank()}.json'), 'w') as f:
            json.dump(info, f)
'''


# --------------------------------------------------------------------------- fake srun
def fake_srun(tmp_path, **env: str):
    """Run the script with an ``srun`` that records its arguments; returns (result, args)."""
    fake = tmp_path / 'srun'
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$SRUN_LOG"\n'
                    'printf "%s\\n" "$MASTER_PORT" "$PYTHONPATH" "$OMP_NUM_THREADS" '
                    '> "$SRUN_LOG.env"\n')
    fake.chmod(0o755)
    log = str(tmp_path / 'srun.log')
    full_env = venv_env(SRUN_LOG=log, PYTHON=sys.executable)
    for key in LAUNCH_VARS:
        full_env.pop(key, None)
    full_env.update(env)
    for key in [k for k, v in env.items() if v == '-']:
        del full_env[key]  # '-' removes a variable
    full_env['PATH'] = f'{tmp_path}{os.pathsep}{full_env["PATH"]}'
    out = run(['bash', SCRIPT, 'part', 'job', CFG, 'wd', '--cfg-options',
               'train_cfg.max_epochs=1'], env=full_env, ok=False)
    if not osp.exists(log):
        return out, None
    with open(log) as f:
        args = f.read().splitlines()
    with open(log + '.env') as f:
        port, pythonpath, omp = f.read().splitlines()
    return out, dict(args=args, port=port, pythonpath=pythonpath, omp=omp)


def srun_options(args: List[str]) -> List[str]:
    return args[:args.index(sys.executable)]


def test_gpu_partition_one_rank_per_gpu(tmp_path, monkeypatch):
    out, got = fake_srun(tmp_path, GPUS='4', SRUN_ARGS='--quotatype=auto --time=5',
                         PORT='29123')
    assert out.returncode == 0, out.stderr
    args = got['args']
    assert srun_options(args) == ['-p', 'part', '--job-name=job', '--gres=gpu:4', '--ntasks=4',
                                  '--ntasks-per-node=4', '--cpus-per-task=5',
                                  '--kill-on-bad-exit=1', '--quotatype=auto', '--time=5']
    i = args.index(sys.executable)
    assert args[i + 1] == '-u'
    assert osp.realpath(args[i + 2]) == osp.join(ROOT, 'tools', 'train.py')
    monkeypatch.setenv('LOCAL_RANK', '0')  # train.parse_args sets it when absent
    train = runpy.run_path(osp.join(ROOT, 'tools', 'train.py'), run_name='train_module')
    parsed = train['parse_args'](args[i + 3:])
    assert (parsed.config, parsed.work_dir, parsed.launcher) == (CFG, 'wd', 'slurm')
    assert parsed.cfg_options == {'train_cfg.max_epochs': 1}
    assert got['port'] == '29123'
    assert osp.realpath(got['pythonpath'].split(os.pathsep)[0]) == ROOT


def test_gpu_ranks_span_nodes(tmp_path):
    out, got = fake_srun(tmp_path, GPUS='16')
    assert out.returncode == 0, out.stderr
    assert srun_options(got['args'])[3:6] == ['--gres=gpu:8', '--ntasks=16',
                                              '--ntasks-per-node=8']


@pytest.mark.parametrize('env,expected', [
    (dict(GPUS='0', TASKS='3'), ['--ntasks=3', '--cpus-per-task=1']),
    (dict(GPUS='0'), ['--ntasks=1', '--cpus-per-task=1']),
    (dict(GPUS='0', TASKS='4', TASKS_PER_NODE='2', CPUS_PER_TASK='8'),
     ['--ntasks=4', '--ntasks-per-node=2', '--cpus-per-task=8']),
])
def test_cpu_partition_requests_no_gpu(tmp_path, env, expected):
    out, got = fake_srun(tmp_path, **env)
    assert out.returncode == 0, out.stderr
    assert srun_options(got['args']) == ['-p', 'part', '--job-name=job', *expected,
                                         '--kill-on-bad-exit=1']
    assert got['port'] == '29500'


def test_threads_default_to_cpus_per_task(tmp_path):
    _, got = fake_srun(tmp_path, GPUS='0', CPUS_PER_TASK='3', OMP_NUM_THREADS='-')
    assert got['omp'] == '3'


@pytest.mark.parametrize('env,message', [
    (dict(GPUS='0', TASKS='0'), "TASKS must be a positive integer, got '0'"),
    (dict(GPUS='two'), "GPUS must be a non-negative integer, got 'two'"),
    (dict(GPUS='-1'), "GPUS must be a non-negative integer, got '-1'"),
    (dict(GPUS='2', TASKS='3'), 'one rank per GPU: TASKS (3) must equal GPUS (2)'),
    (dict(GPUS='0', TASKS='2', TASKS_PER_NODE='x'), 'TASKS_PER_NODE must be a positive'),
    (dict(GPUS='0', CPUS_PER_TASK='0'), 'CPUS_PER_TASK must be a positive integer'),
])
def test_bad_counts_stop_before_srun(tmp_path, env, message):
    out, got = fake_srun(tmp_path, **env)
    assert out.returncode == 2 and message in out.stderr and got is None


def test_usage_without_arguments():
    out = run(['bash', SCRIPT, 'part'], ok=False)
    assert out.returncode == 2 and 'usage:' in out.stderr


# --------------------------------------------------------------------------- CPU shim
@pytest.mark.parametrize('mode', ['patched', 'unpatched'])
def test_cpu_slurm_shim(mode, monkeypatch):
    """mmengine's slurm init on CPU torch: set_device fails unless the shim skips it."""
    import torch.distributed as torch_dist
    from mmengine.dist import utils
    if not compat._no_accelerator():  # mmengine's own path selects the device
        assert 'cpu-slurm' not in compat.APPLIED
        return
    for key, value in dict(SLURM_PROCID='0', SLURM_NTASKS='1', SLURM_LOCALID='0',
                           SLURM_NODELIST='localhost', MASTER_ADDR='127.0.0.1',
                           MASTER_PORT=str(free_port()), RANK='', WORLD_SIZE='',
                           LOCAL_RANK='').items():
        monkeypatch.setenv(key, value)  # restored (or removed) after the test
    init = utils._init_dist_slurm
    assert 'cpu-slurm' in compat.APPLIED and init.__wrapped__ is not None
    if mode == 'unpatched':
        with pytest.raises(AttributeError, match='_cuda_setDevice'):
            init.__wrapped__('gloo')
        return
    init('gloo')
    try:
        assert (torch_dist.get_world_size(), utils.get_backend()) == (1, 'gloo')
        assert (os.environ['RANK'], os.environ['WORLD_SIZE']) == ('0', '1')
    finally:
        torch_dist.destroy_process_group()


# --------------------------------------------------------------------------- real Slurm
@pytest.fixture(scope='session')
def slurm_cluster():
    """A started single-node cluster (apt-installed if needed); skip, or fail in CI, if not."""
    start = time.monotonic()
    reason = None
    try:
        cluster = SlurmCluster.start()
    except (SlurmUnavailable, OSError, subprocess.SubprocessError) as e:
        reason = f'Slurm cannot be started here: {e}'
    if reason is not None:
        if IN_CI:
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    print(f'slurm cluster {cluster.root} up in {time.monotonic() - start:.1f} s '
          f'({cluster.install_note or "already installed"})')
    yield cluster
    cluster.stop()
    assert not cluster.running(), f'daemons left running: {cluster.running()}'


def slurm_config(probe: str, data_root: str) -> str:
    """test_trainers' user config (ProbeHook: samples, final weights) plus SlurmProbeHook."""
    with open(osp.join(probe, 'slurm_probe.py'), 'w') as f:
        f.write(SLURM_PROBE)
    base = user_config(probe, 'user_slurm_base.py', data_root, epochs=1, train=2 * TRAIN_N)
    path = osp.join(probe, 'user_slurm.py')
    with open(path, 'w') as f:
        f.write(f'''_base_ = {osp.basename(base)!r}
custom_imports = dict(imports=['trainer_probe', 'slurm_probe'], allow_failed_imports=False)
custom_hooks = [dict(type='ProbeHook'), dict(type='SlurmProbeHook')]
''')
    return path


def slurm_env(cluster: SlurmCluster, probe: str, **extra: str) -> Dict[str, str]:
    env = venv_env()
    for key in [k for k in env if k.startswith('SLURM_') or k in LAUNCH_VARS]:
        del env[key]  # not inside another allocation, no launch settings of the caller
    del env['OMP_NUM_THREADS']  # the script sets it from CPUS_PER_TASK
    env.update(PYTHON=sys.executable, PORT=str(free_port()), SLURM_CONF=cluster.conf,
               **extra)
    if probe:
        env['PYTHONPATH'] = probe + os.pathsep + os.environ.get('PYTHONPATH', '')
    return env


@pytest.mark.slow
def test_two_cpu_ranks_train_one_model(slurm_cluster, fmnist_root, probe_dir,  # noqa: F811
                                       tmp_path):
    cfg = slurm_config(probe_dir, fmnist_root)
    work = str(tmp_path / 'work')
    env = slurm_env(slurm_cluster, probe_dir, GPUS='0', TASKS='2', CPUS_PER_TASK='1',
                    SRUN_ARGS='--time=5')
    start = time.monotonic()
    out = run(['bash', SCRIPT, slurm_cluster.partition, 'vit-cpu', cfg, work], env=env,
              ok=False)
    log = out.stdout + out.stderr
    assert out.returncode == 0, f'{log[-6000:]}\n{slurm_cluster.logs()}'
    print(f'2 ranks on Slurm in {time.monotonic() - start:.1f} s')
    assert 'Distributed launcher: slurm' in log and 'GPU number: 2' in log  # world size

    ranks = []
    for r in (0, 1):
        with open(osp.join(work, f'dist_rank{r}.json')) as f:
            ranks.append(json.load(f))
    for r, info in enumerate(ranks):
        assert (info['rank'], info['world_size'], info['backend'], info['launcher']) == (
            r, 2, 'gloo', 'slurm')
        e = info['env']
        assert (e['SLURM_PROCID'], e['RANK'], e['LOCAL_RANK'], e['WORLD_SIZE']) == (
            str(r), str(r), str(r), '2')
        assert e['MASTER_ADDR'] == slurm_cluster.host == e['SLURMD_NODENAME']  # via scontrol
        assert e['MASTER_PORT'] == env['PORT'] and e['OMP_NUM_THREADS'] == '1'
    assert ranks[0]['env']['SLURM_JOB_ID'] == ranks[1]['env']['SLURM_JOB_ID'] is not None

    seen = [samples(osp.join(work, f'samples_rank{r}.jsonl')) for r in (0, 1)]
    assert [[s['iter'] for s in rank] for rank in seen] == [[0, 1], [0, 1]]
    idx = [{i for s in rank for i in s['samples']} for rank in seen]
    assert not idx[0] & idx[1] and idx[0] | idx[1] == set(range(2 * TRAIN_N))  # halves
    assert all(len(s['samples']) == BATCH for rank in seen for s in rank)
    final = [weights(osp.join(work, f'weights_rank{r}.json')) for r in (0, 1)]
    assert final[0]['iter'] == final[1]['iter'] == 2
    assert final[0]['digest'] == final[1]['digest'] == ckpt_digest(
        osp.join(work, 'epoch_1.pth'))
    assert sorted(f for f in os.listdir(work) if f.endswith('.pth')) == ['epoch_1.pth']


# --------------------------------------------------------------------------- studies on Slurm
TOOL = osp.join(ROOT, 'tools', 'transfer.py')
UNTIMED = {'train_s_mean', 'latency', 'latency_ratio', 'within_latency_budget'}


@pytest.fixture(scope='module')
def study(fmnist_root, tmp_path_factory):  # noqa: F811
    """The transfer tool's arguments for a two-trial cls study (data root: fmnist_root's)."""
    rules = tmp_path_factory.mktemp('rules')
    (rules / 'small.py').write_text('scaling = dict(depth_mult=0.34, width_mult=0.5)\n')
    (rules / 'small_deep.py').write_text('scaling = dict(depth_mult=0.5, width_mult=0.5)\n')
    return ['--tasks', 'cls', '--baseline', str(rules / 'small.py'),
            '--rules', str(rules / 'small_deep.py'), '--seeds', '0',
            '--data-root', osp.dirname(fmnist_root), '--epochs', '1', '--cls-train', '64',
            '--cls-val', '64', '--cls-batch', '32', '--latency-rounds', '0']


def load_tool():
    return load_script('tools/transfer.py')


def test_study_dry_run_prints_the_job_array(study, tmp_path, capfd):
    tool = load_tool()
    out = tmp_path / 'dry'
    with pytest.raises(SystemExit) as exc:
        tool.main(study + ['--out-dir', str(out), '--launcher', 'slurm', '--partition', 'cpu',
                           '--cpus-per-task', '2', '--gpus-per-trial', '1', '--threads', '2',
                           '--sbatch-args=--time=30 --qos=normal', '--dry-run', '--requeue'])
    assert exc.value.code == 0
    printed = capfd.readouterr().out
    lines = printed.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith('--- '))
    script = lines[start + 1:lines.index('---', start)]
    assert script[:5] == ['#!/usr/bin/env bash', '#SBATCH --job-name=transfer',
                          '#SBATCH --array=0-1', '#SBATCH --ntasks=1',
                          '#SBATCH --cpus-per-task=2']
    assert script[6:13] == ['#SBATCH --partition=cpu', '#SBATCH --gres=gpu:1',
                            '#SBATCH --requeue', '#SBATCH --signal=USR1@120',
                            '#SBATCH --open-mode=append', '#SBATCH --time=30',
                            '#SBATCH --qos=normal']
    assert 'export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2' in script
    assert 'export MASTER_PORT=$((20000 + SLURM_JOB_ID % 40000))' in script
    assert script[-1].startswith(f'exec {sys.executable} -u -m mmvitscale.experiments.slurm run ')
    assert '2 trials: 0 already in' in printed
    assert 'cls/small/seed0, cls/small_deep/seed0' in printed
    assert not (out / 'slurm').exists()  # nothing written, nothing submitted
    with pytest.raises(SystemExit, match='--dry-run needs --launcher slurm'):
        tool.main(study + ['--out-dir', str(out), '--dry-run'])
    with pytest.raises(SystemExit, match='--cpus-per-task must be an integer >= 1, got 0'):
        tool.main(study + ['--out-dir', str(out), '--launcher', 'slurm',
                           '--cpus-per-trial', '0'])  # the older name of the flag
    with pytest.raises(SystemExit, match=r'one rank per GPU: --tasks-per-trial 3 must equal '
                       r'--gpus-per-trial 2'):
        tool.main(study + ['--out-dir', str(out), '--launcher', 'slurm', '--gpus-per-trial',
                           '2', '--tasks-per-trial', '3'])
    with pytest.raises(SystemExit, match='--tasks-per-trial 3 must be a multiple of '
                       '--nodes-per-trial 2'):
        tool.main(study + ['--out-dir', str(out), '--launcher', 'slurm', '--tasks-per-trial',
                           '3', '--nodes-per-trial', '2'])
    assert not (out / 'slurm').exists()
    with pytest.raises(SystemExit) as exc:
        tool.main(study + ['--out-dir', str(out), '--launcher', 'slurm', '--gpus-per-trial',
                           '16', '--nodes-per-trial', '2', '--cpus-per-task', '8', '--dry-run'])
    assert exc.value.code == 0
    script = capfd.readouterr().out.split('---')[1].splitlines()
    assert ['#SBATCH --ntasks=16', '#SBATCH --cpus-per-task=8'] == script[4:6]
    assert script[7:10] == ['#SBATCH --nodes=2', '#SBATCH --ntasks-per-node=8',
                            '#SBATCH --gres=gpu:8']


def assert_same_reports(one, other) -> None:
    """Two studies' transfer.json agree but for timings (and the out dir a re-matched rule
    file lives in)."""
    reports = [json.loads((d / 'transfer.json').read_text()) for d in (one, other)]

    def untimed(items, root):
        out = [{k: v for k, v in d.items() if k not in UNTIMED} for d in items]
        for d in out:
            if str(d.get('rule_file', '')).startswith(str(root)):
                d['rule_file'] = osp.relpath(d['rule_file'], root)
        return out
    assert untimed(reports[0]['arms'], one) == untimed(reports[1]['arms'], other)
    assert untimed(reports[0]['comparisons'], one) == untimed(reports[1]['comparisons'], other)
    assert reports[0]['headline'] == reports[1]['headline']


def store_rows(path) -> Dict[str, dict]:
    with open(path) as f:
        rows = [json.loads(line) for line in f]
    return {r['key']: r for r in rows if r.get('kind') != 'latency'}


@pytest.mark.slow
def test_study_on_slurm_resumes_and_matches_local(slurm_cluster, study, tmp_path):
    """Killed midway with one array task cancelled, rerun: the running trial is waited for,
    only the cancelled one is resubmitted, and the rows equal a local run's."""
    out = tmp_path / 'slurm'
    cmd = [sys.executable, TOOL] + study + ['--out-dir', str(out), '--launcher', 'slurm',
                                            '--partition', slurm_cluster.partition,
                                            '--poll', '0.5']
    env = slurm_env(slurm_cluster, '', OMP_NUM_THREADS='1')  # no probe module
    jobs = out / 'slurm' / 'jobs.jsonl'
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    try:
        deadline = time.monotonic() + 120
        while not jobs.is_file() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert jobs.is_file(), f'nothing submitted (rc {first.poll()})'
        job = json.loads(jobs.read_text())['job_id']
        subprocess.run(['scancel', f'{job}_1'], env=env, check=True, timeout=30)
        line, seen = '', []
        while 'FAILED' not in line and time.monotonic() < deadline:
            line = first.stdout.readline()
            seen.append(line)
            assert line or first.poll() is None, ''.join(seen)
        assert f'FAILED cls/small_deep/seed0 (job {job}_1): no result; log ' in line
        assert line.rstrip().endswith(osp.join(json.loads(jobs.read_text())['log_dir'],
                                               f'{job}_1.log'))
    finally:
        first.kill()  # the controller dies midway; array task 0 keeps running
        first.wait()
    assert not (out / 'transfer.json').exists()

    second = run(cmd, env=env, ok=False)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    records = [json.loads(s) for s in jobs.read_text().splitlines()]
    rows = store_rows(out / 'trials.jsonl')
    assert len(rows) == 2 and len(records) == 2  # nothing ran twice
    assert records[1]['keys'] == [records[0]['keys'][1]]  # only the cancelled trial again
    assert 'submitted 1 trial(s) as job array' in second.stdout

    local = tmp_path / 'local'
    load_tool().main(study + ['--out-dir', str(local)])
    local_rows = store_rows(local / 'trials.jsonl')
    assert set(local_rows) == set(rows)
    for key, row in rows.items():  # same seed, same result, whichever launcher ran it
        assert row['metrics'] == local_rows[key]['metrics']
        assert row['cost'] == local_rows[key]['cost']
    assert_same_reports(out, local)


def test_failed_slurm_study_is_one_line_error(study, tmp_path, monkeypatch):
    """A Slurm failure (here: no sbatch on PATH) ends the tool with its message, no traceback."""
    tool = load_tool()
    monkeypatch.setenv('PATH', str(tmp_path))  # no Slurm client
    with pytest.raises(SystemExit, match=r'^transfer.py: error: .*not found: --launcher slurm'):
        tool.main(study + ['--out-dir', str(tmp_path / 'out'), '--launcher', 'slurm',
                           '--partition', 'cpu'])


# --------------------------------------------------------------------------- --collect
def hand_config(dumped: str, path: str, name: str) -> str:
    """The trial's config as a user would train it by hand: evaluated after the last epoch."""
    from mmengine.config import Config
    cfg = Config.fromfile(dumped)
    cfg.val_dataloader, cfg.val_evaluator = cfg.test_dataloader, cfg.test_evaluator
    cfg.val_cfg = dict()
    cfg.train_cfg.val_interval = cfg.train_cfg.max_epochs
    cfg.experiment_name = name
    cfg.visualizer.name = name
    cfg.dump(path)
    return path


@pytest.mark.slow
def test_collect_reports_runs_trained_by_hand(study, tmp_path, capsys):
    """Two arms trained with tools/train.py give the study's own report; folders that cannot
    be used are named with the reason."""
    import shutil
    tool = load_tool()
    own = tmp_path / 'own'
    tool.main(study + ['--out-dir', str(own)])
    train = runpy.run_path(osp.join(ROOT, 'tools', 'train.py'), run_name='train_module')
    hand = tmp_path / 'hand'
    for arm in ('small', 'small_deep'):
        trial = own / 'trials' / 'cls' / arm / 'seed0'
        dumped = osp.join(trial, 'scaled_vit-p7_fmnist.py')
        cfg = hand_config(dumped, str(tmp_path / f'{arm}.py'), f'hand_{arm}')
        train['main']([cfg, '--work-dir', str(hand / 'runs' / arm)])
    os.makedirs(hand / 'broken' / 'unfinished')  # trained nothing yet: no final metric
    shutil.copy(tmp_path / 'small.py', hand / 'broken' / 'unfinished' / 'small.py')
    with open(tmp_path / 'small.py') as f:
        text = f.read()
    os.makedirs(hand / 'broken' / 'alien')
    with open(hand / 'broken' / 'alien' / 'alien.py', 'w') as f:
        f.write(text.replace("type='mmvitscale.ScaledViT'", "type='SomeoneElsesViT'"))
    capsys.readouterr()

    out = tmp_path / 'collected'
    with pytest.raises(SystemExit, match=rf'^transfer.py: error: --collect {tmp_path}/nowhere: '
                       'not a folder$'):
        tool.main(study + ['--out-dir', str(out), '--collect', str(hand),
                           str(tmp_path / 'nowhere')])
    assert not out.exists()  # refused before any work
    tool.main(study + ['--out-dir', str(out), '--collect', str(hand)])
    said = capsys.readouterr().out
    assert f"not used: {hand / 'broken' / 'unfinished'}: no final metric: no accuracy/top1 " \
           'logged (no scalars at all)' in said
    assert f"not used: {hand / 'broken' / 'alien'}: unknown task: model/backbone/dataset/" \
           "evaluator ['ImageClassifier', 'SomeoneElsesViT'" in said
    assert 'collected 2 of 2 trials from 4 folder(s)' in said
    assert_same_reports(own, out)

    shutil.copytree(hand / 'runs' / 'small', hand / 'runs' / 'small_again')
    with pytest.raises(SystemExit, match=r'no usable run of 1 trial\(s\): cls/small/seed0'):
        tool.main(study + ['--out-dir', str(tmp_path / 'twice'), '--collect',
                           str(hand / 'runs')])
    said = capsys.readouterr().out
    assert f"not used: {hand / 'runs' / 'small'}: two runs of one arm (cls/small/seed0): " \
           f"also {hand / 'runs' / 'small_again'}" in said


# --------------------------------------------------------------------------- ranks, requeue
def tiny_rule(folder) -> str:
    path = osp.join(str(folder), 'small.py')
    with open(path, 'w') as f:
        f.write('scaling = dict(depth_mult=0.34, width_mult=0.5)\n')
    return path


@pytest.fixture
def on_cluster(slurm_cluster, monkeypatch):
    """Slurm commands of this process (the study controller) go to the test cluster."""
    for key in [k for k in os.environ if k.startswith('SLURM_') or k in LAUNCH_VARS]:
        monkeypatch.delenv(key)
    monkeypatch.setenv('SLURM_CONF', slurm_cluster.conf)
    return slurm_cluster


@pytest.mark.slow
def test_trial_as_two_ranks_on_slurm_equals_torchrun(on_cluster, fmnist_root,  # noqa: F811
                                                     tmp_path):
    """A two-trial study whose trials each run as 2 CPU ranks, on Slurm and with torchrun."""
    from mmvitscale.experiments.slurm import (SlurmOptions, run_trials_slurm,
                                              run_trials_torchrun)
    from mmvitscale.experiments.store import ResultStore
    from mmvitscale.experiments.trial import make_trial, trial_dir
    deep = tmp_path / 'small_deep.py'
    deep.write_text('scaling = dict(depth_mult=0.5, width_mult=0.5)\n')
    trials = [make_trial('cls', rule, 0, epochs=1, train=64, val=32, batch=16)
              for rule in (tiny_rule(tmp_path), str(deep))]
    data_root = osp.dirname(fmnist_root)
    said: List[str] = []
    out = str(tmp_path / 'slurm')
    opts = SlurmOptions(partition=on_cluster.partition, tasks_per_trial=2, poll_s=0.5,
                        keep_checkpoints=True)
    rows = run_trials_slurm(trials, ResultStore(osp.join(out, 'trials.jsonl')), out,
                            data_root, say=said.append, options=opts)
    assert 'submitted 2 trial(s) as job array' in said[1] and '2 rank(s) x 1 CPU(s)' in said[1]
    logs = sorted(osp.join(r, f) for r, _, fs in os.walk(osp.join(out, 'slurm')) for f in fs
                  if f.endswith('.log'))
    assert len(logs) == 2
    for trial, row, log in zip(trials, rows, logs):
        assert row['dist']['world_size'] == 2 and row['dist']['launcher'] == 'slurm'
        digest = ckpt_digest(osp.join(trial_dir(out, trial), 'epoch_1.pth'))
        assert row['dist']['weights_sha'] == [digest, digest]  # both ranks end on it
        with open(log) as f:
            assert (f'{trial}: {row["metric"]:.2f} top-1 % (world size 2, launcher slurm)'
                    in f.read())

    local = str(tmp_path / 'torchrun')
    same = run_trials_torchrun(trials[:1], ResultStore(osp.join(local, 'trials.jsonl')), local,
                               data_root, say=said.append, tasks=2, keep_checkpoints=True)
    for row, twin in zip(rows, same):  # one trial is enough to compare the launchers
        assert twin['dist']['world_size'] == 2 and twin['dist']['launcher'] == 'pytorch'
        assert twin['metrics'] == row['metrics'] and twin['cost'] == row['cost']
        assert twin['dist']['weights_sha'] == row['dist']['weights_sha']
        assert twin['key'] == row['key']


STALL_PROBE = '''import os
import time

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class StallOnce(Hook):
    """Waits after iteration ``at`` (once: STALL_FLAG is written) until STALL_GO exists."""
    priority = 'NORMAL'  # before the trial's own hook, which sees a signal that came meanwhile

    def __init__(self, at):
        self.at = at

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        flag, go = os.environ.get('STALL_FLAG'), os.environ.get('STALL_GO')
        if not flag or runner.iter + 1 != self.at or os.path.exists(flag):
            return
        with open(flag, 'w') as f:
            f.write(str(runner.iter + 1))
        deadline = time.time() + 120
        while not os.path.exists(go) and time.time() < deadline:
            time.sleep(0.1)
'''


@pytest.mark.slow
def test_requeued_trial_resumes_and_equals_an_uninterrupted_run(on_cluster,
                                                                fmnist_root,  # noqa: F811
                                                                tmp_path, monkeypatch):
    """scancel --signal=USR1 mid-epoch: checkpoint, requeue, resume from that epoch and
    iteration (the study's log says so), and the row an uninterrupted run gives."""
    import threading

    from mmvitscale.experiments.slurm import SlurmOptions, run_trials_slurm
    from mmvitscale.experiments.store import ResultStore
    from mmvitscale.experiments.tasks import TASKS, TaskSpec
    from mmvitscale.experiments.trial import make_trial, run_trial, trial_dir
    probe = tmp_path / 'probe'
    probe.mkdir()
    (probe / 'stall_probe.py').write_text(STALL_PROBE)
    with open(osp.join(ROOT, 'configs', 'cls', 'scaled_vit-p7_fmnist.py')) as f:
        text = f.read().replace("'../_base_/", repr(osp.join(ROOT, 'configs', '_base_'))[:-1]
                                + "/")
    (probe / 'stall_cls.py').write_text(
        text + "custom_imports = dict(imports=['stall_probe'], allow_failed_imports=False)\n"
        "custom_hooks = [dict(type='StallOnce', at=8)]\n")
    cls = TASKS['cls']
    spec = TaskSpec('cls_stall', str(probe / 'stall_cls.py'), 'cls', cls.metric, 1.0,
                    cls.metric_label, cls.unit, cls.chance, cls.data_dir, cls.defaults)
    monkeypatch.setitem(TASKS, spec.name, spec)  # a user's own task, this test only
    monkeypatch.setenv('PYTHONPATH', f"{probe}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.syspath_prepend(str(probe))
    flag, go = tmp_path / 'stalled', tmp_path / 'go'
    monkeypatch.setenv('STALL_FLAG', str(flag))
    monkeypatch.setenv('STALL_GO', str(go))
    trial = make_trial('cls_stall', tiny_rule(tmp_path), 0, epochs=2, train=96, val=32,
                       batch=16)  # 6 iterations per epoch: it stops in the second
    data_root = osp.dirname(fmnist_root)
    out = str(tmp_path / 'slurm')
    said: List[str] = []
    opts = SlurmOptions(partition=on_cluster.partition, poll_s=0.5, requeue=True,
                        keep_checkpoints=True)
    result: Dict[str, list] = {}

    def study():
        result['rows'] = run_trials_slurm([trial], ResultStore(osp.join(out, 'trials.jsonl')),
                                          out, data_root, say=said.append, options=opts)
    controller = threading.Thread(target=study, daemon=True)
    controller.start()
    try:
        deadline = time.monotonic() + 180
        while not flag.exists() and controller.is_alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert flag.read_text() == '8', said
        job = json.loads((tmp_path / 'slurm' / 'slurm' / 'jobs.jsonl').read_text())['job_id']
        subprocess.run(['scancel', '--signal=USR1', f'{job}_0'], check=True, timeout=30)
    finally:
        go.write_text('go')
    controller.join(timeout=300)
    assert not controller.is_alive() and 'rows' in result, said
    [row] = result['rows']
    assert row['resumed'] == dict(epoch=1, iter=8)
    assert f'{trial}: ' in said[-1] and '(resumed from epoch 1, iteration 8)' in said[-1]
    log = open(next(osp.join(r, f) for r, _, fs in os.walk(osp.join(out, 'slurm'))
                    for f in fs if f.endswith('_0.log'))).read()
    assert (f'{trial}: SIGUSR1: saved {trial_dir(out, trial)}/iter_8.pth at epoch 1, '
            'iteration 8; Slurm requeues the job') in log

    whole = run_trial(trial, str(tmp_path / 'whole'), data_root, threads=1,
                      keep_checkpoints=True)  # STALL_FLAG exists: no stall
    assert 'resumed' not in whole
    assert whole['metrics'] == row['metrics'] and whole['key'] == row['key']
    assert ckpt_digest(osp.join(trial_dir(str(tmp_path / 'whole'), trial), 'epoch_2.pth')) \
        == ckpt_digest(osp.join(trial_dir(out, trial), 'epoch_2.pth'))


def test_dry_run_bill_of_a_real_data_trial(tmp_path):
    """GPU-hours = 2 x backbone MACs x samples x epochs x 3 / the stated throughput."""
    from mmvitscale.experiments.bill import TRAIN_SAMPLES, bill_lines, trial_bill
    from mmvitscale.experiments.tasks import SCALING_DIR
    from mmvitscale.experiments.trial import make_trial
    base = osp.join(SCALING_DIR, 'deit_tiny_shape.py')
    whole = trial_bill(make_trial('in1k', base, 0), gpu_tflops=50)
    assert 1.2 < whole['gflops'] < 1.35  # DeiT-Ti: 1.3 GFLOPs (MACs) in the DeiT paper
    assert (whole['samples'], whole['epochs']) == (TRAIN_SAMPLES['in1k'][0], 300)
    flops = 2 * whole['gflops'] * 1e9 * 1_281_167 * 300 * 3
    assert whole['gpu_hours'] == pytest.approx(flops / 50e12 / 3600)
    short = make_trial('in1k', base, 0, epochs=2, train=1000)
    lines = bill_lines([short, make_trial('cls', base, 0)], gpus_per_trial=4, gpu_tflops=50)
    assert lines[0].startswith('bill (estimate): training FLOPs = 2 x backbone MACs per sample '
                               'x samples x epochs x 3 (forward + backward), at 50 TFLOP/s')
    hours = 2 * whole['gflops'] * 1e9 * 1000 * 2 * 3 / 50e12 / 3600
    assert lines[1].startswith(f'  in1k/deit_tiny_shape/seed0: {whole["gflops"]:.2f} GMACs/'
                               'sample at [3, 224, 224] x 1,000 samples (first 1000 images) x '
                               '2 epochs')
    assert lines[1].endswith(f'-> {hours:.1f} GPU-hours, {hours / 4:.1f} h on 4 GPU(s)')
    assert lines[2] == f'  total: {hours:.1f} GPU-hours over 1 real-data trial(s)'  # not cls


def test_dry_run_bill_has_the_pit_arm_on_imagenet():
    """in1k_pit: PiT-Ti's 0.70 GMACs at 224 px (the PiT paper), ImageNet-1k x 300 epochs."""
    from mmvitscale.experiments.bill import bill_lines, trial_bill
    from mmvitscale.experiments.tasks import SCALING_DIR
    from mmvitscale.experiments.trial import make_trial
    base = osp.join(SCALING_DIR, 'deit_tiny_shape.py')
    pit = trial_bill(make_trial('in1k_pit', base, 0), gpu_tflops=50)
    assert pit['gflops'] == pytest.approx(0.70, rel=1e-2) and pit['input_shape'] == [3, 224, 224]
    assert (pit['samples'], pit['epochs']) == (1_281_167, 300)
    assert pit['gpu_hours'] == pytest.approx(
        2 * pit['gflops'] * 1e9 * 1_281_167 * 300 * 3 / 50e12 / 3600)
    lines = bill_lines([make_trial('in1k_pit', base, s, epochs=1, train=10) for s in (0, 1)],
                       gpus_per_trial=8, gpu_tflops=50)
    assert [ln.split(':')[0] for ln in lines[1:3]] == [
        '  in1k_pit/deit_tiny_shape/seed0', '  in1k_pit/deit_tiny_shape/seed1']
    assert lines[3].endswith('over 2 real-data trial(s)')
