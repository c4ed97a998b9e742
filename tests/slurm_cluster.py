"""A real single-node Slurm cluster for tests: Debian's ``slurm-wlm`` and ``munge`` daemons.

Everything lives in one temporary folder: a munge key and socket, a ``slurm.conf`` with its own
ports, state, spool, pid and log files, and one CPU partition over this machine. Nothing under
``/etc`` is used or changed, and the daemons are stopped by the pids in their pid files.

    cluster = SlurmCluster.start()      # raises SlurmUnavailable with the reason
    subprocess.run(['srun', '-n', '2', 'hostname'], env=cluster.env())
    cluster.stop()

From a shell (the README's cluster commands): ``python tests/slurm_cluster.py start`` prints the
folder and ``export SLURM_CONF=...``; ``python tests/slurm_cluster.py stop FOLDER`` stops it.
"""
import os
import os.path as osp
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

PACKAGES = ('slurm-wlm', 'munge')
BINARIES = ('slurmctld', 'slurmd', 'srun', 'sinfo', 'scontrol', 'scancel', 'munged', 'munge')
PARTITION = 'cpu'
MUNGE_USER = 'munge'
CRED_EXPIRE_S = 10  # seconds before a requeued job (--requeue) may start again


class SlurmUnavailable(RuntimeError):
    """Slurm cannot be installed or started here; the message says why."""


def _run(cmd: List[str], timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors='replace') as f:
            return ''.join(f.readlines()[-lines:])
    except OSError:
        return ''


