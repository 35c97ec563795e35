"""sparseflow: train sparse neural networks and see why they train well or badly."""

__version__ = "0.1.0"
