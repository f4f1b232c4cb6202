"""The training run: parts built once, the iteration, inputs, checkpoints, resume."""
