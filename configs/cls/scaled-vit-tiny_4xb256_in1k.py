# ImageNet-1k, mmpretrain's DeiT-Ti recipe with ScaledViT. Change the first base to apply
# another scaling rule: backbone and every pipeline size follow it.
_base_ = ['../_base_/scaling/deit_tiny_shape.py', 'mmpretrain::deit/deit-tiny_4xb256_in1k.py']
from mmvitscale.rules import derive_image, rescale_pipeline  # noqa: E402  (after _base_)

scaled = derive_image('vit', 'deit-tiny', _base_.scaling, img_size=224, patch_size=16)
model = dict(backbone=dict(_delete_=True, **scaled['backbone']),
             head=dict(in_channels=scaled['arch']['embed_dims']))
train_dataloader = dict(dataset=dict(
    pipeline=rescale_pipeline(_base_.train_pipeline, scaled['input_size'][0])))
val_dataloader = dict(dataset=dict(
    pipeline=rescale_pipeline(_base_.test_pipeline, scaled['input_size'][0])))
test_dataloader = val_dataloader

runner_type = 'mmvitscale.DataCheckedRunner'
data_check = dict(  # the checked paths are the dataloaders' (DataCheckedRunner)
    hint='ImageNet-1k goes under data/imagenet/ (train/, val/ and meta/ in mmpretrain\'s '
    'layout).\nNo ImageNet? Run the offline variant on Fashion-MNIST:\n'
    '  python tools/data/prepare_fashion_mnist.py --out data/fashion_mnist\n'
    '  python tools/train.py configs/cls/scaled_vit_fmnist.py')
