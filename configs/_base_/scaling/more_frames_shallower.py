# Video: twice the frames, half the depth (image tasks ignore the frame knob).
scaling = dict(frames_mult=2.0, depth_mult=0.5)
