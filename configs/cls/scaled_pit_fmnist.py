# ScaledPiT on offline Fashion-MNIST: the same rule files apply to PiT (depth, heads and head
# dims per stage scale together). Change the first base to apply another rule.
_base_ = ['../_base_/scaling/deit_tiny_shape.py', '../_base_/cls_fashion_mnist.py']
from mmvitscale.rules import derive_image  # noqa: E402  (after _base_: stays a text config)

# Task base: a small PiT (3 stages, widths 32/64/128); 28 px items up-sampled to 32.
scaled = derive_image('pit', dict(base_dims=(16, 16, 16), depths=(1, 3, 2), heads=(2, 4, 8),
                                  patch_size=4, patch_stride=2),
                      _base_.scaling, img_size=32, in_channels=1)
model = dict(
    type='ImageClassifier',
    backbone=scaled['backbone'],
    neck=None,
    head=dict(type='LinearClsHead', num_classes=10,
              in_channels=scaled['arch']['base_dims'][-1] * scaled['arch']['heads'][-1],
              loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')))

pipeline = [dict(type='Resize', scale=scaled['input_size']), dict(type='PackInputs')]
train_dataloader = dict(dataset=dict(pipeline=pipeline))
val_dataloader = dict(dataset=dict(pipeline=pipeline))
test_dataloader = dict(dataset=dict(pipeline=pipeline))
