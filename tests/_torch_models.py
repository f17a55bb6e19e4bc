"""Reference PyTorch models for the parity tests: torchvision's AlexNet and the
single-tower 2012 layout of DESIGN.md, re-initialised so logits have a spread."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


class OriginalAlexNet(nn.Module):
    """The "original" variant exactly as DESIGN.md writes it."""

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(x, 1)
        x = self.classifier(x)
        return F.log_softmax(x, dim=1)


def make_model(variant: str, num_classes: int, seed: int = 0) -> nn.Module:
    """A seeded float32 model in eval mode with kaiming-normal weights and small random biases."""
    torch.manual_seed(seed)
    if variant == "torchvision":
        model = torchvision.models.alexnet(num_classes=num_classes)
    else:
        model = OriginalAlexNet(num_classes)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.uniform_(m.bias, -0.1, 0.1)
    return model.eval()


def max_rel_err(ours, ref) -> float:
    """DESIGN.md's measure: max|ours - ref| / max|ref|."""
    ref = torch.as_tensor(ref, dtype=torch.float64)
    ours = torch.as_tensor(ours, dtype=torch.float64)
    scale = ref.abs().max().item()
    return (ours - ref).abs().max().item() / (scale if scale > 0 else 1.0)


TOL = 1e-4