def _free_ports(n: int) -> List[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(('127.0.0.1', 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def missing_binaries() -> List[str]:
    return [b for b in BINARIES if shutil.which(b) is None]


def ensure_installed(timeout: float = 240) -> Optional[str]:
    """Install ``slurm-wlm`` and ``munge`` with apt when they are missing (root only).

    Returns a short note of what was done, or None when nothing was needed.
    """
    missing = missing_binaries()
    if not missing:
        return None
    if os.geteuid() != 0:
        raise SlurmUnavailable(f'{", ".join(missing)} not installed and not root to apt-get '
                               f'install {" ".join(PACKAGES)}')
    if shutil.which('apt-get') is None:
        raise SlurmUnavailable(f'{", ".join(missing)} not installed and no apt-get')
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    install = ['apt-get', 'install', '-y', '-q', '-o', 'DPkg::Lock::Timeout=120', *PACKAGES]
    start = time.monotonic()
    out = _run(install, timeout=timeout, env=env)
    if out.returncode != 0:  # package lists may be missing or stale
        _run(['apt-get', 'update', '-q'], timeout=timeout, env=env)
        out = _run(install, timeout=timeout, env=env)
    if out.returncode != 0:
        raise SlurmUnavailable(f'apt-get install {" ".join(PACKAGES)} failed '
                               f'(rc {out.returncode}): {out.stderr.strip()[-500:]}')
    if missing_binaries():
        raise SlurmUnavailable(f'still missing after apt-get install {" ".join(PACKAGES)}: '
                               f'{", ".join(missing_binaries())}')
    return f'installed {" ".join(PACKAGES)} in {time.monotonic() - start:.0f} s'


class SlurmCluster:
    """slurmctld + slurmd + munged of one temporary folder."""

    def __init__(self, root: str):
        self.root = root
        self.conf = osp.join(root, 'slurm.conf')
        self.munge_socket = osp.join(root, 'munge-run', 'munge.socket')
        self.host = socket.gethostname().split('.')[0]
        self.partition = PARTITION
        self.cpus = os.cpu_count() or 1
        self.install_note: Optional[str] = None
        self.pid_files = {
            'slurmd': osp.join(root, 'slurmd.pid'),
            'slurmctld': osp.join(root, 'slurmctld.pid'),
            'munged': osp.join(root, 'munge-run', 'munged.pid'),
        }

    # ----------------------------------------------------------------------- start
    @classmethod
    def start(cls, install: bool = True, timeout: float = 60) -> 'SlurmCluster':
        note = ensure_installed() if install else None
        if missing_binaries():
            raise SlurmUnavailable(f'not installed: {", ".join(missing_binaries())}')
        if os.geteuid() != 0:
            raise SlurmUnavailable('slurmd must run as root (to start jobs as their user)')
        root = tempfile.mkdtemp(prefix='mmvitscale-slurm-')
        os.chmod(root, 0o755)  # the munge user reaches its folders and the socket
        cluster = cls(root)
        cluster.install_note = note
        try:
            cluster._start_munge()
            cluster._write_conf()
            cluster._start_slurm(timeout)
        except BaseException:
            cluster.stop(remove=False)
            raise
        return cluster

    def env(self, **extra: str) -> Dict[str, str]:
        """The environment for srun / sinfo / scontrol of this cluster."""
        return dict(os.environ, SLURM_CONF=self.conf, **extra)

    def _start_munge(self) -> None:
        import pwd
        try:
            user = pwd.getpwnam(MUNGE_USER)
        except KeyError:
            raise SlurmUnavailable(f'no {MUNGE_USER!r} user (the munge package creates it)')
        key_dir = osp.join(self.root, 'munge')  # key, seed, log: private to munge
        run_dir = osp.dirname(self.munge_socket)  # socket: reachable by every user
        for path, mode in ((key_dir, 0o700), (run_dir, 0o755)):
            os.mkdir(path)
            os.chown(path, user.pw_uid, user.pw_gid)
            os.chmod(path, mode)
        key = osp.join(key_dir, 'munge.key')
        with open(key, 'wb') as f:
            f.write(os.urandom(128))  # what ``mungekey -c`` writes: 1024 random bits
        os.chown(key, user.pw_uid, user.pw_gid)
        os.chmod(key, 0o400)
        cmd = ['munged', f'--socket={self.munge_socket}', f'--key-file={key}',
               f'--log-file={osp.join(key_dir, "munged.log")}',
               f'--pid-file={self.pid_files["munged"]}',
               f'--seed-file={osp.join(key_dir, "munged.seed")}']
        out = _run(['runuser', '-u', MUNGE_USER, '--'] + cmd)
        if out.returncode != 0:
            raise SlurmUnavailable(f'munged failed: {out.stderr.strip()} '
                                   f'{_tail(osp.join(key_dir, "munged.log"))}')
        check = subprocess.run(f'munge -n -S {self.munge_socket} | unmunge -S '
                               f'{self.munge_socket}', shell=True, capture_output=True,
                               text=True, timeout=30)
        if 'Success' not in check.stdout:
            raise SlurmUnavailable(f'munge -n | unmunge failed: {check.stdout} {check.stderr}')

    def _write_conf(self) -> None:
        for sub in ('state', 'spool', 'log'):
            os.mkdir(osp.join(self.root, sub))
        with open('/proc/meminfo') as f:
            mem_kb = int(next(line for line in f if line.startswith('MemTotal')).split()[1])
        ctld_port, slurmd_port = _free_ports(2)
        lines = [
            'ClusterName=mmvitscale-test',
            f'SlurmctldHost={self.host}',
            'AuthType=auth/munge',
            'CredType=cred/munge',
            # a requeued job may start again after cred_expire seconds (default 120)
            f'AuthInfo=socket={self.munge_socket},cred_expire={CRED_EXPIRE_S}',
            'ProctrackType=proctrack/linuxproc',
            'TaskPlugin=task/none',
            'SelectType=select/cons_tres',
            'SelectTypeParameters=CR_Core',
            'SlurmUser=root',
            'ReturnToService=2',
            'MpiDefault=none',
            'SchedulerParameters=sched_interval=2',  # start a requeued job soon after its delay
            'JobAcctGatherType=jobacct_gather/none',
            'AccountingStorageType=accounting_storage/none',
            f'SlurmctldPort={ctld_port}',
            f'SlurmdPort={slurmd_port}',
            f'StateSaveLocation={osp.join(self.root, "state")}',
            f'SlurmdSpoolDir={osp.join(self.root, "spool")}',
            f'SlurmctldPidFile={self.pid_files["slurmctld"]}',
            f'SlurmdPidFile={self.pid_files["slurmd"]}',
            f'SlurmctldLogFile={osp.join(self.root, "log", "slurmctld.log")}',
            f'SlurmdLogFile={osp.join(self.root, "log", "slurmd.log")}',
            f'NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} '
            f'RealMemory={mem_kb * 8 // 10240} State=UNKNOWN',
            f'PartitionName={self.partition} Nodes={self.host} Default=YES MaxTime=INFINITE '
            'State=UP',
        ]
        with open(self.conf, 'w') as f:
            f.write('\n'.join(lines) + '\n')

    def _start_slurm(self, timeout: float) -> None:
        for daemon in ('slurmctld', 'slurmd'):
            out = _run([daemon, '-f', self.conf], env=self.env())
            if out.returncode != 0:
                raise SlurmUnavailable(f'{daemon} failed (rc {out.returncode}): '
                                       f'{out.stderr.strip()}\n{self.logs()}')
        deadline = time.monotonic() + timeout
        state = ''
        while time.monotonic() < deadline:
            out = _run(['sinfo', '-h', '-p', self.partition, '-o', '%t'], env=self.env())
            state = out.stdout.strip() or out.stderr.strip()
            if state == 'idle':
                return
            time.sleep(0.5)
        raise SlurmUnavailable(f'node not idle after {timeout:.0f} s (sinfo: {state!r})\n'
                               f'{self.logs()}')

    # ----------------------------------------------------------------------- status and stop
    def logs(self) -> str:
        """The ends of the daemons' logs, for failure messages."""
        parts = []
        for name in ('slurmctld.log', 'slurmd.log'):
            parts.append(f'--- {name}\n{_tail(osp.join(self.root, "log", name))}')
        parts.append(f'--- munged.log\n{_tail(osp.join(self.root, "munge", "munged.log"))}')
        return '\n'.join(parts)

    def _pid(self, name: str) -> Optional[int]:
        try:
            with open(self.pid_files[name]) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def running(self) -> Dict[str, int]:
        """Daemons of this cluster that are alive, by name."""
        alive = {}
        for name in self.pid_files:
            pid = self._pid(name)
            if pid is not None and osp.exists(f'/proc/{pid}'):
                with open(f'/proc/{pid}/comm') as f:
                    if f.read().strip() == name:  # not a recycled pid
                        alive[name] = pid
        return alive

    def stop(self, remove: bool = True, timeout: float = 15) -> None:
        """Cancel this cluster's jobs, stop its daemons by pid file, then delete the folder."""
        if self._pid('slurmctld') is not None and osp.exists(self.conf):
            try:
                _run(['scancel', '--partition', self.partition], timeout=15,
                     env=self.env())
            except (OSError, subprocess.TimeoutExpired):
                pass
        for group in (('slurmd', 'slurmctld'), ('munged',)):  # munge last: slurm needs it
            pids = [pid for name, pid in self.running().items() if name in group]
            for pid in pids:
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while any(osp.exists(f'/proc/{p}') for p in pids) and time.monotonic() < deadline:
                time.sleep(0.1)
            for pid in pids:
                if osp.exists(f'/proc/{pid}'):
                    os.kill(pid, signal.SIGKILL)
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)


def main(argv: List[str]) -> int:
    if argv[:1] == ['start']:
        cluster = SlurmCluster.start()
        if cluster.install_note:
            print(cluster.install_note)
        print(cluster.root)
        print(f'export SLURM_CONF={cluster.conf}   # partition {cluster.partition!r}, '
              f'{cluster.cpus} CPUs on {cluster.host}')
        return 0
    if argv[:1] == ['stop'] and len(argv) == 2:
        SlurmCluster(argv[1]).stop()
        return 0
    print('usage: slurm_cluster.py start | stop FOLDER', file=sys.stderr)
    return 2


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
