# Higher input resolution with a proportionally larger patch: same token count, finer input.
scaling = dict(resolution_mult=1.25, patch_size_mult=1.25)
