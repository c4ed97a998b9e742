# Wider and shallower, mildly, at about the baseline's FLOPs: depth x0.75, width x1.2 (keeps
# every PiT stage at >= 1 block, unlike wider_shallower's depth x0.5).
scaling = dict(depth_mult=0.75, width_mult=1.2)
