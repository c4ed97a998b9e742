# Offline RetinaNet + ScaledViT on Fashion-MNIST canvases. Change the first base to apply
# another scaling rule: backbone, input size, pyramid strides and padding follow it.
_base_ = ['../_base_/scaling/deit_tiny_shape.py', '../_base_/retinanet_sfp.py',
          '../_base_/det_fashion_mnist.py']
from mmvitscale.rules import derive_detection  # noqa: E402  (after _base_: stays a text config)

scaled = derive_detection(dict(embed_dims=64, num_layers=6, num_heads=2, mlp_ratio=4.0),
                          _base_.scaling, img_size=128, patch_size=16, base_scale=(128, 128))
model = dict(
    data_preprocessor=dict(pad_size_divisor=scaled['pad_size_divisor']),
    backbone=scaled['backbone'],
    neck=dict(in_channels=scaled['arch']['embed_dims'], out_channels=64),
    bbox_head=dict(num_classes=10, in_channels=64, feat_channels=64, stacked_convs=2,
                   anchor_generator=dict(strides=scaled['strides'])),
    test_cfg=dict(score_thr=0.05, max_per_img=20))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=scaled['scale'], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scaled['scale'], keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
