# ScaledViT on offline Fashion-MNIST, sized for seeded studies (the `cls` task of
# tools/transfer.py): 28-px items as they are, 7-px patches (4 x 4 tokens), average-pooled
# tokens, 2 epochs over the 60000 training images. The baseline reaches >= 85% top-1 in about
# a minute on one CPU thread (README: "Tasks that can rank"). Change the first base to apply
# another scaling rule.
_base_ = ['../_base_/scaling/deit_tiny_shape.py', '../_base_/cls_fashion_mnist_study.py']
from mmvitscale.rules import derive_image  # noqa: E402  (after _base_: stays a text config)

scaled = derive_image('vit', dict(embed_dims=64, num_layers=4, num_heads=2, mlp_ratio=2.0),
                      _base_.scaling, img_size=28, patch_size=7, in_channels=1,
                      out_type='avg_featmap', with_cls_token=False,
                      init_cfg=_base_.torch_linear_init)
model = dict(
    type='ImageClassifier',
    backbone=scaled['backbone'],
    neck=None,
    head=dict(type='LinearClsHead', num_classes=10, in_channels=scaled['arch']['embed_dims'],
              loss=dict(type='CrossEntropyLoss')))

pipeline = [dict(type='Resize', scale=scaled['input_size']), dict(type='PackInputs')]
train_dataloader = dict(dataset=dict(pipeline=pipeline))
val_dataloader = dict(dataset=dict(pipeline=pipeline))
test_dataloader = dict(dataset=dict(pipeline=pipeline))
