"""Command-line tools and packaging."""
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis'))

import get_flops  # noqa: E402
import scaling_table  # noqa: E402
from scripts import load_script  # noqa: E402


def test_get_flops_counts_whole_classifier(capsys):
    cfg = osp.join(ROOT, 'configs', 'cls', 'scaled-vit-tiny_4xb256_in1k.py')
    result = get_flops.main([cfg, '--json'])
    assert result['flops'] == 1258411200 and result['params'] == 5717416
    printed = capsys.readouterr().out
    assert json.loads(printed[printed.index('{'):])['flops'] == result['flops']
    small = get_flops.main([cfg, '--shape', '112', '--backbone-only'])
    assert small['input_shape'] == [3, 112, 112]
    assert small['flops'] < result['flops'] / 4


def test_get_flops_rejects_bad_shape():
    cfg = osp.join(ROOT, 'configs', 'cls', 'scaled-vit-tiny_4xb256_in1k.py')
    with pytest.raises(SystemExit, match=r'--shape takes 1 or 2 values, got \[1, 2, 3\]'):
        get_flops.main([cfg, '--shape', '1', '2', '3'])


def test_scaling_table_writes_json_and_markdown(tmp_path, monkeypatch):
    monkeypatch.setattr(scaling_table, 'DEFAULT_ROWS', (
        ('DeiT-Ti', 'deit-tiny', None),
        ('tiny deep', 'deit-tiny', dict(depth=2, width_mult=0.25, resolution=64)),
    ))
    rows = scaling_table.main(['--out-dir', str(tmp_path), '--repeats', '2', '--warmup', '0'])
    data = json.loads((tmp_path / 'scaling_table.json').read_text())
    assert [r['name'] for r in data['rows']] == ['DeiT-Ti', 'tiny deep']
    ti = data['rows'][0]
    assert ti['gflops'] == pytest.approx(1.2584112) and ti['params_m'] == pytest.approx(5.717416)
    assert ti['gflops_attention'] == pytest.approx(12 * 2 * 197**2 * 192 / 1e9)
    assert ti['gflops'] == pytest.approx(ti['gflops_analytic'])
    assert rows[1]['width'] == 48 and rows[1]['tokens'] == 17 and rows[1]['latency_ms'] > 0
    md = (tmp_path / 'scaling_table.md').read_text()
    assert '| DeiT-Ti | 12 | 192 | 3 |' in md
    assert not [p for p in os.listdir(tmp_path) if p.endswith('.tmp')]


def test_editable_install_exposes_mim_files():
    import mmvitscale
    mim = osp.join(osp.dirname(mmvitscale.__file__), '.mim')
    assert osp.isfile(osp.join(mim, 'model-index.yml'))
    assert osp.isfile(osp.join(mim, 'configs', 'cls', 'scaled-vit-tiny_4xb256_in1k.py'))
    assert osp.isfile(osp.join(mim, 'tools', 'train.py'))
    out = subprocess.run([sys.executable, '-m', 'mim', 'list'], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert any(line.split()[:1] == ['mmvitscale'] for line in out.stdout.splitlines())


@pytest.mark.slow
def test_wheel_ships_configs_tools_and_model_index(tmp_path):
    src = tmp_path / 'src'
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        '.venv', '.git', 'work_dirs', '*.egg-info', '.mim', '__pycache__', 'build', 'data'))
    out = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps',
                          '--no-build-isolation', '-w', str(tmp_path / 'dist'), str(src)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    wheel = next((tmp_path / 'dist').glob('mmvitscale-*.whl'))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert 'mmvitscale/.mim/model-index.yml' in names
    assert 'mmvitscale/.mim/configs/cls/scaled-vit-tiny_4xb256_in1k.py' in names
    assert 'mmvitscale/.mim/tools/train.py' in names
    assert 'mmvitscale/models/vit.py' in names


def test_backbone_benchmark_quick_run_writes_report(tmp_path):
    sys.path.insert(0, osp.join(ROOT, 'benchmarks'))
    import backbones
    result = backbones.main(['--quick', '--out-dir', str(tmp_path)])
    data = json.loads((tmp_path / 'backbones.json').read_text())
    assert [r['model'] for r in data['rows']] == ['deit-tiny', 'pit-ti']
    for row in result['rows']:
        assert row['max_abs_diff'] < 1e-4  # same weights, same numbers as timm
        assert row['throughput_ratio'] > 0 and row['macs_per_image'] > 0
    assert '| deit-tiny |' in (tmp_path / 'backbones.md').read_text()


def test_sdpa_kernel_benchmark_times_both_backends_and_refuses_bad_shapes(tmp_path, capsys):
    bench = load_script('benchmarks/sdpa_kernels.py')
    out = tmp_path / 'k.json'
    result = bench.main(['--shapes', '2,2,16,8', '--repeats', '1', '--out', str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    (row, ) = result['kernels']
    assert row['shape'] == [2, 2, 16, 8] and set(row) == {'shape', 'default', 'math'}
    assert all(row[b][k] > 0 for b in ('default', 'math') for k in ('forward_s', 'backward_s'))
    with pytest.raises(SystemExit):
        bench.main(['--shapes', '2,2,16', '--out', str(tmp_path / 'x.json')])
    assert "a shape is batch,heads,tokens,head_dim (positive integers), got '2,2,16'" in \
        capsys.readouterr().err
    assert not (tmp_path / 'x.json').exists()
