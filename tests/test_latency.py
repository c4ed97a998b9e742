"""Latency per backend: ONNX export, measure(), the latency table and its CLI."""
import csv
import fcntl
import json
import multiprocessing as mp
import os
import os.path as osp
import sys
import time
import warnings

import numpy as np
import pytest
import torch

import mmvitscale  # noqa: F401
from mmvitscale.cost import latency_table
from mmvitscale.cost.backends import BackendError, export_onnx, measure
from mmvitscale.cost.counter import FlopCounter
from mmvitscale.cost.latency_table import (append_rows, fingerprint, fingerprint_id, make_row,
                                           read_rows, to_csv)
from mmvitscale.models import ScaledPiT, ScaledViT
from mmvitscale.families import family_names
from mmvitscale.models import ops as model_ops

ort = pytest.importorskip('onnxruntime')
onnx = pytest.importorskip('onnx')

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis'))

import benchmark_latency  # noqa: E402

TINY_VIT = dict(embed_dims=32, num_layers=2, num_heads=2, mlp_ratio=2.0)
TINY_PIT = dict(base_dims=(8, 8, 8), depths=(1, 1, 1), heads=(1, 2, 4), patch_size=8,
                patch_stride=4)
VIT_CFG = dict(type='mmvitscale.ScaledViT', arch=TINY_VIT, img_size=32, patch_size=16)
RESULT_KEYS = {'median_ms', 'p10_ms', 'p90_ms', 'mean_ms', 'min_ms', 'max_ms', 'repeats',
               'warmup_runs', 'batch_size', 'backend', 'device', 'threads', 'setup_s'}


def _tiny_vit(**kwargs) -> ScaledViT:
    torch.manual_seed(0)
    model = ScaledViT(TINY_VIT, img_size=32, patch_size=16, **kwargs)
    with torch.no_grad():  # non-zero embeddings, so they matter in the comparison
        model.pos_embed.normal_(std=0.5)
        model.cls_token.normal_(std=0.5)
    return model.eval()


def _tiny_pit() -> ScaledPiT:
    torch.manual_seed(0)
    model = ScaledPiT(TINY_PIT, img_size=64, out_indices=(0, 1, 2), out_type='featmap')
    with torch.no_grad():
        model.pos_embed.normal_(std=0.5)
    return model.eval()


def _ort_outputs(path, x):
    sess = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    return sess.run(None, {'input': x.numpy()})


def _assert_close(onnx_outs, torch_outs):
    torch_outs = torch_outs if isinstance(torch_outs, (tuple, list)) else [torch_outs]
    assert len(onnx_outs) == len(torch_outs)
    for a, b in zip(onnx_outs, torch_outs):
        assert a.shape == tuple(b.shape)
        np.testing.assert_allclose(a, b.numpy(), atol=1e-4, rtol=1e-4)


def _only_standard_ops(path):
    graph = onnx.load(path).graph
    domains = {n.domain for n in graph.node}
    assert domains <= {'', 'ai.onnx'}, domains
    return {n.op_type for n in graph.node}


# ------------------------------------------------------------------ export
def test_export_vit_matches_eager_and_is_atomic(tmp_path):
    model = _tiny_vit()
    path = str(tmp_path / 'vit.onnx')
    assert export_onnx(model, (3, 32, 32), path) == path
    assert sorted(os.listdir(tmp_path)) == ['vit.onnx']  # no temporary file left behind
    assert {'MatMul', 'Softmax', 'LayerNormalization'} <= _only_standard_ops(path)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():  # eager with the oneDNN fast path on
        ref = model(x)
    _assert_close(_ort_outputs(path, x), ref)
    assert not model.training

    dyn = str(tmp_path / 'vit_dyn.onnx')
    export_onnx(model, (3, 32, 32), dyn, dynamic_batch=True)
    x3 = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        _assert_close(_ort_outputs(dyn, x3), model(x3))


