"""benchmarks/gpu_check.sh in its CPU dry mode: it runs and writes the JSON schema the GPU run
will write (the GPU paths themselves need a device; docs/guides/gpu.md)."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SECTIONS = ('latency', 'proxies', 'search', 'latency_table')


@pytest.fixture(scope='module')
def dry_report(tmp_path_factory):
    out = tmp_path_factory.mktemp('gpu_check') / 'report.json'
    env = dict(os.environ, DRY='1', PYTHON=sys.executable)
    env.pop('OUT', None)
    proc = subprocess.run(['bash', osp.join(ROOT, 'benchmarks', 'gpu_check.sh'), '--out',
                           str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    with open(out) as f:
        return json.load(f), proc.stdout


def test_dry_run_writes_the_schema(dry_report):
    report, stdout = dry_report
    assert report['schema'] == 'mmvitscale-gpu-check' and report['version'] == 1
    assert report['dry'] is True and report['device'] == 'cpu'
    for key in ('budget_s', 'settings', 'environment', 'sections', 'wall_s'):
        assert key in report
    for key in ('torch', 'cuda_available', 'device_name', 'onnxruntime', 'tensorrt'):
        assert key in report['environment']
    assert tuple(report['sections']) == SECTIONS
    for name, sec in report['sections'].items():
        assert sec['status'] in ('ok', 'partial', 'skipped', 'error'), name
        assert 'reason' in sec and sec['wall_s'] >= 0
        # every section runs on the CPU in the dry mode: nothing may fail there
        assert sec['status'] == 'ok', (name, sec.get('reason'), sec.get('traceback'))
    assert '[gpu_check] wrote' in stdout


def test_dry_latency_rows_cover_every_model_backend_and_batch(dry_report):
    sec = dry_report[0]['sections']['latency']
    backends = {'eager', 'compile', 'eager-fp16', 'eager-bf16', 'compile-fp16', 'compile-bf16',
                'onnxruntime', 'onnxruntime-trt'}
    seen = {(r['model'], r['backend'], r['batch_size']) for r in sec['rows']}
    assert seen == {(m, b, bs) for m in sec['models'] for b in backends for bs in (1, 2)}
    assert len(sec['models']) == 3  # the base and two rule variants (dry run)
    for r in sec['rows']:
        if r['status'] == 'ok':
            assert 0 < r['min_ms'] <= r['p10_ms'] <= r['median_ms']
        else:  # a backend that cannot run on the CPU says why
            assert r['status'] == 'skipped' and r['reason'], r
    eager = [r for r in sec['rows'] if r['backend'] == 'eager']
    assert eager and all(r['status'] == 'ok' for r in eager)
    fp16 = [r for r in sec['rows'] if r['backend'] == 'eager-fp16']
    assert all('needs device cuda' in r['reason'] for r in fp16)


def test_dry_proxies_search_and_table(dry_report):
    sections = dry_report[0]['sections']
    prox = sections['proxies']
    for key in ('ntk_condition', 'length_distortion', 'ntk_s', 'ld_s', 'fwd_bwd_s', 'ratio'):
        assert key in prox
    assert prox['ratio'] == pytest.approx(prox['proxies_s'] / prox['fwd_bwd_s'])
    assert prox['ntk_condition'] >= 1.0 and prox['length_distortion'] > 0
    search = sections['search']
    assert search['steps'] == 2 and search['scored'] >= 1 and search['genotype'].count('|') == 4
    table = sections['latency_table']
    assert osp.isfile(table['table'])
    with open(table['table']) as f:
        rows = [json.loads(line) for line in f]
    one = table['batch_sizes']['1']
    assert one['archs'] == len(rows) >= 6 and one['train'] + one['test'] == len(rows)
    for kind in ('analytic', 'kernel'):
        assert one['predictor'][kind]['held_out_mape'] >= 0


def test_bad_flags_fail_before_any_work(tmp_path):
    out = tmp_path / 'r.json'
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'benchmarks', 'gpu_check.py'), '--dry',
                           '--out', str(out), '--sections', 'latency', 'nope'],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "--sections: unknown ['nope']" in proc.stderr
    assert not out.exists()
