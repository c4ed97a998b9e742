# DeiT-Ti recipe (mmpretrain's config) with mmvitscale's ScaledViT as the backbone.
_base_ = 'mmpretrain::deit/deit-tiny_4xb256_in1k.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmvitscale.ScaledViT',
        arch='deit-tiny',
        img_size=224,
        patch_size=16,
        scaling=dict()))
