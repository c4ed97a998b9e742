# Shape spanning the space (transfer study): twice the input resolution with twice the patch
# (the same token grid over an upsampled input); width solved per task to the baseline's cost.
scaling = dict(resolution_mult=2.0, patch_size_mult=2.0)
