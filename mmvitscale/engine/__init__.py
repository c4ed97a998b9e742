"""Training-time extensions (hooks) for mmengine runners."""
