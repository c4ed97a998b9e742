"""The one trial runner (runner_type, exact resume, preemption) and the store one study owns."""
import json
import os
import os.path as osp
import signal
import socket
import subprocess
import sys

import pytest
from mmengine.hooks import Hook
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from mmvitscale.experiments.runner import (Preempted, _weights_sha, prepare_resume,
                                           train_and_test)
from mmvitscale.experiments.store import (ResultStore, StoreError, TrialClaim, hold_study,
                                          release)
from mmvitscale.experiments.tasks import configure, ensure_data, get_task
from mmvitscale.engine.config import load_with_rule

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SIZE = dict(epochs=2, train=96, val=32, batch=32)  # 3 iterations per epoch


@RUNNERS.register_module()
class RecordingRunner(Runner):
    """A user's own runner type: records that the study built it through from_cfg."""
    built = 0

    @classmethod
    def from_cfg(cls, cfg):
        cls.built += 1
        return super().from_cfg(cfg)


@pytest.fixture(scope='module')
def trial_cfg(fmnist_data_root, tmp_path_factory):
    rule = tmp_path_factory.mktemp('rule') / 'small.py'
    rule.write_text('scaling = dict(depth_mult=0.34, width_mult=0.5)\n')
    spec = get_task('cls')
    ensure_data(spec, str(fmnist_data_root), SIZE)

    def make(work_dir, **overrides):
        cfg = load_with_rule(spec.config_path, str(rule))
        cfg = configure(cfg, spec, SIZE, 0, str(work_dir), str(fmnist_data_root))
        cfg.merge_from_dict(overrides)
        return cfg
    return make


def test_runner_type_is_honoured(trial_cfg, tmp_path):
    before = RecordingRunner.built
    done = train_and_test(trial_cfg(tmp_path / 'custom', train_cfg=dict(max_epochs=1)),
                          checkpoints=False)
    assert type(done.runner) is Runner and RecordingRunner.built == before  # not asked for
    cfg = trial_cfg(tmp_path / 'custom2', train_cfg=dict(max_epochs=1))
    cfg.runner_type = 'RecordingRunner'
    done = train_and_test(cfg, checkpoints=False)
    assert type(done.runner) is RecordingRunner and RecordingRunner.built == before + 1
    assert 'accuracy/top1' in done.metrics
    cfg = trial_cfg(tmp_path / 'checked')  # the real-data tasks' runner refuses missing data
    cfg.runner_type = 'mmvitscale.DataCheckedRunner'
    cfg.train_dataloader.dataset.data_root = str(tmp_path / 'nowhere')
    with pytest.raises(SystemExit, match=r'dataset not found; missing or empty:\n  .*nowhere'):
        train_and_test(cfg)
    assert not (tmp_path / 'checked').exists()  # refused before any work


class SignalAt(Hook):
    """Sends this process SIGUSR1 after a given iteration (mid-epoch preemption)."""

    def __init__(self, at):
        self.at = at

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.at:
            os.kill(os.getpid(), signal.SIGUSR1)


@pytest.mark.slow
def test_preempted_mid_epoch_resumes_exactly(trial_cfg, tmp_path):
    """SIGUSR1 in epoch 2 -> checkpoint + Preempted; run again -> resumes from that epoch
    and iteration and ends with the weights and metrics of an uninterrupted run."""
    whole = train_and_test(trial_cfg(tmp_path / 'whole'))
    assert whole.resumed is None
    work = tmp_path / 'cut'
    with pytest.raises(Preempted) as stop:
        train_and_test(trial_cfg(work), requeue=True, hooks=[(SignalAt(4), 'HIGHEST')])
    assert stop.value.code == 1 and not stop.value.requeued  # not in a Slurm job
    assert str(stop.value) == (f'SIGUSR1: saved {work / "iter_4.pth"} at epoch 1, '
                               'iteration 4')
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # handlers given back
    again = train_and_test(trial_cfg(work), requeue=True)
    assert again.resumed == dict(epoch=1, iter=4)
    assert _weights_sha(again.model) == _weights_sha(whole.model)
    assert again.metrics == whole.metrics
    assert sorted(f for f in os.listdir(work) if f.endswith('.pth')) == ['epoch_2.pth']
    # another trial in the same folder never resumes from these checkpoints
    assert prepare_resume(str(work), 'another-key') is False
    assert not [f for f in os.listdir(work) if f.endswith('.pth')]


