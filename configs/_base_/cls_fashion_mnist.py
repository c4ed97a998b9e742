# Offline classification: Fashion-MNIST (Debian package dataset-fashion-mnist, laid out by
# `python tools/data/prepare_fashion_mnist.py`), on mmpretrain's runtime defaults.
_base_ = ['mmpretrain::_base_/default_runtime.py']

# mmpretrain's FashionMNIST with the items computed once and kept as tensors (same items)
dataset_type = 'mmvitscale.InMemoryFashionMNIST'
data_root = 'data/fashion_mnist'
data_preprocessor = dict(num_classes=10, mean=[72.94], std=[90.02], to_rgb=False)

# num_workers=0: items are ready tensors, so worker processes would only take cores from training
train_dataloader = dict(
    batch_size=128,
    num_workers=0,
    collate_fn=dict(type='default_collate'),  # one stacked uint8 batch, not a list
    dataset=dict(type=dataset_type, data_root=data_root, test_mode=False, download=False),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=256,
    num_workers=0,
    collate_fn=dict(type='default_collate'),
    dataset=dict(type=dataset_type, data_root=data_root, split='test', test_mode=True,
                 download=False),
    sampler=dict(type='DefaultSampler', shuffle=False))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
    clip_grad=dict(max_norm=5.0))
param_scheduler = dict(type='CosineAnnealingLR', by_epoch=True, T_max=5,
                       convert_to_iter_based=True)
train_cfg = dict(by_epoch=True, max_epochs=5, val_interval=1)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(logger=dict(interval=50), checkpoint=dict(max_keep_ckpts=1))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
