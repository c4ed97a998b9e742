# ImageNet-1k with ScaledPiT pit-ti (PiT-Ti: widths 64/128/256, depths 2/6/4, 16-px patches at
# stride 8, 224 px; about 4.9M parameters), trained with mmpretrain's DeiT-Ti recipe exactly as
# the ViT config (scaled-vit-tiny_4xb256_in1k.py) so the two arms compare: the same data
# pipeline, schedule and augments. Change the first base to apply another scaling rule:
# backbone and every pipeline size follow it.
_base_ = ['../_base_/scaling/deit_tiny_shape.py', 'mmpretrain::deit/deit-tiny_4xb256_in1k.py']
from mmvitscale.rules import derive_image, rescale_pipeline  # noqa: E402  (after _base_)

scaled = derive_image('pit', 'pit-ti', _base_.scaling, img_size=224)
model = dict(backbone=dict(_delete_=True, **scaled['backbone']),
             head=dict(in_channels=scaled['arch']['base_dims'][-1] * scaled['arch']['heads'][-1]))
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
    '  python tools/train.py configs/cls/scaled_pit_fmnist.py')
