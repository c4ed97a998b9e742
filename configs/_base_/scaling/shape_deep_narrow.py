# Shape spanning the space (transfer study): twice the depth; the study solves the width on
# each task so that the backbone costs what that task's baseline costs (--match flops).
scaling = dict(depth_mult=2.0)
