# Offline RetinaNet + ScaledViT on Fashion-MNIST canvases. Change the first base to apply
# another scaling rule: backbone, input size, pyramid strides and padding follow it.
_base_ = ['../_base_/scaling/deit_tiny_shape.py', '../_base_/retinanet_sfp.py',
          '../_base_/det_fashion_mnist.py']
from mmvitscale.rules import derive_detection, rescale_pipeline  # noqa: E402  (after _base_)

# Sized for the transfer study (a trial in well under a minute on one core): a light neck and
# head (32 channels, one stacked conv, three pyramid levels at strides p/2, p, 2p: the items
# are 28-56 px, anchors of 4x the stride), one anchor scale per level.
scaled = derive_detection(dict(embed_dims=64, num_layers=4, num_heads=2, mlp_ratio=4.0),
                          _base_.scaling, img_size=128, patch_size=16)
model = dict(
    data_preprocessor=dict(pad_size_divisor=scaled['pad_size_divisor']),
    backbone=scaled['backbone'],
    neck=dict(in_channels=scaled['arch']['embed_dims'], out_channels=32, num_outs=3),
    bbox_head=dict(num_classes=10, in_channels=32, feat_channels=32, stacked_convs=1,
                   anchor_generator=dict(strides=scaled['strides'][:3], scales_per_octave=1)),
    test_cfg=dict(score_thr=0.05, max_per_img=20))

size = scaled['input_size'][0]
train_pipeline = rescale_pipeline(_base_.train_pipeline, size, 128)
test_pipeline = rescale_pipeline(_base_.test_pipeline, size, 128)
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
