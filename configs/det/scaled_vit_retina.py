# RetinaNet + ScaledViT (DeiT-Ti base) on COCO 2017, mmdet's 1x schedule. Change the first base
# to apply another scaling rule. Without COCO under data/coco/ it stops before building anything.
_base_ = ['../_base_/scaling/deit_tiny_shape.py', '../_base_/retinanet_sfp.py',
          'mmdet::_base_/datasets/coco_detection.py', 'mmdet::_base_/schedules/schedule_1x.py',
          'mmdet::_base_/default_runtime.py']
from mmvitscale.rules import derive_detection, rescale_pipeline  # noqa: E402  (after _base_)

scaled = derive_detection('deit-tiny', _base_.scaling, img_size=224, patch_size=16,
                          drop_path_rate=0.1)
model = dict(
    data_preprocessor=dict(pad_size_divisor=scaled['pad_size_divisor']),
    backbone=scaled['backbone'],
    neck=dict(in_channels=scaled['arch']['embed_dims'], out_channels=256),
    bbox_head=dict(anchor_generator=dict(strides=scaled['strides'])))

size = scaled['input_size'][0]
train_pipeline = rescale_pipeline(_base_.train_pipeline, size, 224)
test_pipeline = rescale_pipeline(_base_.test_pipeline, size, 224)
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
optim_wrapper = dict(_delete_=True, optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
                     clip_grad=dict(max_norm=10.0))

runner_type = 'mmvitscale.DataCheckedRunner'
data_check = dict(  # the checked paths are the dataloaders' (DataCheckedRunner)
    hint='COCO 2017 goes under data/coco/: annotations/instances_{train,val}2017.json, '
    'train2017/, val2017/ (or set data_root / ann_file with --cfg-options).\n'
    'No COCO? Run the offline variant on Fashion-MNIST canvases:\n'
    '  python tools/data/make_det.py --out data/fmnist_det\n'
    '  python tools/train.py configs/det/scaled_vit_retina_fmnist.py')
