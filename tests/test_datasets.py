"""Offline datasets derived from Fashion-MNIST: classification layout, detection, motion video."""
import glob
import json
import os
import os.path as osp
import shutil
import sys
import time

import cv2
import numpy as np
import pytest
import torch
from mmengine.registry import DefaultScope

from mmvitscale.datasets import CLASSES, ENV_VAR, MANIFEST, DatasetError, FashionMNISTNotFoundError
from mmvitscale.datasets import det as det_mod
from mmvitscale.datasets import fashion_mnist as fm
from mmvitscale.datasets import (generate_det, generate_video, load_split, prepare_classification,
                                 source_dir)
from mmvitscale.datasets.video import STEPS, sample_pair

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tools', 'data'))

import make_det  # noqa: E402
import make_video  # noqa: E402
import prepare_fashion_mnist  # noqa: E402

try:
    source_dir()
except FashionMNISTNotFoundError as e:
    pytestmark = pytest.mark.skip(reason=str(e))

DET = dict(num_train=20, num_val=8, show_progress=False)
VID = dict(num_train=8, num_val=4, show_progress=False)


@pytest.fixture(scope='module')
def det_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('det') / 'fm_det')
    generate_det(root, **DET)
    return root


@pytest.fixture(scope='module')
def video_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('video') / 'fm_motion')
    generate_video(root, **VID)
    return root


def _leftovers(parent):
    return sorted(n for n in os.listdir(parent) if n.startswith('.'))


# ------------------------------------------------------------------------------ source reader
def test_missing_source_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / 'nowhere'))
    with pytest.raises(FashionMNISTNotFoundError,
                       match=r"nowhere' \(from \$MMVITSCALE_FASHION_MNIST\); missing: "
                             r'train-images-idx3-ubyte, .*apt-get install dataset-fashion-mnist'):
        load_split('train')
    out = tmp_path / 'out'
    with pytest.raises(FashionMNISTNotFoundError):
        generate_det(str(out), **DET)
    assert not out.exists() and _leftovers(tmp_path) == []


def test_reader_checks_content(tmp_path):
    images, labels = load_split('train')
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (60000,) and set(np.unique(labels)) == set(range(10))
    assert load_split('test')[0].shape == (10000, 28, 28)
    with pytest.raises(ValueError, match=r'truncated or corrupt'):
        fm.parse_idx(fm.read_raw(fm.find_file(source_dir(), 't10k-labels-idx1-ubyte'))[:-1])
    for name in fm.RAW_MD5:  # a plain (not gzipped) copy whose labels were edited
        data = fm.read_raw(fm.find_file(source_dir(), name))
        if name == 't10k-labels-idx1-ubyte':
            data = data[:-1] + bytes([(data[-1] + 1) % 10])
        (tmp_path / name).write_bytes(data)
    assert load_split('train', str(tmp_path))[0].shape == (60000, 28, 28)
    with pytest.raises(ValueError, match=r't10k-labels-idx1-ubyte: decompressed md5 \w+ is not '
                                         r'that of the official Fashion-MNIST file'):
        load_split('test', str(tmp_path))


# ------------------------------------------------------------------------------ classification
def test_mmpretrain_fashion_mnist_reads_prepared_layout(tmp_path, capsys):
    from mmpretrain.registry import DATASETS
    out = str(tmp_path / 'fashion_mnist')
    manifest = prepare_fashion_mnist.main(['--out', out])
    assert manifest['counts'] == {'train': 60000, 'test': 10000} and not manifest['reused']
    images, labels = load_split('train')
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        # download=False: mmpretrain raises instead of downloading when a file is missing
        train = DATASETS.build(dict(type='FashionMNIST', data_root=out, test_mode=False,
                                    download=False, pipeline=[]))
        test = DATASETS.build(dict(type='FashionMNIST', data_root=out, split='test',
                                   test_mode=True, download=False, pipeline=[]))
    assert len(train) == 60000 and len(test) == 10000
    assert train.metainfo['classes'] == CLASSES
    item = train[123]
    assert item['img'].shape == (28, 28) and 0 <= int(item['gt_label']) <= 9
    assert np.array_equal(item['img'], images[123]) and int(item['gt_label']) == labels[123]
    capsys.readouterr()
    assert prepare_fashion_mnist.main(['--out', out])['reused']
    assert capsys.readouterr().out.startswith(f'kept valid existing {out}')
    with open(osp.join(out, 'train-labels-idx1-ubyte'), 'r+b') as f:
        f.truncate(100)
    with pytest.raises(DatasetError, match=r'train-labels-idx1-ubyte was modified or is corrupt'):
        prepare_classification(out)
    assert not prepare_classification(out, overwrite=True)['reused']
    assert prepare_classification(out)['reused']


