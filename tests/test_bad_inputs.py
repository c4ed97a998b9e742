"""Bad inputs across backbones, rules, tools, data and model inputs (issue 11, items 4-6).

Each case names the argument the user typed and its value, is raised before any work starts,
and leaves nothing on disk: every case runs in an empty ``tmp_path`` (set up by the case), and
the folder must be byte-for-byte as the setup left it afterwards.
"""
import json
import os
import os.path as osp
import re
import runpy
import sys
import warnings
from typing import Callable, Dict, Tuple

import pytest
import torch

from mmvitscale.datasets import DatasetError
from mmvitscale.models import ScaledPiT, ScaledViT
from mmvitscale.models.video_vit import ScaledVideoViT
from mmvitscale.engine.config import load_with_rule
from mmvitscale.rules import derive_image
from mmvitscale.scaling import make_vit_arch, scale_vit
from mmvitscale.search.rule_search import BaseSpec, run_search, write_rule_file

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis'))
sys.path.insert(0, osp.join(ROOT, 'tools', 'data'))

import get_flops  # noqa: E402
import make_det  # noqa: E402
import make_video  # noqa: E402

VIT_ARCH = dict(embed_dims=32, num_layers=2, num_heads=2)
PIT_ARCH = dict(base_dims=(16, 16, 16), depths=(1, 1, 1), heads=(2, 2, 2), patch_size=8,
                patch_stride=4)
FMNIST_VIT = osp.join(ROOT, 'configs', 'cls', 'scaled_vit_fmnist.py')
SCALE_SEARCH = osp.join(ROOT, 'tools', 'scale_search.py')
TRANSFER = osp.join(ROOT, 'tools', 'transfer.py')


def vit(**kw):
    kw.setdefault('arch', VIT_ARCH)
    kw.setdefault('img_size', 32)
    kw.setdefault('patch_size', 8)
    return ScaledViT(**kw)


def pit(**kw):
    kw.setdefault('arch', PIT_ARCH)
    kw.setdefault('img_size', 32)
    return ScaledPiT(**kw)


def video(**kw):
    kw.setdefault('arch', VIT_ARCH)
    kw.setdefault('img_size', 32)
    kw.setdefault('patch_size', 8)
    kw.setdefault('num_frames', 4)
    kw.setdefault('tubelet_size', 2)
    return ScaledVideoViT(**kw)


_MODELS: Dict[str, torch.nn.Module] = {}


def model(name: str) -> torch.nn.Module:
    """One tiny eval model per family, shared by the input cases."""
    if name not in _MODELS:
        _MODELS[name] = dict(vit=vit, pit=pit, video=video)[name]().eval()
    return _MODELS[name]


def forward(name: str, shape, dtype=torch.float32) -> Callable:
    def setup(tmp):
        x = torch.zeros(shape, dtype=dtype)
        return lambda: model(name)(x)
    return setup


def call(fn: Callable, *args, **kwargs) -> Callable:
    """A case without setup: ``fn(*args, **kwargs)``."""
    return lambda tmp: (lambda: fn(*args, **kwargs))


def scale_search(*extra: str, out_rule=None, work_dir=None) -> Callable:
    """tools/scale_search.py in-process; ``out_rule(tmp)`` / ``work_dir(tmp)`` give the
    --out-rule / --work-dir paths."""
    def setup(tmp):
        rule = out_rule(tmp) if out_rule else str(tmp / 'rule.py')
        wd = work_dir(tmp) if work_dir else str(tmp / 'wd')
        argv = ['--budget', '0.02', '--scorer', 'flops', '--only-grid', '--grid',
                'depth_mult=0.5,1', '--work-dir', wd, '--out-rule', rule, *extra]
        main = runpy.run_path(SCALE_SEARCH)['main']
        return lambda: main(argv)
    return setup


def transfer(*extra: str, out_dir=None, data_root=None) -> Callable:
    """tools/transfer.py in-process, stopped by its checks (``out_dir(tmp)`` / ``data_root(tmp)``
    give the path flags; default: folders under the case folder)."""
    def setup(tmp):
        argv = ['--out-dir', out_dir(tmp) if out_dir else str(tmp / 'out'),
                '--data-root', data_root(tmp) if data_root else str(tmp / 'data'), *extra]
        main = runpy.run_path(TRANSFER)['main']
        return lambda: main(argv)
    return setup


