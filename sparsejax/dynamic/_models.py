"""Gated zoo models: :class:`GatedLeNet5` and :class:`GatedMNIST1DCNN`.

They have the layer shapes and parameter paths of :class:`sparsejax.models.LeNet5` and
:class:`sparsejax.models.MNIST1DCNN` (their ``kernel``/``bias`` leaves sit at the zoo
paths, so a trained dense model's weights load into them, see
:func:`~sparsejax.dynamic.load_dense_params`), plus one gate predictor per gated layer.
Each model carries its :class:`~sparsejax.dynamic.LayerCost` table (``model.costs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.nn.initializers import Initializer

from sparsejax.dynamic._cost import LayerCost
from sparsejax.dynamic._gates import Gate, _check_kind, check_density, num_active
from sparsejax.dynamic._layers import GLOROT_NORMAL, GatedConv, GatedLinear
from sparsejax.models import _shapes

TORCH_DEFAULT = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _layer_keys(key: jax.Array | None, n: int) -> list[jax.Array | None]:
    return [None] * n if key is None else list(jax.random.split(key, n))


class _GatedModel(nnx.Module):
    """Shared API of the gated zoo models (see :class:`GatedLeNet5`).

    Subclasses define ``with_gates(x, density, *, key) -> (logits, {layer: Gate})``,
    ``gathered_one(x, ks) -> logits`` and the ``costs`` table.
    """

    gated_layers: tuple[str, ...] = ()
    costs: tuple[LayerCost, ...]
    gate_kind: str

    def __call__(
        self, x: jax.Array, density: Any = 1.0, *, key: jax.Array | None = None
    ) -> jax.Array:
        """Logits ``(batch, num_classes)`` on the masked path (see :meth:`with_gates`)."""
        return self.with_gates(x, density, key=key)[0]

    def active_k(self, density: float) -> tuple[int, ...]:
        """Static ``k`` of every gated layer at ``density`` (:func:`num_active`)."""
        channels = {c.name: c.out_channels for c in self.costs}
        return tuple(num_active(density, channels[name]) for name in self.gated_layers)


class GatedLeNet5(_GatedModel):
    """LeNet-5 (Caffe variant, :class:`sparsejax.models.LeNet5`) with gated conv1, conv2, fc1.

    Same layers and parameter paths as the zoo model (``conv1/kernel (5, 5, C, 20)``,
    ``conv2/kernel (5, 5, 20, 50)``, ``fc1/kernel (h·w·50, 500)``, ``fc2/kernel (500,
    classes)`` and biases), plus the predictors ``conv1/gate`` (``C → 20``),
    ``conv2/gate`` (``20 → 50``) and ``fc1/gate`` (``50 → 500``, on the per-channel
    mean of the pooled ``conv2`` map). ``fc2`` (the classifier) is not gated. On
    28×28×1 MNIST the dense model costs 2,293,000 MACs per example and the predictors
    26,020.

    Args:
      in_shape: ``(height, width, channels)``.
      num_classes: logits.
      padding: ``"VALID"`` (Caffe) or ``"SAME"``.
      gate: ``"fbs"`` or ``"hard_concrete"``.
      kernel_init: kernel initializer of the four layers.
      rngs: ``nnx.Rngs``.

    References:
      LeCun et al. (1998); Gao et al. (2019), FBS; Louizos et al. (2018), L0.
    """

    gated_layers = ("conv1", "conv2", "fc1")

    def __init__(
        self,
        in_shape: Sequence[int] = (28, 28, 1),
        num_classes: int = 10,
        *,
        padding: str = "VALID",
        gate: str = "fbs",
        kernel_init: Initializer = GLOROT_NORMAL,
        rngs: nnx.Rngs,
    ):
        self.in_shape = _shapes.image_shape("in_shape", in_shape)
        num_classes = _shapes.positive_int("num_classes", num_classes)
        if padding not in ("VALID", "SAME"):
            raise ValueError(f"padding must be 'VALID' or 'SAME', got {padding!r}")
        self.gate_kind = _check_kind(gate)
        s1 = _shapes.conv_size("GatedLeNet5", "conv1", self.in_shape[:2], (5, 5), padding=padding)
        p1 = _shapes.pool_size("GatedLeNet5", "pool1", s1, 2)
        s2 = _shapes.conv_size("GatedLeNet5", "conv2", p1, (5, 5), padding=padding)
        p2 = _shapes.pool_size("GatedLeNet5", "pool2", s2, 2)
        positions = p2[0] * p2[1]
        kw = dict(padding=padding, gate=gate, kernel_init=kernel_init, rngs=rngs)
        c_in = self.in_shape[2]
        self.conv1 = GatedConv(c_in, 20, (5, 5), **kw)
        self.conv2 = GatedConv(20, 50, (5, 5), **kw)
        self.fc1 = GatedLinear(
            positions * 50, 500, in_channels=50, gate=gate, kernel_init=kernel_init, rngs=rngs
        )
        self.fc2 = nnx.Linear(500, num_classes, kernel_init=kernel_init, rngs=rngs)
        self.costs = (
            LayerCost("conv1", s1[0] * s1[1] * 25, None, c_in, 20, True),
            LayerCost("conv2", s2[0] * s2[1] * 25, "conv1", 20, 50, True),
            LayerCost("fc1", positions, "conv2", 50, 500, True),
            LayerCost("fc2", 1, "fc1", 500, num_classes, False),
        )

    def with_gates(
        self, x: jax.Array, density: Any = 1.0, *, key: jax.Array | None = None
    ) -> tuple[jax.Array, dict[str, Gate]]:
        """Logits ``(batch, classes)`` and ``{layer: Gate}`` on the masked path.

        Args:
          x: ``(batch, *in_shape)`` (a missing trailing channel axis of 1 is added).
          density: fraction of channels kept in every gated layer: scalar or ``(batch,)``,
            Python or traced.
          key: PRNG key for stochastic hard-concrete gates (training) or None.
        """
        x = _shapes.check_input("GatedLeNet5", x, self.in_shape)
        density = check_density(density)
        k1, k2, k3 = _layer_keys(key, 3)
        x, g1 = self.conv1(x, density, key=k1)
        x = nnx.max_pool(x, (2, 2), strides=(2, 2))
        x, g2 = self.conv2(x, density, key=k2)
        x = nnx.max_pool(x, (2, 2), strides=(2, 2))
        x, g3 = self.fc1(_shapes.flatten(x), density, key=k3)
        logits = self.fc2(jax.nn.relu(x))
        return logits, {"conv1": g1, "conv2": g2, "fc1": g3}

    def gathered_one(self, x: jax.Array, ks: tuple[int, ...]) -> jax.Array:
        """Logits ``(classes,)`` of ONE example ``x (*in_shape)`` computing only active channels."""
        k1, k2, k3 = ks
        x = x.reshape(1, *self.in_shape)
        x, i1 = self.conv1.gathered(x, None, k1)
        x = nnx.max_pool(x, (2, 2), strides=(2, 2))
        x, i2 = self.conv2.gathered(x, i1, k2)
        x = nnx.max_pool(x, (2, 2), strides=(2, 2))
        x, i3 = self.fc1.gathered(x, i2, k3)
        w = jnp.take(self.fc2.kernel[...], i3, axis=0)
        return (jax.nn.relu(x) @ w)[0] + self.fc2.bias[...]


class GatedMNIST1DCNN(_GatedModel):
    """The MNIST-1D CNN (:class:`sparsejax.models.MNIST1DCNN`) with gated conv1, conv2, conv3.

    Same layers and paths as the zoo model (``conv1/kernel (5, 1, C)``, ``conv2``/``conv3``
    ``(3, C, C)``, ``linear/kernel (C·L3, classes)``, channel-major flatten) plus the
    predictors ``conv*/gate``; the classifier ``linear`` is not gated. With the defaults
    (length 40, 25 channels) the dense model costs 31,750 MACs per example and the
    predictors 1,275.

    Args:
      in_length: sequence length.
      num_classes: logits.
      channels: channels of every convolution.
      gate: ``"fbs"`` or ``"hard_concrete"``.
      kernel_init: kernel initializer (PyTorch default, as the zoo model).
      rngs: ``nnx.Rngs``.

    References:
      Greydanus & Kobak (2024), MNIST-1D; Gao et al. (2019), FBS; Louizos et al. (2018).
    """

    gated_layers = ("conv1", "conv2", "conv3")

    def __init__(
        self,
        in_length: int = 40,
        num_classes: int = 10,
        *,
        channels: int = 25,
        gate: str = "fbs",
        kernel_init: Initializer = TORCH_DEFAULT,
        rngs: nnx.Rngs,
    ):
        self.in_length = _shapes.positive_int("in_length", in_length)
        num_classes = _shapes.positive_int("num_classes", num_classes)
        c = _shapes.positive_int("channels", channels)
        self.gate_kind = _check_kind(gate)
        pad = ((1, 1),)
        name = "GatedMNIST1DCNN"
        l1 = _shapes.conv_size(name, "conv1", (self.in_length,), (5,), stride=2, padding=pad)
        l2 = _shapes.conv_size(name, "conv2", l1, (3,), stride=2, padding=pad)
        l3 = _shapes.conv_size(name, "conv3", l2, (3,), stride=2, padding=pad)
        kw = dict(strides=2, padding=pad, gate=gate, kernel_init=kernel_init, rngs=rngs)
        self.conv1 = GatedConv(1, c, (5,), **kw)
        self.conv2 = GatedConv(c, c, (3,), **kw)
        self.conv3 = GatedConv(c, c, (3,), **kw)
        self.linear = nnx.Linear(c * l3[0], num_classes, kernel_init=kernel_init, rngs=rngs)
        self.costs = (
            LayerCost("conv1", l1[0] * 5, None, 1, c, True),
            LayerCost("conv2", l2[0] * 3, "conv1", c, c, True),
            LayerCost("conv3", l3[0] * 3, "conv2", c, c, True),
            LayerCost("linear", l3[0], "conv3", c, num_classes, False),
        )

    def with_gates(
        self, x: jax.Array, density: Any = 1.0, *, key: jax.Array | None = None
    ) -> tuple[jax.Array, dict[str, Gate]]:
        """Logits and ``{layer: Gate}``; ``x (batch, L)`` or ``(batch, L, 1)``.

        Arguments as in :meth:`GatedLeNet5.with_gates`.
        """
        x = _shapes.check_input("GatedMNIST1DCNN", x, (self.in_length, 1))
        density = check_density(density)
        gates = {}
        for name, k in zip(self.gated_layers, _layer_keys(key, 3), strict=True):
            x, gates[name] = getattr(self, name)(x, density, key=k)
            x = jax.nn.relu(x)
        logits = self.linear(_shapes.flatten(jnp.swapaxes(x, 1, 2)))
        return logits, gates

    def gathered_one(self, x: jax.Array, ks: tuple[int, ...]) -> jax.Array:
        """Logits ``(classes,)`` of ONE example ``x (L,)`` or ``(L, 1)``, active channels only."""
        x = x.reshape(1, self.in_length, 1)
        idx = None
        for name, k in zip(self.gated_layers, ks, strict=True):
            x, idx = getattr(self, name).gathered(x, idx, k)
            x = jax.nn.relu(x)
        length = x.shape[1]
        w = self.linear.kernel[...]
        w = jnp.take(w.reshape(-1, length, w.shape[-1]), idx, axis=0)  # (k, L3, classes)
        return jnp.einsum("lc,clo->o", x[0], w) + self.linear.bias[...]