# ------------------------------------------------------------------------------ detection
def _coco_dataset(root, split):
    from mmdet.registry import DATASETS
    with DefaultScope.overwrite_default_scope('mmdet'):
        return DATASETS.build(dict(
            type='CocoDataset', data_root=root, ann_file=f'annotations/instances_{split}.json',
            data_prefix=dict(img=f'{split}/'), metainfo=dict(classes=CLASSES), test_mode=True,
            pipeline=[dict(type='LoadImageFromFile'),
                      dict(type='LoadAnnotations', with_bbox=True)]))


def test_det_loads_in_mmdet_with_tight_boxes(det_root):
    dataset = _coco_dataset(det_root, 'train')
    assert len(dataset) == 20 and dataset.metainfo['classes'] == CLASSES
    with open(osp.join(det_root, 'annotations/instances_train.json')) as f:
        coco = json.load(f)
    assert [c['name'] for c in coco['categories']] == list(CLASSES)
    assert [c['id'] for c in coco['categories']] == list(range(1, 11))
    assert len(coco['annotations']) == sum(len(dataset.get_data_info(i)['instances'])
                                           for i in range(20))
    sample = dataset[0]
    assert sample['img'].shape == (128, 128, 3)
    assert len(sample['gt_bboxes']) >= 1
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        img = cv2.imread(info['img_path'], cv2.IMREAD_UNCHANGED)
        covered = np.zeros(img.shape, bool)
        assert 1 <= len(info['instances']) <= 4
        for inst in info['instances']:
            x1, y1, x2, y2 = (int(v) for v in inst['bbox'])
            assert 0 <= x1 < x2 <= 128 and 0 <= y1 < y2 <= 128
            box = img[y1:y2, x1:x2]
            # tight: every edge row / column of the box holds an item pixel
            assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any()
            assert not covered[y1:y2, x1:x2].any(), 'boxes overlap'
            covered[y1:y2, x1:x2] = True
        assert not img[~covered].any(), 'an item pixel lies outside every box'


def test_det_gt_as_predictions_scores_map_one(det_root):
    from mmdet.evaluation import CocoMetric
    dataset = _coco_dataset(det_root, 'val')

    def evaluate(shift=0.0):
        metric = CocoMetric(ann_file=osp.join(det_root, 'annotations/instances_val.json'),
                            metric='bbox')
        metric.dataset_meta = dataset.metainfo
        samples = []
        for i in range(len(dataset)):
            info = dataset.get_data_info(i)
            boxes = torch.tensor([inst['bbox'] for inst in info['instances']], dtype=torch.float)
            boxes[:, 0::2] += shift
            samples.append(dict(img_id=info['img_id'], ori_shape=(128, 128), pred_instances=dict(
                bboxes=boxes, scores=torch.ones(len(boxes)),
                labels=torch.tensor([inst['bbox_label'] for inst in info['instances']]))))
        metric.process({}, samples)
        return metric.compute_metrics(metric.results)['bbox_mAP']

    assert evaluate() == 1.0
    assert evaluate(shift=6.0) < 0.8


def test_det_is_deterministic_per_seed(tmp_path, det_root):
    again = str(tmp_path / 'again')
    other = str(tmp_path / 'other')
    generate_det(again, **DET)
    generate_det(other, **dict(DET, seed=1))
    for rel in ('annotations/instances_train.json', 'annotations/instances_val.json',
                MANIFEST, 'val/000003.png'):
        with open(osp.join(det_root, rel), 'rb') as a, open(osp.join(again, rel), 'rb') as b:
            assert a.read() == b.read(), rel
    with open(osp.join(det_root, MANIFEST)) as a, open(osp.join(other, MANIFEST)) as b:
        mine, theirs = json.load(a), json.load(b)
    assert mine['files'] != theirs['files'] and mine['data_sha256'] != theirs['data_sha256']