def study_tool(relpath: str, *argv, **paths: Callable) -> Callable:
    """A study tool's ``main(argv)`` in-process; each ``paths`` entry ``flag_name=fn`` adds
    ``--flag-name fn(tmp)``."""
    def setup(tmp):
        extra = [a for name, fn in paths.items() for a in ('--' + name.replace('_', '-'), fn(tmp))]
        main = runpy.run_path(osp.join(ROOT, relpath))['main']
        return lambda: main([*argv, *extra])
    return setup


def _on_proc(start: str) -> str:
    """The refusal of a path on /proc: ``start`` (a regex ending in the path), then the reason."""
    return start + r' is on /proc \(a proc file system\), which holds no user files$'


def _under_file(tmp):
    return _file_in_the_way(tmp)[:-len('/rule.py')] + '/out'


def _a_file(tmp):
    return _file_in_the_way(tmp)[:-len('/rule.py')]


def _file_in_the_way(tmp):
    (tmp / 'plain_file').write_text('x')
    return str(tmp / 'plain_file' / 'rule.py')


def latency_table(*lines: str) -> Callable:
    """LatencyPredictor.from_table on a table with ``lines`` (valid JSON, not rows)."""
    def setup(tmp):
        from mmvitscale.cost.predictor import LatencyPredictor
        path = tmp / 't.jsonl'
        path.write_text(''.join(line + '\n' for line in lines))
        return lambda: LatencyPredictor.from_table(str(path), 'abc')
    return setup


def data_tool(tool, *argv: str) -> Callable:
    def setup(tmp):
        return lambda: tool.main(['--out', str(tmp / 'out'), '--no-progress', *argv])
    return setup


def rule_file(text: str) -> Callable:
    def setup(tmp):
        (tmp / 'rule.py').write_text(text)
        return lambda: load_with_rule(FMNIST_VIT, str(tmp / 'rule.py'))
    return setup


def _source_or_skip():
    from mmvitscale.datasets import FashionMNISTNotFoundError, source_dir
    try:
        source_dir()
    except FashionMNISTNotFoundError as err:
        pytest.skip(str(err))