def test_store_refuses_a_metric_that_is_not_a_number(tmp_path):
    path = tmp_path / 'trials.jsonl'
    path.write_text(json.dumps(dict(key='a', metric=1.5)) + '\n'
                    + json.dumps(dict(key='b', metric='55.2')) + '\n')
    with pytest.raises(StoreError, match=rf"^{path}:2: metric '55.2' is not a number$"):
        ResultStore(str(path))
    path.write_text(json.dumps(dict(key='a', metrics=dict(top1=None))) + '\n')
    with pytest.raises(StoreError, match=rf'^{path}:1: metrics.top1 None is not a number$'):
        ResultStore(str(path))


HOLD = '''import sys, time
from mmvitscale.experiments.store import hold_study, TrialClaim
hold_study(sys.argv[1])
with TrialClaim(sys.argv[2], 'cls/small/seed0 (job 7_1)'):
    print('held', flush=True)
    time.sleep(60)
'''


def test_out_dir_and_trial_held_by_another_process(tmp_path):
    out, trial = tmp_path / 'study', tmp_path / 'study' / 'trials' / 'x'
    proc = subprocess.Popen([sys.executable, '-c', HOLD, str(out), str(trial)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == 'held\n'
        host = socket.gethostname()
        with pytest.raises(StoreError, match=rf'^the study out dir {out} is held by pid '
                           rf'{proc.pid} on host {host} since .*; lock {out}/study.lock$'):
            hold_study(str(out), wait=False)
        with pytest.raises(StoreError, match=r'\(waited 0.3 s\)'):
            hold_study(str(out), poll_s=0.1, timeout=0.3)
        with pytest.raises(StoreError, match=rf'^trial x is held by pid {proc.pid} on host '
                           rf'{host} since .* \(cls/small/seed0 \(job 7_1\)\); lock '):
            with TrialClaim(str(trial), 'x'):
                pass
    finally:
        proc.kill()
        proc.wait()
    said = []
    lock = hold_study(str(out), say=said.append)  # the holder died: free at once
    info = json.loads(open(lock).read())
    assert said == [] and (info['pid'], info['host']) == (os.getpid(), host)
    release(lock)


@pytest.mark.slow
def test_two_studies_on_one_out_dir_train_each_trial_once(fmnist_data_root, tmp_path):
    rules = tmp_path / 'rules'
    rules.mkdir()
    (rules / 'small.py').write_text('scaling = dict(depth_mult=0.34, width_mult=0.5)\n')
    (rules / 'small_deep.py').write_text('scaling = dict(depth_mult=0.5, width_mult=0.5)\n')
    out = tmp_path / 'out'
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'transfer.py'), '--tasks', 'cls',
           '--baseline', str(rules / 'small.py'), '--rules', str(rules / 'small_deep.py'),
           '--seeds', '0', '--data-root', str(fmnist_data_root), '--epochs', '1',
           '--cls-train', '64', '--cls-val', '32', '--cls-batch', '32', '--latency-rounds',
           '0', '--out-dir', str(out)]
    env = dict(os.environ, OMP_NUM_THREADS='1')
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=env) for _ in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    rows = [json.loads(line) for line in (out / 'trials.jsonl').read_text().splitlines()]
    keys = [r['key'] for r in rows if r.get('kind') != 'latency']
    assert len(keys) == 2 and len(set(keys)) == 2  # every trial once
    waited = [log for log in logs if 'waiting for pid' in log]
    assert len(waited) == 1 and '2 trials: 2 already in' in waited[0]
    assert 'it holds the study out dir' in waited[0]
    report = json.loads((out / 'transfer.json').read_text())
    assert [a['rule'] for a in report['arms']] == ['small', 'small_deep']