def test_det_crowded_settings_fall_back_to_a_grid(tmp_path, monkeypatch):
    calls = []
    real = det_mod._place_on_grid
    monkeypatch.setattr(det_mod, '_place_on_grid', lambda *a: calls.append(1) or real(*a))
    manifest = generate_det(str(tmp_path / 'crowd'), num_train=6, num_val=2, min_objects=4,
                            max_objects=4, min_size=64, max_size=64, show_progress=False)
    assert manifest['counts'] == {'train': dict(images=6, annotations=24),
                                  'val': dict(images=2, annotations=8)}
    assert calls  # 4 squares of 64 px tile 128 px: rejection sampling all but never finds it


def test_det_noop_and_refusals(tmp_path):
    out = str(tmp_path / 'det')
    os.mkdir(out)  # an empty folder is no dataset to protect
    assert not generate_det(out, **DET)['reused']
    ann = osp.join(out, 'annotations/instances_val.json')
    stamp = os.stat(ann).st_mtime_ns
    start = time.perf_counter()
    assert generate_det(out, **DET)['reused']
    assert time.perf_counter() - start < 1.0 and os.stat(ann).st_mtime_ns == stamp

    with pytest.raises(DatasetError, match=r'generated with other parameters: num_train=20 '
                                           r'\(requested 21\); .*--overwrite'):
        generate_det(out, **dict(DET, num_train=21))
    png = osp.join(out, 'val', '000002.png')
    with open(png, 'ab') as f:
        f.write(b'x')
    with pytest.raises(DatasetError, match=r'the val data files total \d+ bytes, manifest.json '
                                           r'says \d+ .*--overwrite'):
        generate_det(out, **DET)
    os.remove(png)
    with pytest.raises(DatasetError, match=r'data file val/000002.png is missing; .*--overwrite'):
        generate_det(out, **DET)
    with open(ann, 'ab') as f:
        f.write(b' ')
    with pytest.raises(DatasetError, match=r'annotations/instances_val.json was modified or is '
                                           r'corrupt \(sha256 differs'):
        generate_det(out, **DET)
    with open(osp.join(out, MANIFEST), 'w') as f:
        f.write('{"kind": ')
    with pytest.raises(DatasetError, match=r'manifest.json is corrupt \(JSONDecodeError'):
        generate_det(out, **DET)
    os.remove(osp.join(out, MANIFEST))
    with pytest.raises(DatasetError, match=r'exists but has no manifest.json .*--overwrite'):
        generate_det(out, **DET)
    assert not generate_det(out, **DET, overwrite=True)['reused']
    assert generate_det(out, **DET)['reused'] and _leftovers(tmp_path) == []
    with pytest.raises(DatasetError, match=r"holds a 'fashion-mnist-det' dataset \(format 1\), "
                                           r"not 'fashion-mnist-motion'"):
        generate_video(out, **VID)


def test_failed_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    out = tmp_path / 'det'
    real = det_mod.render_image
    calls = []

    def flaky(*args):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError('boom')
        return real(*args)

    monkeypatch.setattr(det_mod, 'render_image', flaky)
    with pytest.raises(RuntimeError, match='boom'):
        generate_det(str(out), **DET)
    assert not out.exists() and _leftovers(tmp_path) == []
    monkeypatch.setattr(det_mod, 'render_image', real)
    before = generate_det(str(out), **DET)
    calls.clear()
    monkeypatch.setattr(det_mod, 'render_image', flaky)
    with pytest.raises(RuntimeError, match='boom'):
        generate_det(str(out), **dict(DET, seed=3), overwrite=True)
    monkeypatch.setattr(det_mod, 'render_image', real)
    kept = generate_det(str(out), **DET)
    assert kept['reused'] and kept['files'] == before['files']  # the old dataset is intact
    assert _leftovers(tmp_path) == []


