"""Where code runs: devices, environment, torchrun/distributed."""
