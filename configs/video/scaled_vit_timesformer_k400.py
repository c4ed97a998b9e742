# Kinetics-400 with a ScaledVideoViT (DeiT-Ti base, divided space-time attention) in
# mmaction2's TimeSformer recipe. Change the first base to apply another scaling rule.
_base_ = ['../_base_/scaling/deit_tiny_shape.py',
          'mmaction::recognition/timesformer/timesformer_divST_8xb8-8x32x1-15e_kinetics400-rgb.py']
from mmvitscale.rules import derive_video  # noqa: E402  (after _base_: stays a text config)

scaled = derive_video('deit-tiny', _base_.scaling, img_size=224, patch_size=16, num_frames=8,
                      attention_type='divided')
model = dict(backbone=dict(_delete_=True, **scaled['backbone']),
             cls_head=dict(in_channels=scaled['arch']['embed_dims']))

frames, size = scaled['num_frames'], scaled['input_size'][0]
interval = max(1, 256 // frames)  # the recipe's 8 x 32 frame span, kept as frames change
train_pipeline = [
    dict(type='DecordInit'),
    dict(type='SampleFrames', clip_len=frames, frame_interval=interval, num_clips=1),
    dict(type='DecordDecode'),
    dict(type='RandomRescale', scale_range=(size * 8 // 7, size * 10 // 7)),
    dict(type='RandomCrop', size=size),
    dict(type='Flip', flip_ratio=0.5),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs'),
]
val_pipeline = [
    dict(type='DecordInit'),
    dict(type='SampleFrames', clip_len=frames, frame_interval=interval, num_clips=1,
         test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, size * 8 // 7)),
    dict(type='CenterCrop', crop_size=size),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=val_pipeline))
test_dataloader = dict(dataset=dict(pipeline=val_pipeline))

runner_type = 'mmvitscale.DataCheckedRunner'
data_check = dict(
    paths=[_base_.ann_file_train, _base_.data_root, _base_.ann_file_val, _base_.data_root_val],
    hint='Kinetics-400 goes under data/kinetics400/ (videos_train/, videos_val/ and the '
    'kinetics400_{train,val}_list_videos.txt lists in mmaction2 format).\n'
    'No Kinetics? Run the offline variant on moving Fashion-MNIST items:\n'
    '  python tools/data/make_video.py --out data/fmnist_video\n'
    '  python tools/train.py configs/video/scaled_vit_fmnist_video.py')