def test_export_pit_multi_stage_matches_eager(tmp_path):
    model = _tiny_pit()
    path = export_onnx(model, (3, 64, 64), str(tmp_path / 'pit.onnx'))
    _only_standard_ops(path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    outs = _ort_outputs(path, x)
    assert [o.shape for o in outs] == [(1, 8, 15, 15), (1, 16, 8, 8), (1, 32, 4, 4)]
    _assert_close(outs, ref)
    sess = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    assert [o.name for o in sess.get_outputs()] == ['output_0', 'output_1', 'output_2']


class _Broken(torch.nn.Module):

    """Runs once (export_onnx's eager probe), then fails in every exporter."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 1:
            return self.fc(x)
        raise RuntimeError('cannot trace me')


def test_failed_export_keeps_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / 'model.onnx'
    path.write_text('old')
    with pytest.raises(BackendError, match=r'ONNX export of _Broken failed; torchscript '
                       r'exporter: RuntimeError: cannot trace me'):
        export_onnx(_Broken(), (4, ), str(path))
    assert path.read_text() == 'old'
    assert os.listdir(tmp_path) == ['model.onnx']


@pytest.mark.filterwarnings('ignore::torch.jit.TracerWarning')
def test_eager_linear_and_tracing_turn_the_fast_path_off():
    model = _tiny_vit()
    x = torch.randn(1, 3, 32, 32)

    def ops():
        counter = FlopCounter()
        with torch.no_grad(), counter:
            model(x)
        return set(counter.by_op)

    if model_ops._ONEDNN_LINEAR:
        assert '_linear_pointwise' in ops()
    with model_ops.eager_linear():
        with model_ops.eager_linear():  # nests
            pass
        assert '_linear_pointwise' not in ops() and 'addmm' in ops()
    assert model_ops._EAGER_LINEAR.get() is False
    with torch.no_grad():
        traced = torch.jit.trace(model, x, check_trace=False)
    assert 'mkldnn' not in str(traced.inlined_graph)


# ------------------------------------------------------------------ measure
def _check_result(result, backend, batch=1, repeats=5):
    assert RESULT_KEYS <= set(result)
    assert result['backend'] == backend and result['batch_size'] == batch
    assert result['repeats'] == repeats and result['device'] == 'cpu'
    assert result['warmup_runs'] >= 2 and result['threads'] == torch.get_num_threads()
    assert 0 < result['min_ms'] <= result['p10_ms'] <= result['median_ms']
    assert result['median_ms'] <= result['p90_ms'] <= result['max_ms']
    assert result['setup_s'] >= 0
    json.dumps(result)  # plain data, ready for the table


def test_measure_eager_and_onnxruntime():
    model = _tiny_vit().train()
    eager = measure(model, (3, 32, 32), 'eager', batch_size=2, warmup_s=0, repeats=5,
                    min_warmup=2)
    _check_result(eager, 'eager', batch=2)
    assert model.training  # mode restored
    ort_res = measure(model, (3, 32, 32), 'onnxruntime', warmup_s=0, repeats=5, min_warmup=2)
    _check_result(ort_res, 'onnxruntime')
    assert ort_res['provider'] == 'CPUExecutionProvider'
    assert ort_res['onnxruntime'] == ort.__version__
    assert ort_res['ort_threads'] == torch.get_num_threads()


def test_measure_pit_from_config_dict():
    cfg = dict(type='mmvitscale.ScaledPiT', arch=TINY_PIT, img_size=64)
    _check_result(measure(cfg, (3, 64, 64), 'onnxruntime', warmup_s=0, repeats=5), 'onnxruntime')


def test_measure_in_fresh_process():
    result = measure(VIT_CFG, (3, 32, 32), 'eager', warmup_s=0, repeats=5, fresh_process=True,
                     timeout=120)
    _check_result(result, 'eager')
    assert result['fresh_process'] is True


def test_measure_rejects_bad_requests():
    with pytest.raises(ValueError, match=r"unknown backend 'tvm' \(choose from eager, compile"):
        measure(VIT_CFG, (3, 32, 32), 'tvm')
    with pytest.raises(ValueError, match=r"backend 'eager-fp16' needs device cuda, got 'cpu'"):
        measure(VIT_CFG, (3, 32, 32), 'eager-fp16')
    with pytest.raises(TypeError, match='fresh_process=True needs the model as a registry'):
        measure(_tiny_vit(), (3, 32, 32), 'eager', fresh_process=True)
    with pytest.raises(ValueError, match='repeats and batch_size must be >= 1, got 0, 1'):
        measure(VIT_CFG, (3, 32, 32), 'eager', repeats=0)


def test_compile_failure_is_a_clear_error(monkeypatch):
    def broken(model, **kwargs):
        raise RuntimeError('no compiler')

    monkeypatch.setattr(torch, 'compile', broken)
    with pytest.raises(BackendError, match=r"backend 'compile' failed for ScaledViT on cpu "
                       r'\(on CPU, inductor needs a working C\+\+ compiler\): '
                       r'RuntimeError: no compiler'):
        measure(_tiny_vit(), (3, 32, 32), 'compile', warmup_s=0, repeats=1)


@pytest.mark.slow
def test_measure_compile():
    try:
        model = ScaledViT(dict(TINY_VIT, num_layers=1), img_size=32, patch_size=16)
        result = measure(model, (3, 32, 32), 'compile', warmup_s=0, repeats=3)
    except BackendError as err:  # e.g. no C++ compiler for inductor on this machine
        pytest.skip(f'torch.compile unavailable here: {err}')
    _check_result(result, 'compile', repeats=3)
    assert result['setup_s'] > 0  # compilation happened before the timed runs


# ------------------------------------------------------------------ latency table
def _row(i, backend='eager', writer=0, pad=0):
    fp = dict(device='cpu-x', device_type='cpu', threads=2, torch='2.13.0', onnxruntime=None,
              backend=backend)
    result = dict(median_ms=1.0 + i, p10_ms=0.5 + i, p90_ms=2.0 + i)
    return make_row(fp, 'vit', dict(embed_dims=32, img_size=[32, 32]), (3, 32, 32), 1, result,
                    writer=writer, index=i, pad='x' * pad)


def _writer(path, writer, count, start, ready):
    ready.set()
    start.wait(60)
    for i in range(count):  # one append per row: maximal interleaving
        append_rows(path, [_row(i, writer=writer, pad=4000)])


def test_concurrent_appends_lose_nothing(tmp_path):
    path = str(tmp_path / 'table.jsonl')
    ctx = mp.get_context('fork')  # cheap children: they only append lines
    start = ctx.Event()
    readies = [ctx.Event() for _ in range(2)]
    procs = [ctx.Process(target=_writer, args=(path, w, 200, start, readies[w]))
             for w in range(2)]
    for p in procs:
        p.start()
    for r in readies:
        assert r.wait(60)
    start.set()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with open(path, 'rb') as f:
        lines = f.read().split(b'\n')
    assert lines[-1] == b'' and len(lines) == 401
    rows = [json.loads(line) for line in lines[:-1]]  # every line is whole JSON
    assert sorted((r['writer'], r['index']) for r in rows) == [(w, i) for w in range(2)
                                                               for i in range(200)]


def _locked_writer(path, about_to_append):
    about_to_append.set()
    append_rows(path, [_row(7)])


def test_append_waits_for_the_lock(tmp_path):
    path = str(tmp_path / 'table.jsonl')
    ctx = mp.get_context('fork')  # cheap children: they only append lines
    about = ctx.Event()
    with open(path + '.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = ctx.Process(target=_locked_writer, args=(path, about))
        proc.start()
        assert about.wait(60)
        time.sleep(0.5)
        assert not osp.exists(path) or osp.getsize(path) == 0  # blocked on our lock
        fcntl.flock(lock, fcntl.LOCK_UN)
    proc.join(60)
    assert proc.exitcode == 0
    assert [r['index'] for r in read_rows(path)] == [7]


def test_read_rows_filters_by_fingerprint(tmp_path):
    path = str(tmp_path / 't.jsonl')
    assert read_rows(path) == []
    assert append_rows(path, [_row(0), _row(1, 'onnxruntime'), _row(2)]) == 3
    assert append_rows(path, []) == 0
    fp_eager = _row(0)['fingerprint']
    assert [r['index'] for r in read_rows(path, fp_eager)] == [0, 2]
    fp_id = fingerprint_id(_row(1, 'onnxruntime')['fingerprint'])
    assert [r['index'] for r in read_rows(path, fp_id)] == [1]
    assert len(read_rows(path)) == 3
    assert read_rows(path, dict(fp_eager, threads=3)) == []


def test_torn_last_line_is_skipped_and_repaired(tmp_path):
    path = str(tmp_path / 't.jsonl')
    append_rows(path, [_row(0), _row(1)])
    with open(path, 'a') as f:
        f.write('{"fingerprint": {"device": "cp')  # a writer died mid-line
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # a torn *last* line is expected: no warning
        assert [r['index'] for r in read_rows(path)] == [0, 1]
    append_rows(path, [_row(2)])  # closes the torn line first, so ours stays whole
    with pytest.warns(UserWarning, match=r't.jsonl:3: skipping an unparsable line'):
        assert [r['index'] for r in read_rows(path)] == [0, 1, 2]


def test_to_csv_flattens_and_filters(tmp_path):
    path, out = str(tmp_path / 't.jsonl'), str(tmp_path / 'csv' / 't.csv')
    append_rows(path, [_row(0), _row(1, 'onnxruntime')])
    assert to_csv(path, out) == 2
    with open(out, newline='') as f:
        rows = list(csv.DictReader(f))
    assert [r['fingerprint.backend'] for r in rows] == ['eager', 'onnxruntime']
    assert rows[1]['median_ms'] == '2.0' and rows[0]['arch.img_size'] == '[32,32]'
    assert rows[0]['input_shape'] == '[3,32,32]'
    assert to_csv(path, out, fingerprint=_row(0)['fingerprint']) == 1
    assert os.listdir(tmp_path / 'csv') == ['t.csv']


def test_fingerprint_identifies_the_setting():
    fp = fingerprint('cpu', 'eager')
    assert fp['device_type'] == 'cpu' and fp['backend'] == 'eager' and fp['device']
    assert fp['threads'] == torch.get_num_threads() and fp['onnxruntime'] is None
    assert fp['torch'] == torch.__version__.split('+')[0]
    fp_ort = fingerprint('cpu', 'onnxruntime', threads=1)
    assert fp_ort['onnxruntime'] == ort.__version__ and fp_ort['threads'] == 1
    assert fingerprint_id(fp) == fingerprint_id(dict(reversed(list(fp.items()))))
    assert fingerprint_id(fp) != fingerprint_id(dict(fp, threads=fp['threads'] + 1))
    assert len(latency_table.fingerprint_id(fp)) == 16


# ------------------------------------------------------------------ CLI
@pytest.mark.parametrize('argv, message', [
    (['--arch', 'deit-tiny', '--backends', 'eager', 'tvm'],
     "--backends: unknown backend 'tvm' (choose from eager, compile, eager-fp16, "
     'compile-fp16, eager-bf16, compile-bf16, onnxruntime, onnxruntime-trt)'),
    (['--rule', 'no/such_rule.py'], '--rule: rule file not found: no/such_rule.py'),
    (['no/such_config.py'], 'CONFIG: file not found: no/such_config.py'),
    (['--arch', 'deit-tiny', '--backends', 'eager-fp16'],
     "--backends eager-fp16 / --device cpu: backend 'eager-fp16' needs device cuda, "
     "got 'cpu'"),
    (['--arch', 'deit-tiny', '--batch', '1', '0'], '--batch: must be >= 1, got 0'),
    (['--arch', 'deit-tiny', '--shape', '224', '0'], '--shape: must be >= 1, got 0'),
    (['--arch', 'deit-tiny', '--family', 'swin'],
     f"--family: unknown family 'swin' (choose from {', '.join(family_names('image'))})"),
    (['--arch', 'deit-tiny', '--device', 'gpu0'], "--device: invalid device 'gpu0'"),
    ([], 'give CONFIG, or --rule RULE_FILE / --arch ARCH'),
])
def test_cli_rejects_bad_input_before_any_work(argv, message, tmp_path, capsys, monkeypatch):
    from mmvitscale.cost import backends
    monkeypatch.setattr(backends, 'measure', None)  # any work would crash
    table = str(tmp_path / 'table.jsonl')
    with pytest.raises(SystemExit) as exc:
        benchmark_latency.main([*argv, '--table', table])
    assert exc.value.code == 2
    assert f'error: {message}\n' in capsys.readouterr().err
    assert not osp.exists(table)


def test_cli_rule_file_appends_rows(tmp_path, capsys):
    rule = tmp_path / 'tiny_rule.py'
    rule.write_text('scaling = dict(depth=1, width=32, heads=2, resolution=32)\n')
    table, out_csv = str(tmp_path / 'table.jsonl'), str(tmp_path / 'table.csv')
    rows = benchmark_latency.main(['--rule', str(rule), '--backends', 'eager', 'onnxruntime',
                                   '--batch', '1', '2', '--repeats', '3', '--warmup', '0',
                                   '--table', table, '--csv', out_csv])
    stored = read_rows(table)
    assert stored == rows and len(rows) == 4
    assert [(r['fingerprint']['backend'], r['batch_size']) for r in rows] == [
        ('eager', 1), ('eager', 2), ('onnxruntime', 1), ('onnxruntime', 2)]
    assert all(r['family'] == 'vit' and r['input_shape'] == [3, 32, 32] for r in rows)
    assert rows[0]['arch']['embed_dims'] == 32 and rows[0]['arch']['num_layers'] == 1
    assert rows[2]['fingerprint']['onnxruntime'] == ort.__version__
    assert read_rows(table, fingerprint('cpu', 'onnxruntime')) == rows[2:]
    assert osp.isfile(out_csv)
    printed = capsys.readouterr().out
    assert 'onnxruntime' in printed and 'appended 4 rows' in printed


def test_cli_reports_a_failed_backend_and_keeps_the_others(tmp_path, capsys, monkeypatch):
    from mmvitscale.cost import backends
    real = backends.measure

    def fake(model, shape, backend, **kwargs):
        if backend == 'compile':
            raise BackendError("backend 'compile' failed: boom")
        return real(model, shape, backend, **kwargs)

    monkeypatch.setattr(backends, 'measure', fake)
    table = str(tmp_path / 'table.jsonl')
    with pytest.raises(SystemExit) as exc:
        benchmark_latency.main(['--arch', 'pit-ti', '--family', 'pit', '--shape', '64', '64',
                                '--backends', 'compile', 'eager', '--repeats', '2',
                                '--warmup', '0', '--table', table])
    assert exc.value.code == 1
    rows = read_rows(table)
    assert [(r['family'], r['fingerprint']['backend'], r['input_shape']) for r in rows] == [
        ('pit', 'eager', [3, 64, 64])]
    assert "compile batch 1: backend 'compile' failed: boom" in capsys.readouterr().out


def test_cli_threads_are_pinned_and_restored(tmp_path, monkeypatch):
    seen = {}

    def fake(model, shape, backend, **kwargs):
        seen.update(threads=torch.get_num_threads(), omp=os.environ.get('OMP_NUM_THREADS'))
        return dict(median_ms=1.0, p10_ms=1.0, p90_ms=1.0, mean_ms=1.0, min_ms=1.0,
                    max_ms=1.0, repeats=1, warmup_runs=1, batch_size=1, backend=backend,
                    device='cpu', threads=torch.get_num_threads(), setup_s=0.0)

    from mmvitscale.cost import backends
    monkeypatch.setattr(backends, 'measure', fake)
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    before = torch.get_num_threads()
    table = str(tmp_path / 'table.jsonl')
    rows = benchmark_latency.main(['--arch', 'deit-tiny', '--shape', '32', '32', '--backends',
                                   'eager', '--threads', '1', '--table', table])
    assert seen == dict(threads=1, omp='1')
    assert torch.get_num_threads() == before and 'OMP_NUM_THREADS' not in os.environ
    assert rows[0]['fingerprint']['threads'] == 1
    if hasattr(os, 'sched_getaffinity'):
        assert rows[0]['cpus'] == sorted(os.sched_getaffinity(0))[:1]
