# Shape spanning the space (transfer study): four attention heads (every PiT stage too); width
# solved per task to the baseline's cost.
scaling = dict(heads=4)