def corrupted_dataset(kind: str, rel: str) -> Callable:
    """A kept dataset whose data file ``rel`` was changed in place (same size)."""
    def setup(tmp):
        from mmvitscale.datasets import generate_det, generate_video
        _source_or_skip()
        gen = generate_det if kind == 'det' else generate_video
        out = str(tmp / kind)
        gen(out, num_train=2, num_val=2, show_progress=False)
        with open(osp.join(out, rel), 'r+b') as f:
            f.seek(os.path.getsize(osp.join(out, rel)) // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0xFF]))
        return lambda: gen(out, num_train=2, num_val=2, show_progress=False)
    return setup


def _coco(images=1) -> str:
    return json.dumps(dict(
        images=[dict(id=i, file_name=f'{i:06d}.png', width=32, height=32)
                for i in range(images)],
        annotations=[dict(id=i, image_id=i, category_id=1, bbox=[1, 1, 8, 8], area=64,
                          iscrowd=0) for i in range(images)],
        categories=[dict(id=1, name='T-shirt/top')]))


def host_dataset(kind: str, files: Dict[str, bytes]) -> Callable:
    """The offline det / video config's train dataset over ``files``; loads item 0."""
    def setup(tmp):
        from mmengine.config import Config
        from mmengine.registry import DATASETS, DefaultScope
        host = pytest.importorskip('mmdet.datasets' if kind == 'det' else 'mmaction.datasets')
        assert host  # registers the host's transforms
        cfg = Config.fromfile(osp.join(ROOT, 'configs', '_base_', f'{kind}_fashion_mnist.py'))
        root = tmp / 'data'
        for rel, data in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        ds_cfg = cfg.train_dataloader.dataset
        if kind == 'det':
            ds_cfg.update(data_root=str(root) + '/', filter_cfg=None)
        else:
            ds_cfg.update(ann_file=str(root / 'train_list_videos.txt'),
                          data_prefix=dict(video=str(root / 'videos_train')))

        def load_first_item():
            with DefaultScope.overwrite_default_scope(cfg.default_scope):
                return DATASETS.build(ds_cfg)[0]
        return load_first_item
    return setup


V, T, W, S = ValueError, TypeError, UserWarning, SystemExit
CASES = [
    # ---------------------------------------------------------------- backbone arguments
    pytest.param(call(vit, img_size=-5), V,
                 r'^img_size must be a positive int or a pair of positive ints, got -5$',
                 id='vit-img_size-negative'),
    pytest.param(call(vit, img_size=20), V, r'^img_size=20 is not a multiple of patch_size=8',
                 id='vit-img_size-not-multiple'),
    pytest.param(call(vit, img_size=(32, 0)), V, r'img_size .*got \(32, 0\)$',
                 id='vit-img_size-zero'),
    pytest.param(call(vit, img_size=True), V, r'img_size .*got True$', id='vit-img_size-bool'),
    pytest.param(call(vit, arch=dict(embed_dims=100, num_layers=2, num_heads=3)), V,
                 r'^embed_dims=100 is not divisible by num_heads=3$', id='vit-embed_dims-heads'),
    pytest.param(call(vit, arch=dict(VIT_ARCH, embed_dims=0)), V,
                 r'^embed_dims must be a positive integer, got 0$', id='vit-embed_dims-zero'),
    pytest.param(call(vit, arch=dict(VIT_ARCH, num_layers=2.5)), V,
                 r'^num_layers must be a positive integer, got 2.5$', id='vit-num_layers-float'),
    pytest.param(call(vit, arch=dict(VIT_ARCH, mlp_ratio=-1)), V,
                 r'^mlp_ratio must be a positive number, got -1$', id='vit-mlp_ratio'),
    pytest.param(call(vit, patch_size=0), V, r'^patch_size must be a positive integer, got 0$',
                 id='vit-patch_size-zero'),
    pytest.param(call(vit, drop_path_rate=1.5), V,
                 r'^drop_path_rate must be a number in \[0, 1\), got 1.5$', id='vit-drop_path'),
    pytest.param(call(vit, drop_rate=-0.1), V, r'^drop_rate must be .*got -0.1$',
                 id='vit-drop_rate'),
    pytest.param(call(vit, attn_drop_rate=1.0), V, r'^attn_drop_rate must be .*got 1.0$',
                 id='vit-attn_drop_rate'),
    pytest.param(call(vit, frozen_stages=20), V,
                 r'^frozen_stages must be an int from -1 \(none\) to 2 \(all 2 blocks\), '
                 r'got 20$', id='vit-frozen_stages-too-deep'),
    pytest.param(call(vit, frozen_stages=-2), V, r'^frozen_stages .*got -2$',
                 id='vit-frozen_stages-below-minus-one'),
    pytest.param(call(vit, out_indices=5), V, r'^out_indices entry 5 is out of range for 2 '
                 r'blocks', id='vit-out_indices-range'),
    pytest.param(call(vit, out_indices=['a']), V, r"^out_indices entries must be ints, got 'a'",
                 id='vit-out_indices-type'),
    pytest.param(call(vit, attn_type='flash'), V, r"^attn_type must be one of .*got 'flash'$",
                 id='vit-attn_type'),
    pytest.param(call(vit, in_channels=0), V, r'^in_channels must be a positive integer, got 0$',
                 id='vit-in_channels'),
    pytest.param(call(vit, qkv_bias='yes'), T, r"^qkv_bias must be a bool, got 'yes'$",
                 id='vit-qkv_bias'),
    pytest.param(call(vit, final_norm='no'), T, r"^final_norm must be a bool, got 'no'$",
                 id='vit-final_norm'),
    pytest.param(call(video, return_tuple=1), T, r'^return_tuple must be a bool, got 1$',
                 id='video-return_tuple'),
    pytest.param(call(vit, norm_eps=0), V, r'^norm_eps must be a positive number, got 0$',
                 id='vit-norm_eps'),
    pytest.param(call(vit, interpolate_mode='nearest'), V,
                 r"^interpolate_mode must be one of .*got 'nearest'$", id='vit-interpolate_mode'),
    pytest.param(call(vit, out_type='tokens'), V, r"^out_type must be one of .*got 'tokens'$",
                 id='vit-out_type'),
    pytest.param(call(pit, img_size=34), V, r'^img_size=34 does not tile: 34 - patch_size 8 is '
                 r'not a multiple of patch_stride=4', id='pit-img_size-does-not-tile'),
    pytest.param(call(pit, frozen_stages=4), V, r'^frozen_stages .*to 3 \(all 3 stages\), '
                 r'got 4$', id='pit-frozen_stages'),
    pytest.param(call(pit, arch=dict(PIT_ARCH, base_dims=(16, 16))), V,
                 r'^base_dims, depths and heads need one entry per stage, got \(16, 16\)',
                 id='pit-base_dims-stages'),
    pytest.param(call(pit, drop_path_rate=2), V, r'^drop_path_rate .*got 2$',
                 id='pit-drop_path'),
    pytest.param(call(pit, qkv_bias=None), T, r'^qkv_bias must be a bool, got None$',
                 id='pit-qkv_bias'),
    pytest.param(call(video, frozen_stages=3), V, r'^frozen_stages .*to 2 .*got 3$',
                 id='video-frozen_stages'),
    pytest.param(call(video, img_size=-5), V, r'^img_size must be .*got -5$',
                 id='video-img_size'),
    pytest.param(call(video, drop_path_rate=1.0), V, r'^drop_path_rate .*got 1.0$',
                 id='video-drop_path'),
    # ---------------------------------------------------------------- scaling rules
    pytest.param(call(vit, scaling=dict(depth_mult=float('inf'))), V,
                 r'^scaling.depth_mult must be a positive number, got inf$',
                 id='rule-depth_mult-inf'),
    pytest.param(call(vit, scaling=dict(width=100, heads=3)), V,
                 r'^scaling: width=100 is not divisible by heads=3$', id='rule-width-heads'),
    pytest.param(call(vit, scaling=dict(foo=1)), V, r"^unknown scaling key 'foo' \(value 1\)",
                 id='rule-unknown-key'),
    pytest.param(call(vit, scaling=dict(resolution=-32)), V,
                 r'^scaling.resolution must be a positive number, got -32$',
                 id='rule-resolution-negative'),
    pytest.param(call(vit, scaling=dict(patch_size=5)), V,
                 r'^scaling: resolution=32 is not a multiple of patch_size=5',
                 id='rule-patch_size'),
    pytest.param(call(pit, scaling=dict(depth=[1, 2])), V,
                 r'^scaling.depth must be 3 positive integers .*got \[1, 2\]$',
                 id='rule-pit-depth-list'),
    pytest.param(call(vit, attn_type='softmax', scaling=dict(attn_type='linear_angular')), V,
                 r"^attn_type='softmax' conflicts with scaling.attn_type='linear_angular'$",
                 id='rule-attn_type-conflict'),
    pytest.param(call(scale_vit, make_vit_arch(32, 2, 2, 4.0, 32, 8), dict(width_mult='2')), V,
                 r"^scaling.width_mult must be a positive number, got '2'$",
                 id='rule-width_mult-str'),
    pytest.param(call(derive_image, 'foo', VIT_ARCH, None), V,
                 r"^family must be one of \('vit', 'pit', 'asvit'\), got 'foo'$", id='rule-family'),
    pytest.param(rule_file('scaling = dict(depth_mult=0)\n'), V,
                 r'^rule file .*/case/rule.py: scaling.depth_mult must be a positive number, '
                 r'got 0$', id='rule-file-depth_mult'),
    pytest.param(call(load_with_rule, FMNIST_VIT, '/nonexistent/rule.py'), V,
                 r'^rule file not found: /nonexistent/rule.py$', id='rule-file-missing'),
    # ---------------------------------------------------------------- model inputs
    pytest.param(forward('vit', (1, 3, 0, 0)), V,
                 r'^ScaledViT expects a non-empty input \(N, C, H, W\) with C=3, got shape '
                 r'\(1, 3, 0, 0\)$', id='input-vit-empty'),
    pytest.param(forward('vit', (3, 32, 32)), V,
                 r'^ScaledViT expects a 4-D input \(N, C, H, W\) with C=3, got shape '
                 r'\(3, 32, 32\) \(a dim is missing: is it the batch dim\?\)$',
                 id='input-vit-no-batch'),
    pytest.param(forward('vit', (1, 1, 32, 32)), V,
                 r'^ScaledViT expects input \(N, C, H, W\) with C=3 \(in_channels=3\), got '
                 r'shape \(1, 1, 32, 32\)$', id='input-vit-channels'),
    pytest.param(forward('vit', (1, 3, 30, 32)), V,
                 r'^ScaledViT expects input \(N, C, H, W\) with C=3, got shape \(1, 3, 30, 32\)'
                 r': input size 30x32 is not a multiple of patch_size=8$', id='input-vit-size'),
    pytest.param(forward('vit', (1, 3, 32, 32), torch.uint8), T,
                 r'^ScaledViT expects a floating-point input, got torch.uint8',
                 id='input-vit-dtype'),
    pytest.param(call(lambda: model('vit')([[0.0]])), T,
                 r'^ScaledViT expects a torch.Tensor of shape \(N, C, H, W\), got list$',
                 id='input-vit-not-a-tensor'),
    pytest.param(forward('pit', (1, 3, 34, 34)), V,
                 r'^ScaledPiT expects input \(N, C, H, W\) with C=3, got shape \(1, 3, 34, 34\)'
                 r': input size 34x34 does not tile the tokenizer', id='input-pit-size'),
    pytest.param(forward('pit', (1, 3, 0, 0)), V, r'^ScaledPiT expects a non-empty input',
                 id='input-pit-empty'),
    pytest.param(forward('pit', (3, 32, 32)), V, r'^ScaledPiT expects a 4-D input .*batch dim',
                 id='input-pit-no-batch'),
    pytest.param(forward('video', (1, 3, 32, 32)), V,
                 r'^ScaledVideoViT expects a 5-D input \(N, C, T, H, W\) with C=3, got shape '
                 r'\(1, 3, 32, 32\) \(a dim is missing: is it the batch dim\?\)$',
                 id='input-video-4d'),
    pytest.param(forward('video', (1, 3, 3, 32, 32)), V,
                 r'^ScaledVideoViT expects input \(N, C, T, H, W\) with T a multiple of '
                 r'tubelet_size=2, got shape \(1, 3, 3, 32, 32\)', id='input-video-frames'),
    pytest.param(forward('video', (1, 3, 0, 32, 32)), V,
                 r'^ScaledVideoViT expects a non-empty input', id='input-video-empty'),
    # ---------------------------------------------------------------- tools
    pytest.param(call(get_flops.main, [FMNIST_VIT, '--shape', '0', '0']), S,
                 r'^--shape: H and W must be positive, got 0 0$', id='get_flops-shape-zero'),
    pytest.param(call(get_flops.main, [FMNIST_VIT, '--shape', '1', '2', '3']), S,
                 r'^--shape takes 1 or 2 values, got \[1, 2, 3\]$', id='get_flops-shape-three'),
    pytest.param(call(get_flops.main, [FMNIST_VIT, '--shape', '30', '--backbone-only']), S,
                 r'^--shape 30 30: ScaledViT expects input .*input size 30x30 is not a multiple '
                 r'of patch_size=4$', id='get_flops-shape-vs-patch'),
    pytest.param(call(get_flops.main, [FMNIST_VIT, '--cfg-options', 'scaling.bogus=3']), S,
                 r"^--cfg-options scaling.bogus=3: unknown scaling key 'bogus' \(value 3\)",
                 id='get_flops-unknown-rule-key'),
    pytest.param(call(get_flops.main, [FMNIST_VIT, '--cfg-options',
                                       'model.backbone.scaling.width_mult=-2']), S,
                 r'^--cfg-options model.backbone.scaling.width_mult=-2: .*scaling.width_mult must '
                 r'be a positive number, got -2', id='get_flops-bad-rule-value'),
    pytest.param(call(get_flops.main, [FMNIST_VIT, '--cfg-options', 'model.backbone.bogus=3']), S,
                 r'^.*scaled_vit_fmnist.py with --cfg-options model.backbone.bogus=3: the model '
                 r"cannot be built: .*unexpected keyword argument 'bogus'$",
                 id='get_flops-unknown-backbone-argument'),
    pytest.param(scale_search(out_rule=lambda tmp: str(tmp)), S,
                 r'--out-rule: .* is a folder; give a file such as .*searched.py',
                 id='scale_search-out-rule-folder'),
    pytest.param(scale_search(out_rule=lambda tmp: str(tmp / 'rule.txt')), S,
                 r'--out-rule: .*rule.txt must end in .py', id='scale_search-out-rule-ext'),
    pytest.param(scale_search(out_rule=_file_in_the_way), S,
                 r'--out-rule: .*plain_file/rule.py is under .*plain_file, which is a file',
                 id='scale_search-out-rule-under-file'),
    pytest.param(scale_search('--budget', '-1'), S,
                 r'--budget: must be a positive number, got -1$', id='scale_search-budget'),
    pytest.param(scale_search('--budget', 'inf'), S,
                 r'--budget: must be a finite positive number, got inf$',
                 id='scale_search-budget-inf'),
    pytest.param(scale_search('--budget', 'nan'), S,
                 r'--budget: must be a finite positive number, got nan$',
                 id='scale_search-budget-nan'),
    pytest.param(scale_search(work_dir=lambda tmp: '/proc/mmvitscale_wd'), S,
                 _on_proc('--work-dir: /proc/mmvitscale_wd'), id='scale_search-work-dir-proc'),
    pytest.param(call(run_search, BaseSpec('vit', VIT_ARCH, 32, 8), float('inf'),
                      scorer='flops'), V, r'^budget must be a finite positive number, got inf$',
                 id='run_search-budget-inf'),
    pytest.param(study_tool('tools/analysis/castling_accuracy.py', '--seeds', '4294967296'), S,
                 r'error: --seeds must be at most 4294967295 \(2\*\*32 - 1, the seed range of '
                 r'numpy\), got 4294967296$', id='castling-seeds-too-large'),
    pytest.param(study_tool('tools/analysis/castling_accuracy.py', out_dir=_under_file), S,
                 r'error: argument --out-dir: .*/plain_file/out is under .*/plain_file, which is '
                 r'a file$', id='castling-out-dir-under-file'),
    pytest.param(study_tool('tools/analysis/retokenization_study.py',
                            data_root=lambda tmp: '/proc/mmvitscale_data'), S,
                 _on_proc('error: argument --data-root: /proc/mmvitscale_data'),
                 id='retokenization-data-root-proc'),
    pytest.param(study_tool('tools/proxy_correlation.py', data_root=_a_file), S,
                 r'error: argument --data-root: .*/plain_file is a file, not a folder$',
                 id='proxy_correlation-data-root-file'),
    pytest.param(study_tool('tools/supernet_scorer.py', work_dir=_under_file), S,
                 r'error: argument --work-dir: .*/plain_file/out is under .*/plain_file, which '
                 r'is a file$', id='supernet-work-dir-under-file'),
    pytest.param(study_tool('tools/device_transfer.py', out_dir=lambda tmp: '/dev/null'), S,
                 r'error: argument --out-dir: /dev/null is a character device, not a folder$',
                 id='device_transfer-out-dir-device'),
    pytest.param(transfer('--tasks', 'cls', 'cls'), S,
                 r"^transfer.py: error: --tasks: 'cls' is given twice, got cls cls: each task "
                 r'runs once \(the first is the source, the others targets\)$',
                 id='transfer-tasks-repeated'),
    pytest.param(transfer('--latency-backends', 'eager', 'bogus'), S,
                 r"^transfer.py: error: --latency-backends: unknown backend 'bogus' \(choose "
                 r'from eager, .*onnxruntime.*\)$', id='transfer-latency-backends'),
    pytest.param(transfer('--seeds', '0', '4294967296'), S,
                 r'^transfer.py: error: --seeds: must be at most 4294967295 \(2\*\*32 - 1, the '
                 r'seed range of numpy\), got 4294967296$', id='transfer-seeds-too-large'),
    pytest.param(transfer(out_dir=_under_file), S,
                 r'^transfer.py: error: --out-dir: .*/plain_file/out is under .*/plain_file, '
                 r'which is a file$', id='transfer-out-dir-under-file'),
    pytest.param(transfer(out_dir=lambda tmp: '/proc/mmvitscale_out'), S,
                 _on_proc('^transfer.py: error: --out-dir: /proc/mmvitscale_out'),
                 id='transfer-out-dir-proc'),
    pytest.param(transfer(data_root=_a_file), S,
                 r'^transfer.py: error: --data-root: .*/plain_file is a file, not a folder$',
                 id='transfer-data-root-file'),
    pytest.param(scale_search('--img-size', '0'), S, r'--img-size: must be >= 1, got 0',
                 id='scale_search-img-size'),
    pytest.param(scale_search('--img-size', '30'), S,
                 r'--grid / --arch: img_size=30 is not a multiple of patch_size=4',
                 id='scale_search-img-size-vs-patch'),
    pytest.param(scale_search('--backbone-kwargs', '{"img_size": 32}'), S,
                 r"--backbone-kwargs \{\"img_size\": 32\}: must not set \['img_size'\]",
                 id='scale_search-backbone-kwargs-clash'),
    pytest.param(scale_search('--backbone-kwargs', 'with_cls_token=False'), S,
                 r'--backbone-kwargs: not a JSON dict', id='scale_search-backbone-kwargs-json'),
    pytest.param(call(write_rule_file, '/', dict(depth=2)), V, r'^rule file: / is a folder',
                 id='write_rule_file-folder'),
    pytest.param(latency_table('[]', '[]'), W, r't.jsonl:1: skipping a line that is not a latency '
                 r'row \(a JSON list, not an object\)', id='latency-row-list'),
    pytest.param(latency_table('{"foo": 1}'), W, r"t.jsonl:1: skipping a line that is not a "
                 r"latency row \(no 'fingerprint' key", id='latency-row-object'),
    pytest.param(latency_table('{"fingerprint": {}, "fingerprint_id": "abc", "arch": 3}'), W,
                 r"t.jsonl:1: .*not a latency row \('arch' is a int, not a dict\)",
                 id='latency-row-arch-type'),
    # ---------------------------------------------------------------- data tools
    pytest.param(data_tool(make_det, '--num-train', '-5'), S,
                 r'--num-train must be a positive integer, got -5', id='make_det-num-train'),
    pytest.param(data_tool(make_det, '--canvas', '0'), S,
                 r'--canvas must be a positive integer, got 0', id='make_det-canvas'),
    pytest.param(data_tool(make_video, '--fps', '0'), S,
                 r'--fps must be a positive integer, got 0', id='make_video-fps'),
    pytest.param(corrupted_dataset('det', 'val/000001.png'), DatasetError,
                 r'det: data file val/000001.png was modified or is corrupt \(sha256 differs',
                 id='kept-det-png-same-size'),
    pytest.param(corrupted_dataset('video', 'videos_train/000000.mp4'), DatasetError,
                 r'video: data file videos_train/000000.mp4 was modified or is corrupt',
                 id='kept-video-mp4-same-size'),
    pytest.param(host_dataset('det', {'annotations/instances_train.json': b'{"images": ['}),
                 DatasetError, r'data/annotations/instances_train.json: not a readable COCO '
                 r'annotation file \(JSONDecodeError', id='train-coco-json-corrupt'),
    pytest.param(host_dataset('det', {'annotations/instances_train.json': _coco().encode(),
                                      'train/000000.png': b'not a png'}), DatasetError,
                 r'data/train/000000.png: loading failed in the data pipeline',
                 id='train-png-corrupt'),
    pytest.param(host_dataset('video', {'train_list_videos.txt': b'000000.mp4 1\n',
                                        'videos_train/000000.mp4': b'\0' * 3000}), DatasetError,
                 r'data/videos_train/000000.mp4: loading failed in the data pipeline',
                 id='train-mp4-corrupt'),
    pytest.param(data_tool(make_video, '--size', '63'), S,
                 r'--size must be even \(MPEG-4 frame size\), got 63', id='make_video-size-odd'),
]


def _snapshot(root) -> Dict[str, Tuple[int, int]]:
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = osp.join(folder, name)
            st = os.lstat(path)
            out[osp.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
    return out


def _run(thunk, exc_type, capsys) -> str:
    """Run a case; return the message the user sees (exception, warning or stderr)."""
    capsys.readouterr()
    if issubclass(exc_type, Warning):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter('always')
            with pytest.raises(ValueError, match='0 rows'):  # nothing usable: a plain refusal
                thunk()
        return '\n'.join(str(w.message) for w in seen if issubclass(w.category, exc_type))
    with pytest.raises(BaseException) as info:
        thunk()
    assert type(info.value) is exc_type, f'{type(info.value).__name__}: {info.value}'
    if exc_type is SystemExit and info.value.code == 2:  # argparse: the message is on stderr
        return capsys.readouterr().err.strip().splitlines()[-1]
    return str(info.value)


@pytest.mark.parametrize('setup, exc_type, pattern', CASES)
def test_bad_input(setup, exc_type, pattern, tmp_path, capsys, monkeypatch):
    work = tmp_path / 'case'
    work.mkdir()
    monkeypatch.chdir(work)  # tools' relative default outputs would land here
    thunk = setup(work)
    before = _snapshot(tmp_path)
    message = _run(thunk, exc_type, capsys)
    assert re.search(pattern, message, re.M), message
    assert _snapshot(tmp_path) == before, 'the failed call changed or left files on disk'


def test_table_is_large_enough():
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


# -------------------------------------------------------------------- what the checks allow
def test_stale_temp_folders_of_a_killed_run_are_cleaned(tmp_path, capsys):
    import subprocess

    from mmvitscale.datasets import generate_det
    _source_or_skip()
    dead = subprocess.Popen([sys.executable, '-c', 'pass'])
    dead.wait()  # its pid names a finished process
    legacy, killed = tmp_path / '.det.tmp-abc123xy', tmp_path / f'.det.tmp-{dead.pid}-q1w2e3'
    live = tmp_path / f'.det.tmp-{os.getppid()}-r4t5y6'  # a running process: in use, kept
    old = tmp_path / f'.det.old-{dead.pid}-zz'
    for folder in (legacy, killed, live, old):
        (folder / 'train').mkdir(parents=True)
        (folder / 'train' / '000000.png').write_bytes(b'partial')
    other = tmp_path / '.detx.tmp-abc123xy'  # another dataset's folder: not ours to touch
    other.mkdir()
    manifest = generate_det(str(tmp_path / 'det'), num_train=2, num_val=2, show_progress=False)
    assert not manifest['reused']
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(['det', live.name, other.name])
    assert sorted(manifest['stale_removed']) == sorted(str(p) for p in (legacy, killed, old))
    killed.mkdir()  # the command line says what it removed
    assert make_det.main(['--out', str(tmp_path / 'det'), '--num-train', '2', '--num-val', '2',
                          '--no-progress'])['reused']
    assert not killed.exists()
    assert f'removed {killed} (left by a generator that was killed)' in capsys.readouterr().out


def test_manifest_records_every_data_file_hash(tmp_path):
    from mmvitscale.datasets import MANIFEST, generate_det
    from mmvitscale.datasets.generators import sha256_file
    _source_or_skip()
    out = tmp_path / 'det'
    manifest = generate_det(str(out), num_train=2, num_val=2, show_progress=False)
    assert sorted(manifest['data_files']) == ['train/000000.png', 'train/000001.png',
                                              'val/000000.png', 'val/000001.png']
    assert all(sha256_file(str(out / rel)) == digest
               for rel, digest in manifest['data_files'].items())
    # a manifest written before per-file hashes: the per-split digest still catches a change
    legacy = dict(manifest)
    for key in ('data_files', 'reused', 'stale_removed'):
        legacy.pop(key)
    (out / MANIFEST).write_text(json.dumps(legacy))
    assert generate_det(str(out), num_train=2, num_val=2, show_progress=False)['reused']
    png = out / 'val' / '000000.png'
    png.write_bytes(png.read_bytes()[:-1] + bytes([png.read_bytes()[-1] ^ 1]))
    with pytest.raises(DatasetError, match=r'the val data files were modified or are corrupt '
                                           r'\(their sha256 differs from manifest.json'):
        generate_det(str(out), num_train=2, num_val=2, show_progress=False)


@pytest.mark.parametrize('build', [vit, pit, video])
def test_qkv_bias_is_honoured_by_every_family(build):
    for bias in (True, False):
        qkv = [m for n, m in build(qkv_bias=bias).named_modules() if n.endswith('attn.qkv')]
        assert qkv and all((m.bias is not None) is bias for m in qkv)


def test_video_frozen_stages():
    model = video(frozen_stages=1).train()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert {'cls_token', 'pos_embed', 'time_embed', 'patch_embed.proj.weight'} <= frozen
    assert all(n in frozen for n, _ in model.blocks[0].named_parameters(prefix='blocks.0'))
    assert not frozen & {n for n, _ in model.blocks[1].named_parameters(prefix='blocks.1')}
    assert not model.blocks[0].training and model.blocks[1].training
    assert video(frozen_stages=2).train().norm.training is False


@pytest.mark.parametrize('size', [32, 34, 36, 40])
def test_vit_and_pit_refuse_exactly_the_sizes_that_drop_pixels(size):
    # ViT: patch 8, stride 8; PiT: patch 8, stride 4 (36 = 8 + 4 * 7 tiles PiT, not ViT)
    x = torch.zeros(1, 3, size, size)
    for name, ok in (('vit', size % 8 == 0), ('pit', (size - 8) % 4 == 0)):
        if ok:
            model(name)(x)
        else:
            with pytest.raises(ValueError, match=f'got shape \\(1, 3, {size}, {size}\\)'):
                model(name)(x)
