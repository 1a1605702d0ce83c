"""LeNet-300-100 and LeNet-5 with sparse variational dropout layers (the paper's models)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from sparsejax.models import _shapes
from sparsejax.variational._layers import VDConv, VDLinear


def _layer_keys(key: jax.Array | None, n: int) -> list[jax.Array | None]:
    return [None] * n if key is None else list(jax.random.split(key, n))


class VDLeNet300100(nnx.Module):
    """LeNet-300-100 with sparse VD layers; paths ``layers/{i}/kernel|bias`` as in ``LeNet300100``.

    With ``structured=True`` the two hidden layers get one ``log α`` per neuron
    (the output layer stays per weight: class units are never removed). Called as
    ``model(x, key=key)`` in training mode (each layer gets its own key from
    ``jax.random.split(key, 3)``) and ``model(x)`` after ``model.eval()``.

    Example:
      >>> model = VDLeNet300100(rngs=nnx.Rngs(0))
      >>> model(jnp.ones((2, 28, 28, 1)), key=jax.random.key(0)).shape
      (2, 10)
    """

    def __init__(
        self, in_features: int = 784, num_classes: int = 10, *, structured: bool = False,
        threshold: float = 3.0, rngs: nnx.Rngs,
    ):
        in_features = _shapes.positive_int("in_features", in_features)
        num_classes = _shapes.positive_int("num_classes", num_classes)
        self.features = (in_features, 300, 100, num_classes)
        last = len(self.features) - 2
        self.layers = nnx.List([
            VDLinear(a, b, structured=structured and i < last, threshold=threshold, rngs=rngs)
            for i, (a, b) in enumerate(zip(self.features[:-1], self.features[1:], strict=True))
        ])

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Logits ``(batch, num_classes)``; any ``(batch, ...)`` input with ``in_features`` entries."""
        x = jnp.asarray(x)
        if x.ndim < 2 or math.prod(x.shape[1:]) != self.features[0]:
            raise ValueError(f"VDLeNet300100 expects (batch, ...) inputs with {self.features[0]} "
                             f"features per example, got shape {tuple(x.shape)}")
        x = _shapes.flatten(x)
        keys = _layer_keys(key, len(self.layers))
        for i, (layer, k) in enumerate(zip(self.layers, keys, strict=True)):
            x = layer(x, key=k)
            if i < len(self.layers) - 1:
                x = jax.nn.relu(x)
        return x


class VDLeNet5(nnx.Module):
    """LeNet-5 (Caffe variant) with sparse VD layers; paths as in :class:`~sparsejax.models.LeNet5`.

    ``conv1`` 20@5x5 → max-pool → ``conv2`` 50@5x5 → max-pool → ``fc1`` 500 →
    ReLU → ``fc2``. ``structured=True``: one ``log α`` per filter of
    ``conv1``/``conv2`` and per neuron of ``fc1`` (``fc2`` stays per weight).
    Training mode: ``model(x, key=key)`` (one key per layer, ``jax.random.split(key, 4)``).
    """

    def __init__(
        self, in_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10, *,
        padding: str = "VALID", structured: bool = False, threshold: float = 3.0,
        rngs: nnx.Rngs,
    ):
        self.in_shape = _shapes.image_shape("in_shape", in_shape)
        num_classes = _shapes.positive_int("num_classes", num_classes)
        if padding not in ("VALID", "SAME"):
            raise ValueError(f"padding must be 'VALID' or 'SAME', got {padding!r}")
        size = self.in_shape[:2]
        size = _shapes.conv_size("VDLeNet5", "conv1", size, (5, 5), padding=padding)
        size = _shapes.pool_size("VDLeNet5", "pool1", size, 2)
        size = _shapes.conv_size("VDLeNet5", "conv2", size, (5, 5), padding=padding)
        size = _shapes.pool_size("VDLeNet5", "pool2", size, 2)
        kw = dict(threshold=threshold, rngs=rngs)
        self.conv1 = VDConv(self.in_shape[2], 20, (5, 5), padding=padding, structured=structured,
                            **kw)
        self.conv2 = VDConv(20, 50, (5, 5), padding=padding, structured=structured, **kw)
        self.fc1 = VDLinear(size[0] * size[1] * 50, 500, structured=structured, **kw)
        self.fc2 = VDLinear(500, num_classes, **kw)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Logits ``(batch, num_classes)`` for ``x`` of shape ``(batch, *in_shape)``."""
        x = _shapes.check_input("VDLeNet5", x, self.in_shape)
        k1, k2, k3, k4 = _layer_keys(key, 4)
        x = nnx.max_pool(self.conv1(x, key=k1), (2, 2), strides=(2, 2))
        x = nnx.max_pool(self.conv2(x, key=k2), (2, 2), strides=(2, 2))
        x = jax.nn.relu(self.fc1(_shapes.flatten(x), key=k3))
        return self.fc2(x, key=k4)
