# ScaledPiT on offline Fashion-MNIST, sized for seeded studies (the `cls_pit` task of
# tools/transfer.py, the variant the ViT rules transfer to): 28-px items as they are, 4-px
# patches (7 x 7 tokens, pooled to 4 x 4 and 2 x 2), widths 32/64/128. The same rule files
# apply (depth, heads and head dims per stage scale together). Change the first base to apply
# another rule.
_base_ = ['../_base_/scaling/deit_tiny_shape.py', '../_base_/cls_fashion_mnist_study.py']
from mmvitscale.rules import derive_image  # noqa: E402  (after _base_: stays a text config)

scaled = derive_image('pit', dict(base_dims=(16, 16, 16), depths=(1, 2, 1), heads=(2, 4, 8),
                                  mlp_ratio=2.0, patch_size=4, patch_stride=4),
                      _base_.scaling, img_size=28, in_channels=1,
                      init_cfg=_base_.torch_linear_init)
model = dict(
    type='ImageClassifier',
    backbone=scaled['backbone'],
    neck=None,
    head=dict(type='LinearClsHead', num_classes=10,
              in_channels=scaled['arch']['base_dims'][-1] * scaled['arch']['heads'][-1],
              loss=dict(type='CrossEntropyLoss')))

pipeline = [dict(type='Resize', scale=scaled['input_size']), dict(type='PackInputs')]
train_dataloader = dict(dataset=dict(pipeline=pipeline))
val_dataloader = dict(dataset=dict(pipeline=pipeline))
test_dataloader = dict(dataset=dict(pipeline=pipeline))
