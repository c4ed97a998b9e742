# ScaledPiT on offline Fashion-MNIST, sized for seeded studies (the `cls_pit` task of
# tools/transfer.py, the variant the ViT rules transfer to): 28-px items as they are, 4-px
# patches (7 x 7 tokens, pooled to 4 x 4 and 2 x 2), widths 32/64/128. The same rule files
# apply (depth, heads and head dims per stage scale together). Change the first base to apply
# another rule.
_base_ = ['../_base_/scaling/deit_tiny_shape.py', '../_base_/cls_fashion_mnist.py']
from mmvitscale.rules import derive_image  # noqa: E402  (after _base_: stays a text config)

scaled = derive_image('pit', dict(base_dims=(16, 16, 16), depths=(1, 2, 1), heads=(2, 4, 8),
                                  mlp_ratio=2.0, patch_size=4, patch_stride=4),
                      _base_.scaling, img_size=28, in_channels=1,
                      # PyTorch's default Linear init after the DeiT one (as the ViT task)
                      init_cfg=dict(type='Kaiming', layer='Linear', a=5 ** 0.5, mode='fan_in',
                                    nonlinearity='leaky_relu', distribution='uniform'))
model = dict(
    type='ImageClassifier',
    backbone=scaled['backbone'],
    neck=None,
    head=dict(type='LinearClsHead', num_classes=10,
              in_channels=scaled['arch']['base_dims'][-1] * scaled['arch']['heads'][-1],
              loss=dict(type='CrossEntropyLoss')))

pipeline = [dict(type='Resize', scale=scaled['input_size']), dict(type='PackInputs')]
train_dataloader = dict(batch_size=128, dataset=dict(pipeline=pipeline))
val_dataloader = dict(dataset=dict(pipeline=pipeline))
test_dataloader = dict(dataset=dict(pipeline=pipeline))

optim_wrapper = dict(optimizer=dict(type='AdamW', lr=3e-3, weight_decay=0.05),
                     clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=47),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, T_max=2, eta_min=0.0,
         convert_to_iter_based=True)]
train_cfg = dict(by_epoch=True, max_epochs=2, val_interval=1)
