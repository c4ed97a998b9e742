# Shape spanning the space (transfer study): half the input resolution with half the patch
# (the same token grid over a downsampled input); width solved per task to the baseline's cost.
scaling = dict(resolution_mult=0.5, patch_size_mult=0.5)
