# Wider and shallower at about the baseline's FLOPs: depth x0.5, width x1.4.
scaling = dict(depth_mult=0.5, width_mult=1.4)
