"""The appearance network whose activations are binarized into a garment's appearance code."""
