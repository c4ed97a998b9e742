# Offline space-time ScaledVideoViT on moving Fashion-MNIST items (labels = direction of
# motion). Change the first base to apply another scaling rule: backbone, input size and clip
# length follow it.
_base_ = ['../_base_/scaling/deit_tiny_shape.py', '../_base_/video_fashion_mnist.py']
from mmvitscale.rules import derive_video, rescale_pipeline  # noqa: E402  (after _base_)

# Tubelets of 2 frames let the patch embedding see motion directly (with 1-frame tubelets this
# small model stayed near chance after 8 epochs: 18% vs 95% top-1, same recipe).
scaled = derive_video(dict(embed_dims=64, num_layers=4, num_heads=2, mlp_ratio=4.0),
                      _base_.scaling, img_size=32, patch_size=8, num_frames=8, tubelet_size=2,
                      attention_type='joint')
model = dict(backbone=scaled['backbone'],
             cls_head=dict(in_channels=scaled['arch']['embed_dims']))

size, frames = scaled['input_size'][0], scaled['num_frames']
train_pipeline = rescale_pipeline(_base_.train_pipeline, size, 32, frames)
val_pipeline = rescale_pipeline(_base_.val_pipeline, size, 32, frames)
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=val_pipeline))
test_dataloader = dict(dataset=dict(pipeline=val_pipeline))
