"""VGG with BatchNorm for CIFAR (32x32) inputs; VGG-16 configuration D.

Train / eval mode: BatchNorm (and, with a hidden classifier, Dropout) start in
training mode; ``model.eval()`` switches to running averages and no dropout,
``model.train()`` back. Running averages are ``nnx.BatchStat``, outside
``nnx.Param``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.nn.initializers import Initializer
from jax.typing import DTypeLike

from sparsejax.models import _shapes

__all__ = ["VGG", "VGG16", "VGG16_CONFIG"]

HE_NORMAL = nnx.initializers.he_normal()
GLOROT_NORMAL = nnx.initializers.glorot_normal()

# Simonyan & Zisserman (2015), Table 1, configuration D: conv widths, "M" = 2x2 max-pool.
VGG16_CONFIG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip


class VGG(nnx.Module):
    """VGG feature extractor (3x3 conv → BN → ReLU, 2x2 max-pools) plus an MLP classifier.

    Convolutions are 3x3, stride 1, padding 1, without bias (BatchNorm follows).
    After the last pool the map is flattened (1x1x512 = 512 features on 32x32
    inputs) and fed to the classifier: ``Linear`` → ReLU → ``Dropout`` for each
    entry of ``classifier_features``, then ``Linear`` to ``num_classes``.

    * ``classifier_features=()`` (default): a single 512 → 10 layer, the common
      CIFAR variant (e.g. Liu et al. 2017 network slimming, the pytorch-cifar
      models);
    * ``classifier_features=(512, 512)``: 512 → 512 → 512 → 10 (the
      pytorch-vgg-cifar10 variant), usually with ``dropout_rate=0.5``.

    VGG-16 parameter counts on 32x32x3, 10 classes: convolution kernels
    14,710,464, BatchNorm scale + bias 8,448 (2 × 4,224 channels), classifier
    512·10 + 10 = 5,130: total **14,724,042**; with ``classifier_features=(512, 512)``
    the classifier has 2·(512·512 + 512) + 5,130 = 530,442 and the total is
    15,249,354.

    Parameter paths: ``convs/{i}/kernel`` ``(3, 3, in, out)``, ``norms/{i}/scale``,
    ``norms/{i}/bias``, ``classifier/{j}/kernel`` ``(in, out)`` and ``bias``.

    Args:
      config: conv widths and ``"M"`` pools (default :data:`VGG16_CONFIG`).
      in_shape: per-example input shape ``(height, width, channels)``; each pool
        halves the sides (floor), so VGG-16 needs sides >= 32.
      num_classes: number of logits.
      classifier_features: hidden widths of the classifier.
      dropout_rate: dropout after each hidden classifier layer.
      kernel_init: conv kernel initializer (default He normal).
      classifier_init: classifier kernel initializer (default Glorot normal).
      bn_momentum: BatchNorm running-average decay (0.9 = PyTorch's 0.1).
      bn_epsilon: BatchNorm epsilon.
      dtype: computation dtype.
      param_dtype: parameter dtype.
      rngs: ``nnx.Rngs`` (a ``dropout`` stream, or ``default``, feeds Dropout).

    References:
      Simonyan & Zisserman (2015), Very Deep Convolutional Networks for
      Large-Scale Image Recognition, ICLR (configuration D); Ioffe & Szegedy (2015),
      Batch Normalization; Li et al. (2017), Pruning Filters for Efficient
      ConvNets (VGG-16 on CIFAR-10).
    """

    def __init__(
        self,
        config: Sequence[int | str] = VGG16_CONFIG,
        in_shape: Sequence[int] = (32, 32, 3),
        num_classes: int = 10,
        *,
        classifier_features: Sequence[int] = (),
        dropout_rate: float = 0.0,
        kernel_init: Initializer = HE_NORMAL,
        classifier_init: Initializer = GLOROT_NORMAL,
        bn_momentum: float = 0.9,
        bn_epsilon: float = 1e-5,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.in_shape = _shapes.image_shape("in_shape", in_shape)
        num_classes = _shapes.positive_int("num_classes", num_classes)
        classifier_features = _shapes.positive_ints(
            "classifier_features", classifier_features, min_len=0
        )
        self.dropout_rate = _shapes.rate("dropout_rate", dropout_rate)
        # Validate the whole configuration (and the feature-map sizes) before drawing parameters.
        widths_in, pool_after = [], []
        channels, size = self.in_shape[2], self.in_shape[:2]
        for i, item in enumerate(config):
            if isinstance(item, str) and item == "M":
                if not widths_in:
                    raise ValueError(
                        f"config[{i}]: a pool must follow a convolution, got {config!r}"
                    )
                size = _shapes.pool_size("VGG", f"pool after convs/{len(widths_in) - 1}", size, 2)
                pool_after.append(len(widths_in) - 1)
                continue
            out = _shapes.positive_int(f"config[{i}]", item)
            widths_in.append((channels, out))
            channels = out
        if not widths_in:
            raise ValueError(f"config must contain at least one convolution, got {config!r}")
        common = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.convs = nnx.List(
            [
                nnx.Conv(
                    c_in,
                    c_out,
                    (3, 3),
                    padding=((1, 1), (1, 1)),
                    use_bias=False,
                    kernel_init=kernel_init,
                    **common,
                )
                for c_in, c_out in widths_in
            ]
        )
        self.norms = nnx.List(
            [
                nnx.BatchNorm(c_out, momentum=bn_momentum, epsilon=bn_epsilon, **common)
                for _, c_out in widths_in
            ]
        )
        self.pool_after = frozenset(pool_after)
        widths = (size[0] * size[1] * channels, *classifier_features, num_classes)
        self.classifier = nnx.List(
            [
                nnx.Linear(a, b, kernel_init=classifier_init, **common)
                for a, b in itertools.pairwise(widths)
            ]
        )
        self.dropout = nnx.Dropout(self.dropout_rate, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits ``(batch, num_classes)`` for ``x`` of shape ``(batch, *in_shape)``."""
        x = _shapes.check_input("VGG", x, self.in_shape)
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            x = jax.nn.relu(norm(conv(x)))
            if i in self.pool_after:
                x = nnx.max_pool(x, (2, 2), strides=(2, 2))
        x = _shapes.flatten(x)
        last = len(self.classifier) - 1
        for j, layer in enumerate(self.classifier):
            x = layer(x)
            if j < last:
                x = self.dropout(jax.nn.relu(x))
        return x


class VGG16(VGG):
    """VGG-16 with BatchNorm for CIFAR: 14,724,042 parameters with the default 512 → 10 head.

    See :class:`VGG` for the classifier variants and the train / eval mode.
    """

    def __init__(
        self,
        in_shape: Sequence[int] = (32, 32, 3),
        num_classes: int = 10,
        *,
        rngs: nnx.Rngs,
        **kwargs: Any,
    ):
        super().__init__(VGG16_CONFIG, in_shape, num_classes, rngs=rngs, **kwargs)
