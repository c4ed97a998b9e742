# Shape spanning the space (transfer study): one attention head (every PiT stage too); width
# solved per task to the baseline's cost.
scaling = dict(heads=1)
