"""Exceptions of alexnet_c."""


class WeightsError(ValueError):
    """A weights file or state dict that alexnet_c cannot use (wrong format, keys,
    shapes, or content that would need code to run)."""
