"""Classic baselines: a multi-layer perceptron and LeNet-5.

Both are small enough to train on a laptop CPU in minutes and serve as the
"how much do convolutions buy us" reference points of the zoo.

* ``mlp``    - flatten -> 512 -> 256 -> head. It has no spatial layer, so
  Grad-CAM is not meaningful for it (see :class:`MLP`).
* ``lenet5`` - LeCun et al. (1998), with ReLU and max-pooling instead of the
  original tanh and subsampling, and an adaptive pool so inputs other than
  32x32 still reach the fully connected part with the expected 16x5x5.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from trainer.models.registry import ZooModel, register_model

__all__ = ["MLP", "LeNet5"]


def _dense_block(in_features: int, out_features: int, dropout: float) -> nn.Sequential:
    """``(N, in_features) -> (N, out_features)``: Linear-BN-ReLU-Dropout."""
    return nn.Sequential(OrderedDict(
        # BatchNorm follows, so a bias would be redundant.
        fc=nn.Linear(in_features, out_features, bias=False),
        bn=nn.BatchNorm1d(out_features),
        act=nn.ReLU(inplace=False),
        drop=nn.Dropout(dropout),
    ))


@register_model("mlp", description="Multi-layer perceptron 512-256 on flattened pixels (no convolutions)")
class MLP(ZooModel):
    """Two hidden fully connected layers on the flattened image.

    Shapes for ``in_channels=C`` and ``input_size=S``::

        x                (N, C, S, S)
        flatten          (N, C*S*S)
        hidden.block1    (N, 512)
        hidden.block2    (N, 256)   = embed(x)
        head             (N, num_classes)

    The first layer's size depends on the image size, so ``input_size`` must
    match the data (the dashboard stores it with the run).

    There is no convolution, hence no spatial map for Grad-CAM:
    ``gradcam_layer`` names the first hidden block only because every model
    must name an existing layer; its "heat map" has no spatial meaning. Use a
    gradient/perturbation attribution (saliency, integrated gradients,
    occlusion) for this model instead.
    """

    gradcam_layer = "hidden.block1"
    inspect_layers = ("hidden.block1", "hidden.block2", "head")

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        if input_size < 1:
            raise ValueError(f"input_size must be positive, got {input_size}")
        self.input_size = input_size
        self.flatten = nn.Flatten()
        self.hidden = nn.Sequential(OrderedDict(
            block1=_dense_block(in_channels * input_size * input_size, 512, dropout),
            block2=_dense_block(512, 256, dropout),
        ))
        self.head = nn.Linear(256, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, S, S) -> (N, 256)``."""
        flat = self.flatten(x)
        expected = self.hidden.block1.fc.in_features
        if flat.shape[1] != expected:
            # The Linear error alone ("mat1 and mat2 shapes cannot be multiplied")
            # does not tell the user which setting is wrong.
            raise ValueError(
                f"mlp was built for {expected} inputs (input_size={self.input_size}) "
                f"but got images of shape {tuple(x.shape[1:])}"
            )
        return self.hidden(flat)


@register_model("lenet5", description="LeNet-5 (LeCun 1998) with ReLU and max-pooling")
class LeNet5(ZooModel):
    """LeNet-5 on 32x32 images (any size >= 16 works through adaptive pooling).

    Shapes for a ``(N, C, 32, 32)`` input::

        features.block1  (N, 6, 14, 14)    conv5 -> ReLU -> maxpool2
        features.block2  (N, 16, 5, 5)     conv5 -> ReLU -> maxpool2
        pool             (N, 16, 5, 5)     identity at 32x32
        classifier.fc1   (N, 120)
        classifier.fc2   (N, 84)           = embed(x)
        head             (N, num_classes)
    """

    gradcam_layer = "features.block2"
    inspect_layers = ("features.block1", "features.block2", "classifier.fc1", "classifier.fc2")

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(OrderedDict(
            block1=nn.Sequential(OrderedDict(
                conv=nn.Conv2d(in_channels, 6, kernel_size=5),
                act=nn.ReLU(inplace=False),
                pool=nn.MaxPool2d(2),
            )),
            block2=nn.Sequential(OrderedDict(
                conv=nn.Conv2d(6, 16, kernel_size=5),
                act=nn.ReLU(inplace=False),
                pool=nn.MaxPool2d(2),
            )),
        ))
        # Fixes the flattened size at 16*5*5 = 400, so MNIST-sized 28x28 or
        # larger inputs reuse the same fully connected layers.
        self.pool = nn.AdaptiveAvgPool2d((5, 5))
        self.classifier = nn.Sequential(OrderedDict(
            flatten=nn.Flatten(),
            fc1=nn.Sequential(OrderedDict(fc=nn.Linear(16 * 5 * 5, 120), act=nn.ReLU(inplace=False))),
            fc2=nn.Sequential(OrderedDict(fc=nn.Linear(120, 84), act=nn.ReLU(inplace=False))),
        ))
        self.head = nn.Linear(84, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W) -> (N, 84)``."""
        return self.classifier(self.pool(self.features(x)))
