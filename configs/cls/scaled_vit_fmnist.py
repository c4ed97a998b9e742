# ScaledViT on offline Fashion-MNIST. Change the first base to apply another scaling rule.
_base_ = ['../_base_/scaling/deit_tiny_shape.py', '../_base_/cls_fashion_mnist.py']
from mmvitscale.rules import derive_image  # noqa: E402  (after _base_: stays a text config)

# Task base: a small ViT (the offline stand-in for DeiT-Ti); 28 px items up-sampled to 32.
scaled = derive_image('vit', dict(embed_dims=64, num_layers=6, num_heads=2, mlp_ratio=4.0),
                      _base_.scaling, img_size=32, patch_size=4, in_channels=1)
model = dict(
    type='ImageClassifier',
    backbone=scaled['backbone'],
    neck=None,
    head=dict(type='LinearClsHead', num_classes=10, in_channels=scaled['arch']['embed_dims'],
              loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')))

pipeline = [dict(type='Resize', scale=scaled['input_size']), dict(type='PackInputs')]
train_dataloader = dict(dataset=dict(pipeline=pipeline))
val_dataloader = dict(dataset=dict(pipeline=pipeline))
test_dataloader = dict(dataset=dict(pipeline=pipeline))
