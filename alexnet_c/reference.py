"""PyTorch counterparts of alexnet_c's two layouts: what `check`, the benchmarks and
the parity tests compare against. torch is imported on first use, never by
`import alexnet_c`."""
from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=None)
def _original_class():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class AlexNet(nn.Module):
        """The "original" single-tower 2012 layout, as a PyTorch user writes it."""

        def __init__(self, num_classes: int = 1000) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 96, 11, stride=4, padding=0), nn.ReLU(), nn.MaxPool2d(3, 2),
                nn.Conv2d(96, 256, 5, stride=1, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
                nn.Conv2d(256, 384, 3, stride=1, padding=1), nn.ReLU(),
                nn.Conv2d(384, 384, 3, stride=1, padding=1), nn.ReLU(),
                nn.Conv2d(384, 256, 3, stride=1, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))
            self.classifier = nn.Sequential(
                nn.Linear(256 * 6 * 6, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(),
                nn.Linear(4096, num_classes))

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            x = torch.flatten(self.features(x), 1)
            return F.log_softmax(self.classifier(x), dim=1)

    return AlexNet


def original_alexnet(num_classes: int = 1000):
    """A freshly initialised torch module of the "original" layout."""
    return _original_class()(num_classes)


def torch_alexnet(variant: str = "torchvision", num_classes: int = 1000):
    """A freshly initialised torch module of either layout."""
    if variant == "torchvision":
        import torchvision
        return torchvision.models.alexnet(num_classes=num_classes)
    if variant == "original":
        return original_alexnet(num_classes)
    raise ValueError(f"variant must be 'torchvision' or 'original', got {variant!r}")
