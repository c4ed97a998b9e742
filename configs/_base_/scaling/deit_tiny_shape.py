# Baseline: the preset as it is (DeiT-Ti shape when the task's base arch is deit-tiny).
scaling = dict()
