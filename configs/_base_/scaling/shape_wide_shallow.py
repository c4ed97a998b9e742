# Shape spanning the space (transfer study): half the depth; the width is solved per task to
# the baseline's cost. PiT's depths 1/2/1 cannot halve (a stage would have no block): skipped.
scaling = dict(depth_mult=0.5)
