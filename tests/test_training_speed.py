"""InMemoryFashionMNIST gives mmpretrain's items; benchmarks/training.py runs end to end."""
import json
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.registry import DATASETS, DefaultScope

import mmvitscale  # noqa: F401
from mmvitscale.datasets import prepare_classification
from mmvitscale.datasets.memory import resize_stack
from scripts import load_script

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
bench_training = load_script('benchmarks/training.py')

PIPELINE = [dict(type='Resize', scale=32), dict(type='PackInputs')]


@pytest.fixture(scope='module')
def data_root(tmp_path_factory) -> str:
    """A study data root holding the prepared Fashion-MNIST (``fashion_mnist/``)."""
    root = tmp_path_factory.mktemp('data')
    prepare_classification(str(root / 'fashion_mnist'))
    return str(root)


def _build(type_: str, root: str, pipeline, **kw):
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return DATASETS.build(dict(type=type_, data_root=root, download=False,
                                   pipeline=pipeline, **kw))


@pytest.mark.parametrize('split,test_mode', [('train', False), ('test', True)])
def test_in_memory_items_equal_mmpretrain_pipeline(data_root, split, test_mode):
    root = osp.join(data_root, 'fashion_mnist')
    kw = dict(split=split, test_mode=test_mode, indices=1100)  # > 2 resize chunks of 512
    ref = _build('FashionMNIST', root, PIPELINE, **kw)
    ours = _build('mmvitscale.InMemoryFashionMNIST', root, PIPELINE, **kw)
    assert ours.cached and len(ours) == len(ref) == 1100
    assert ours.metainfo['classes'] == ref.metainfo['classes']
    for i in (0, 1, 511, 512, 1023, 1024, 1099):
        a, b = ref[i], ours[i]
        assert b['inputs'].dtype == a['inputs'].dtype == torch.uint8
        assert b['inputs'].shape == a['inputs'].shape == (1, 32, 32)
        # same cv2 call per image: equal, the tolerance only guards against cv2 SIMD paths
        assert (b['inputs'].int() - a['inputs'].int()).abs().max() <= 1
        assert torch.equal(b['data_samples'].gt_label, a['data_samples'].gt_label)
        assert b['data_samples'].metainfo == a['data_samples'].metainfo
        assert sorted(b['data_samples'].all_keys()) == sorted(a['data_samples'].all_keys())
    labels_ref = torch.cat([ref[i]['data_samples'].gt_label for i in range(len(ref))])
    labels = torch.cat([ours[i]['data_samples'].gt_label for i in range(len(ours))])
    assert torch.equal(labels, labels_ref)


def test_in_memory_items_are_independent(data_root):
    """Items share their metainfo values with a prototype, never their fields or labels."""
    root = osp.join(data_root, 'fashion_mnist')
    ours = _build('mmvitscale.InMemoryFashionMNIST', root, PIPELINE, indices=8)
    a, b = ours[1]['data_samples'], ours[2]['data_samples']
    a.set_pred_score(torch.rand(10))
    a.set_metainfo(dict(flip=True))
    a.gt_label += 5
    fresh = ours[2]['data_samples']
    for s in (b, fresh):
        assert 'pred_score' not in s and 'flip' not in s.metainfo_keys()
    assert torch.equal(fresh.gt_label, ours[2]['data_samples'].gt_label)
    assert ours[1]['data_samples'].gt_label.item() == a.gt_label.item() - 5
    assert 'pred_score' not in ours[1]['data_samples']


def test_in_memory_other_pipeline_runs_per_item(data_root):
    root = osp.join(data_root, 'fashion_mnist')
    pipe = [dict(type='RandomFlip', prob=0.0), dict(type='PackInputs')]
    ours = _build('mmvitscale.InMemoryFashionMNIST', root, pipe, indices=4)
    ref = _build('FashionMNIST', root, pipe, indices=4)
    assert not ours.cached
    assert torch.equal(ours[3]['inputs'], ref[3]['inputs'])
    a, b = ref.get_data_info(3), ours.get_data_info(3)  # the vectorised data list
    assert sorted(a) == sorted(b) and np.array_equal(a['img'], b['img'])
    assert b['gt_label'].dtype == a['gt_label'].dtype == np.int64
    assert b['gt_label'].shape == a['gt_label'].shape == () and b['gt_label'] == a['gt_label']


def test_resize_stack_checks_shape():
    with pytest.raises(ValueError, match=r'images must be \[N, H, W\]'):
        resize_stack(np.zeros((2, 3, 4, 5), np.uint8), [])


def test_cls_config_uses_in_memory_dataset():
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'cls', 'scaled_vit_fmnist.py'))
    for loader in (cfg.train_dataloader, cfg.test_dataloader):
        assert loader.dataset.type == 'mmvitscale.InMemoryFashionMNIST'
        assert loader.collate_fn == dict(type='default_collate')


def test_benchmark_training_tiny_run_writes_json(data_root, tmp_path, capsys):
    out = tmp_path / 'training.json'
    bench_training.main(['--iters', '2', '--warmup', '1', '--rounds', '1', '--batch', '4',
                         '--data-root', data_root, '--out', str(out)])
    printed = capsys.readouterr().out
    assert 'ratio runner/raw' in printed and 'round 1/1' in printed
    result = json.loads(out.read_text())
    for key in ('raw_img_s', 'runner_img_s', 'ratio', 'ratio_median_iter', 'ratio_rounds',
                'threads', 'torch_version', 'loadavg_start', 'loadavg_end', 'uptime',
                'batch', 'iters', 'dataset', 'loader_workers'):
        assert key in result, key
    assert result['threads'] == 1 and result['batch'] == 4 and result['iters'] == 2
    assert result['dataset'] == 'mmvitscale.InMemoryFashionMNIST'
    assert len(result['loadavg_start']) == 3 and result['ratio'] > 0


def test_benchmark_training_rejects_bad_arguments(data_root):
    from mmvitscale.experiments.throughput import benchmark_training
    with pytest.raises(ValueError, match='iters must be an integer >= 1'):
        benchmark_training(iters=0, data_root=data_root)
    with pytest.raises(ValueError, match='data must be one of'):
        benchmark_training(data='lmdb', data_root=data_root)
    with pytest.raises(ValueError, match='task must be a classification task'):
        benchmark_training(task='det', data_root=data_root)
