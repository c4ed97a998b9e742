# Deeper and narrower at about the baseline's FLOPs: depth x1.5, width x0.8.
scaling = dict(depth_mult=1.5, width_mult=0.8)
