# RetinaNet on a single-scale ViT map through the simple feature pyramid (strides p/2 .. 8p).
_base_ = ['mmdet::_base_/models/retinanet_r50_fpn.py']

model = dict(
    backbone=dict(_delete_=True, out_type='featmap'),
    neck=dict(_delete_=True, type='mmvitscale.SimpleFeaturePyramid',
              scale_factors=(2.0, 1.0, 0.5), num_outs=5))
