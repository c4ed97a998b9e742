# Shape spanning the space (transfer study): MLP ratio 6; width solved per task to the
# baseline's cost (narrower, with more of the cost in the MLP).
scaling = dict(mlp_ratio=6.0)
