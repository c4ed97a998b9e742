# Kinetics-400 with a ScaledVideoViT (DeiT-Ti base, divided space-time attention) in
# mmaction2's TimeSformer recipe. Change the first base to apply another scaling rule.
_base_ = ['../_base_/scaling/deit_tiny_shape.py',
          'mmaction::recognition/timesformer/timesformer_divST_8xb8-8x32x1-15e_kinetics400-rgb.py']
from mmvitscale.rules import derive_video, rescale_pipeline  # noqa: E402  (after _base_)

scaled = derive_video('deit-tiny', _base_.scaling, img_size=224, patch_size=16, num_frames=8,
                      attention_type='divided')
model = dict(backbone=dict(_delete_=True, **scaled['backbone']),
             cls_head=dict(in_channels=scaled['arch']['embed_dims']))

size, frames = scaled['input_size'][0], scaled['num_frames']
train_pipeline = rescale_pipeline(_base_.train_pipeline, size, 224, frames)
val_pipeline = rescale_pipeline(_base_.val_pipeline, size, 224, frames)
test_pipeline = rescale_pipeline(_base_.test_pipeline, size, 224, frames)
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=val_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))

runner_type = 'mmvitscale.DataCheckedRunner'
data_check = dict(  # the checked paths are the dataloaders' (DataCheckedRunner)
    hint='Kinetics-400 goes under data/kinetics400/ (videos_train/, videos_val/ and the '
    'kinetics400_{train,val}_list_videos.txt lists in mmaction2 format).\n'
    'No Kinetics? Run the offline variant on moving Fashion-MNIST items:\n'
    '  python tools/data/make_video.py --out data/fmnist_video_hard --distractors 2 --noise 24\n'
    '  python tools/train.py configs/video/scaled_vit_fmnist_video.py')
