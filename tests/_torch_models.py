"""Reference PyTorch models for the parity tests: torchvision's AlexNet and the
single-tower 2012 layout of DESIGN.md, re-initialised so logits have a spread."""
from __future__ import annotations

import torch
import torch.nn as nn

from alexnet_c.reference import torch_alexnet


def make_model(variant: str, num_classes: int, seed: int = 0) -> nn.Module:
    """A seeded float32 model in eval mode with kaiming-normal weights and small random biases."""
    torch.manual_seed(seed)
    model = torch_alexnet(variant, num_classes)
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