# ------------------------------------------------------------------------------ video
def test_video_loads_in_mmaction_pipeline(video_root):
    from mmaction.registry import DATASETS
    with open(osp.join(video_root, 'train_list_videos.txt')) as f:
        lines = [line.split() for line in f]
    assert len(lines) == 8 and all(0 <= int(label) < 8 for _, label in lines)
    with DefaultScope.overwrite_default_scope('mmaction'):
        dataset = DATASETS.build(dict(
            type='VideoDataset', ann_file=osp.join(video_root, 'train_list_videos.txt'),
            data_prefix=dict(video=osp.join(video_root, 'videos_train')),
            pipeline=[dict(type='DecordInit'),
                      dict(type='SampleFrames', clip_len=8, frame_interval=1, num_clips=1),
                      dict(type='DecordDecode'),
                      dict(type='Resize', scale=(32, 32), keep_ratio=False),
                      dict(type='FormatShape', input_format='NCTHW'),
                      dict(type='PackActionInputs')]))
        assert len(dataset) == 8
        sample = dataset[3]
    assert tuple(sample['inputs'].shape) == (1, 3, 8, 32, 32)
    assert int(sample['data_samples'].gt_label) == int(lines[3][1])


def _decode(path):
    import decord
    reader = decord.VideoReader(path)
    return reader.get_batch(list(range(len(reader)))).asnumpy()[..., 0].astype(np.float64)


def _centroid(frame):
    ys, xs = np.nonzero(frame > 40)
    return np.array([xs.mean(), ys.mean()])


def test_video_label_is_motion_not_appearance(video_root):
    with open(osp.join(video_root, 'train_list_videos.txt')) as f:
        items = [(name, int(label)) for name, label in (line.split() for line in f)]
    clips = [_decode(osp.join(video_root, 'videos_train', name)) for name, _ in items]
    assert all(c.shape == (16, 64, 64) for c in clips)
    for clip, (_, label) in zip(clips, items):  # the label is the direction of travel
        move = _centroid(clip[-1]) - _centroid(clip[0])
        assert np.array_equal(np.sign(np.round(move / 8)), STEPS[label]), (label, move)
    (a, label_a), (b, label_b) = zip(clips[:2], (items[0][1], items[1][1]))
    assert (label_a - label_b) % 8 == 4
    assert np.abs(a[0] - b[0]).mean() > 5  # the clips differ frame by frame ...
    assert np.abs(a.mean(0) - b.mean(0)).mean() < 0.5  # ... not on average (codec noise only)
    assert np.abs(a.mean(0) - clips[2].mean(0)).mean() > 5  # unlike another pair's

    rng = np.random.default_rng(0)
    params = dict(size=64, item_size=28, min_travel=16, frames=16)
    (raw_a, lab_a), (raw_b, lab_b) = sample_pair(rng, load_split('train')[0], params)
    assert (lab_a - lab_b) % 8 == 4 and not np.array_equal(raw_a, raw_b)
    assert np.array_equal(raw_a.mean(0), raw_b.mean(0))  # exactly equal before encoding


def test_video_harder_variant_keeps_the_pair_and_the_label(tmp_path, video_root):
    """Distractors, a travel cap and noise: the label is still the bright item's direction,
    a pair is still one clip reversed, and the default files are unchanged (same manifest)."""
    images = load_split('train')[0]
    base = dict(size=64, item_size=28, min_travel=16, frames=16)
    hard = dict(base, max_travel=18, distractors=2)
    for seed in range(6):
        (a, lab_a), (b, lab_b) = sample_pair(np.random.default_rng(seed), images, hard)
        assert (lab_a - lab_b) % 8 == 4 and np.array_equal(a[::-1], b)
        # the target's pixels above 127 (distractors are at half brightness) move as labelled
        ys0, xs0 = np.nonzero(a[0] > 127)
        ys1, xs1 = np.nonzero(a[-1] > 127)
        move = np.array([xs1.mean() - xs0.mean(), ys1.mean() - ys0.mean()])
        assert np.array_equal(np.sign(np.round(move / 6)), STEPS[lab_a]), (lab_a, move)
        assert 16 - 1e-6 <= np.abs(move).max() <= 18 + 1e-6
        # the same draws without distractors: the target alone, covered by the hard clip
        (t, lab_t), (u, _) = sample_pair(np.random.default_rng(seed), images,
                                         dict(base, max_travel=18))
        alone = t if lab_t == min(lab_a, lab_b) else u
        hard_fwd = a if lab_a == min(lab_a, lab_b) else b
        assert (hard_fwd >= alone).all() and (hard_fwd > alone).sum() > 100
    (n, _), _ = sample_pair(np.random.default_rng(2), images, dict(base, noise=20.0))
    (c, _), _ = sample_pair(np.random.default_rng(2), images, base)
    black, mid = c == 0, (c > 80) & (c < 175)  # on black the noise is clipped at 0
    assert 7.0 < n[black].mean() < 9.0 and 0.46 < (n[black] > 0).mean() < 0.52  # sd * phi(0)
    assert 18.0 < (n[mid].astype(float) - c[mid]).std() < 22.0
    manifest = generate_video(str(tmp_path / 'hard'), **dict(VID, distractors=1, noise=5.0))
    assert manifest['params']['distractors'] == 1 and manifest['params']['noise'] == 5.0
    with open(osp.join(video_root, MANIFEST)) as f:
        assert 'distractors' not in json.load(f)['params']  # defaults: earlier manifests


