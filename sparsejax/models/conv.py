"""Conv-2 / Conv-4 / Conv-6: the VGG-like CIFAR-10 networks of the lottery ticket paper."""

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

__all__ = ["Conv2", "Conv4", "Conv6", "ConvNet"]

GLOROT_NORMAL = nnx.initializers.glorot_normal()


class ConvNet(nnx.Module):
    """Conv-``depth`` of Frankle & Carbin (2019): stages of two 3x3 convs and a 2x2 max-pool, then an MLP.

    Stage ``s`` (``s = 0 .. depth/2 - 1``) is conv ``64·2^s`` → ReLU → conv ``64·2^s``
    → ReLU → 2x2 max-pool; then flatten → FC 256 → ReLU → FC 256 → ReLU → FC
    ``num_classes``. Convolutions are 3x3, stride 1, SAME padding, with biases;
    pools are VALID (floor), so a 28x28 MNIST input goes 28 → 14 → 7 → 3.

    Exact parameter counts on 32x32x3 CIFAR-10 with 10 classes (weights + biases):

    ======  ==========  =========================================
    model   parameters  of which FC-1 (``flat·256 + 256``)
    ======  ==========  =========================================
    Conv-2   4,301,642  16·16·64 = 16,384 → 4,194,560
    Conv-4   2,425,930   8·8·128 =  8,192 → 2,097,408
    Conv-6   2,262,602   4·4·256 =  4,096 → 1,048,832
    ======  ==========  =========================================

    Parameter paths: ``convs/{i}/kernel`` ``(3, 3, in, out)`` and ``dense/{j}/kernel``
    ``(in, out)`` (``j = 2`` gives the logits), each with its ``bias``. The forward
    pass is pure (no batch statistics, no dropout).

    Args:
      depth: number of convolutions, a positive even number (2, 4, 6 in the paper).
      in_shape: per-example input shape ``(height, width, channels)``.
      num_classes: number of logits.
      dense_features: widths of the hidden FC layers (paper: ``(256, 256)``).
      kernel_init: kernel initializer (default Glorot normal, as in the paper).
      dtype: computation dtype.
      param_dtype: parameter dtype.
      rngs: ``nnx.Rngs``.

    References:
      Frankle & Carbin (2019), The Lottery Ticket Hypothesis: Finding Sparse,
      Trainable Neural Networks, ICLR (Figure 2; Simonyan & Zisserman 2014 VGG style).
    """

    def __init__(
        self,
        depth: int,
        in_shape: Sequence[int] = (32, 32, 3),
        num_classes: int = 10,
        *,
        dense_features: Sequence[int] = (256, 256),
        kernel_init: Initializer = GLOROT_NORMAL,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        depth = _shapes.positive_int("depth", depth)
        if depth % 2:
            raise ValueError(f"depth must be a positive even number (2, 4, 6), got {depth!r}")
        self.in_shape = _shapes.image_shape("in_shape", in_shape)
        num_classes = _shapes.positive_int("num_classes", num_classes)
        dense_features = _shapes.positive_ints("dense_features", dense_features, min_len=0)
        self.model_name = f"Conv{depth}"
        kw = dict(kernel_init=kernel_init, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

        size = self.in_shape[:2]
        for stage in range(depth // 2):  # check every pool before drawing parameters
            size = _shapes.pool_size(self.model_name, f"pool {stage + 1}", size, 2)
        convs = []
        channels = self.in_shape[2]
        for stage in range(depth // 2):
            width = 64 * 2**stage
            for _ in range(2):
                convs.append(nnx.Conv(channels, width, (3, 3), padding="SAME", **kw))
                channels = width
        self.convs = nnx.List(convs)

        widths = (size[0] * size[1] * channels, *dense_features, num_classes)
        self.dense = nnx.List([nnx.Linear(a, b, **kw) for a, b in itertools.pairwise(widths)])

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits ``(batch, num_classes)`` for ``x`` of shape ``(batch, *in_shape)``."""
        x = _shapes.check_input(self.model_name, x, self.in_shape)
        for i, conv in enumerate(self.convs):
            x = jax.nn.relu(conv(x))
            if i % 2 == 1:
                x = nnx.max_pool(x, (2, 2), strides=(2, 2))
        x = _shapes.flatten(x)
        last = len(self.dense) - 1
        for j, layer in enumerate(self.dense):
            x = layer(x)
            if j < last:
                x = jax.nn.relu(x)
        return x


class Conv2(ConvNet):
    """Conv-2 (Frankle & Carbin 2019): 64, 64, pool, FC 256, 256, 10. See :class:`ConvNet`."""

    def __init__(
        self,
        in_shape: Sequence[int] = (32, 32, 3),
        num_classes: int = 10,
        *,
        rngs: nnx.Rngs,
        **kwargs: Any,
    ):
        super().__init__(2, in_shape, num_classes, rngs=rngs, **kwargs)


class Conv4(ConvNet):
    """Conv-4 (Frankle & Carbin 2019): 64, 64, pool, 128, 128, pool, FC 256, 256, 10."""

    def __init__(
        self,
        in_shape: Sequence[int] = (32, 32, 3),
        num_classes: int = 10,
        *,
        rngs: nnx.Rngs,
        **kwargs: Any,
    ):
        super().__init__(4, in_shape, num_classes, rngs=rngs, **kwargs)


class Conv6(ConvNet):
    """Conv-6 (Frankle & Carbin 2019): 64, 64, pool, 128, 128, pool, 256, 256, pool, FC 256, 256, 10."""

    def __init__(
        self,
        in_shape: Sequence[int] = (32, 32, 3),
        num_classes: int = 10,
        *,
        rngs: nnx.Rngs,
        **kwargs: Any,
    ):
        super().__init__(6, in_shape, num_classes, rngs=rngs, **kwargs)
