# Deeper and narrower, mildly, at about the baseline's FLOPs: depth x1.25, width x0.9.
scaling = dict(depth_mult=1.25, width_mult=0.9)