def test_video_is_deterministic_and_validated(tmp_path, video_root):
    again = str(tmp_path / 'again')
    assert not generate_video(again, **VID)['reused']
    for rel in ('train_list_videos.txt', 'val_list_videos.txt', MANIFEST):
        with open(osp.join(video_root, rel), 'rb') as a, open(osp.join(again, rel), 'rb') as b:
            assert a.read() == b.read(), rel
    assert generate_video(again, **VID)['reused']
    other = generate_video(str(tmp_path / 'other'), **dict(VID, seed=5))
    assert other['files']['train_list_videos.txt'] != generate_video(again, **VID)['files'][
        'train_list_videos.txt']
    os.remove(osp.join(again, 'videos_val', '000001.mp4'))
    with pytest.raises(DatasetError, match=r'videos_val/000001.mp4 is missing; .*--overwrite'):
        generate_video(again, **VID)


# ------------------------------------------------------------------------------ command lines
@pytest.mark.parametrize('tool, argv, message', [
    (make_det, ['--num-train', '-5'], '--num-train must be a positive integer, got -5'),
    (make_det, ['--canvas', '40'], '--canvas 40 is smaller than the item size --max-size 56'),
    (make_det, ['--min-size', '30', '--max-size', '29'],
     '--max-size 29 is smaller than --min-size 30'),
    (make_det, ['--min-objects', '5', '--max-objects', '6'],
     '--min-objects 5 items of up to --max-size 56 px do not surely fit'),
    (make_video, ['--num-val', '0'], '--num-val must be a positive integer, got 0'),
    (make_video, ['--size', '20'], '--size 20 is smaller than the item size --item-size 28'),
    (make_video, ['--size', '40'], '--size 40 leaves 12 px of travel for --item-size 28, less '
                                   'than --min-travel 16'),
    (make_video, ['--frames', '1'], '--frames must be at least 2'),
    (make_video, ['--max-travel', '10'], '--max-travel must be an integer >= --min-travel 16, '
                                         'got 10'),
    (make_video, ['--distractors', '-1'], '--distractors must be a non-negative integer, got -1'),
    (make_video, ['--noise', '300'],
     '--noise must be a number in [0, 256) (gray levels), got 300.0'),
])
def test_cli_rejects_bad_input_before_work(tool, argv, message, tmp_path, capsys):
    out = tmp_path / 'out'
    with pytest.raises(SystemExit) as exc:
        tool.main(['--out', str(out), '--no-progress'] + argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_cli_generates_keeps_and_refuses(tmp_path, capsys):
    out = str(tmp_path / 'motion')
    argv = ['--out', out, '--num-train', '4', '--num-val', '2', '--no-progress']
    assert make_video.main(argv)['counts']['train']['clips'] == 4
    assert make_video.main(argv)['reused']
    assert capsys.readouterr().out.splitlines()[-1].startswith(f'kept valid existing {out}')
    junk = tmp_path / 'junk'
    junk.mkdir()
    (junk / 'x.png').write_bytes(b'')
    with pytest.raises(SystemExit, match=r'error: .*junk exists but has no manifest.json '
                                         r'.*--overwrite'):
        make_det.main(['--out', str(junk), '--num-train', '2', '--num-val', '1',
                       '--no-progress'])
    assert make_det.main(['--out', str(junk), '--num-train', '2', '--num-val', '1',
                          '--no-progress', '--overwrite'])['counts']['val']['images'] == 1
    assert not osp.exists(junk / 'x.png') and glob.glob(str(tmp_path / '.*')) == []
    shutil.rmtree(junk)
