"""`type='mmvitscale.X'` builds from plain host configs (host default scope, no custom_imports)
and the built models run a loss and a predict step."""
import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.registry import DefaultScope

TINY = dict(embed_dims=32, num_layers=2, num_heads=2, mlp_ratio=2.0)


def _scope(name):
    return DefaultScope.get_instance(f'test-{name}-{torch.randint(1 << 30, ()).item()}',
                                     scope_name=name)


def test_unscoped_name_fails_in_host_scope():
    from mmpretrain.registry import MODELS
    _scope('mmpretrain')
    with pytest.raises(KeyError, match='ScaledViT is not in the mmpretrain::model registry'):
        MODELS.build(dict(type='ScaledViT'))


@pytest.mark.slow
def test_mmpretrain_image_classifier():
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    _scope('mmpretrain')
    model = MODELS.build(dict(
        type='ImageClassifier',
        data_preprocessor=dict(type='ClsDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3),
        backbone=dict(type='mmvitscale.ScaledViT', arch=TINY, img_size=32, patch_size=8),
        neck=None,
        head=dict(type='LinearClsHead', num_classes=10, in_channels=32,
                  loss=dict(type='CrossEntropyLoss'))))
    assert type(model.backbone).__module__ == 'mmvitscale.models.vit'
    data = dict(inputs=[torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8) for _ in range(2)],
                data_samples=[DataSample().set_gt_label(i) for i in (1, 7)])
    losses = model(**model.data_preprocessor(data, True), mode='loss')
    assert torch.isfinite(losses['loss'])
    losses['loss'].backward()
    assert model.backbone.blocks[0].attn.qkv.weight.grad is not None
    model.eval()
    with torch.no_grad():
        preds = model(**model.data_preprocessor(data, False), mode='predict')
    assert len(preds) == 2 and preds[0].pred_score.shape == (10, )


VIT_DET = (dict(type='mmvitscale.ScaledViT', arch=TINY, img_size=64, patch_size=16,
                out_type='featmap'),
           dict(type='mmvitscale.SimpleFeaturePyramid', in_channels=32, out_channels=32,
                scale_factors=(2.0, 1.0, 0.5), num_outs=5))
PIT_DET = (dict(type='mmvitscale.ScaledPiT', img_size=64, out_type='featmap',
                out_indices=(0, 1, 2),
                arch=dict(base_dims=(8, 8, 8), depths=(1, 1, 1), heads=(1, 2, 4),
                          patch_size=8, patch_stride=8)),
           dict(type='FPN', in_channels=[8, 16, 32], out_channels=32, start_level=0,
                add_extra_convs='on_input', num_outs=5))


@pytest.mark.slow
@pytest.mark.parametrize('backbone, neck', [VIT_DET, PIT_DET], ids=['vit+sfp', 'pit+fpn'])
def test_mmdet_retinanet(backbone, neck):
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    _scope('mmdet')
    model = MODELS.build(ConfigDict(
        type='RetinaNet',
        data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True,
                               pad_size_divisor=32),
        backbone=backbone,
        neck=neck,
        bbox_head=dict(
            type='RetinaHead', num_classes=10, in_channels=32, stacked_convs=1,
            feat_channels=32,
            anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4,
                                  scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                                  strides=[8, 16, 32, 64, 128]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0] * 4,
                            target_stds=[1.0] * 4),
            loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                          loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        train_cfg=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4,
                                     min_pos_iou=0, ignore_iof_thr=-1),
                       sampler=dict(type='PseudoSampler'), allowed_border=-1, pos_weight=-1,
                       debug=False),
        test_cfg=dict(nms_pre=100, min_bbox_size=0, score_thr=0.0,
                      nms=dict(type='nms', iou_threshold=0.5), max_per_img=10)))
    data = demo_mm_inputs(batch_size=2, image_shapes=(3, 64, 64), num_classes=10)
    batch = model.data_preprocessor(data, True)
    feats = model.extract_feat(batch['inputs'])
    assert [f.shape[-1] for f in feats[:3]] == [8, 4, 2]  # strides 8 / 16 / 32
    assert len(feats) == 5
    losses = model(**batch, mode='loss')
    total = sum(v if isinstance(v, torch.Tensor) else sum(v) for k, v in losses.items()
                if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    model.eval()
    with torch.no_grad():
        preds = model(**model.data_preprocessor(data, False), mode='predict')
    assert len(preds) == 2
    assert preds[0].pred_instances.bboxes.shape[-1] == 4
    assert len(preds[0].pred_instances) <= 10


@pytest.mark.slow
def test_mmaction_recognizer2d_single_tensor_mode():
    from mmaction.registry import MODELS
    from mmaction.structures import ActionDataSample
    _scope('mmaction')
    model = MODELS.build(dict(
        type='Recognizer2D',
        backbone=dict(type='mmvitscale.ScaledViT', arch=TINY, img_size=32, patch_size=8,
                      out_type='featmap', return_tuple=False),
        cls_head=dict(type='TSNHead', num_classes=5, in_channels=32, spatial_type='avg',
                      consensus=dict(type='AvgConsensus', dim=1), average_clips='prob'),
        data_preprocessor=dict(type='ActionDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], format_shape='NCHW')))
    data = dict(
        inputs=[torch.randint(0, 255, (3, 3, 32, 32), dtype=torch.uint8) for _ in range(2)],
        data_samples=[ActionDataSample().set_gt_label(torch.tensor([i])) for i in (0, 4)])
    losses = model(**model.data_preprocessor(data, True), mode='loss')
    assert torch.isfinite(losses['loss_cls'])
    losses['loss_cls'].backward()
    model.eval()
    with torch.no_grad():
        preds = model(**model.data_preprocessor(data, False), mode='predict')
    assert len(preds) == 2 and preds[0].pred_score.shape == (5, )
