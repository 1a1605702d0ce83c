"""Fully connected classifiers: a generic MLP, LeNet-300-100 and the MNIST-1D MLP.

Parameter paths (as :func:`sparsejax.tree.path_str` names them) are
``layers/{i}/kernel`` with shape ``(in, out)`` and ``layers/{i}/bias`` with
shape ``(out,)``; the last layer produces the logits.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.nn.initializers import Initializer
from jax.typing import DTypeLike

from sparsejax.models import _shapes

__all__ = ["MLP", "LeNet300100", "mnist1d_mlp"]

GLOROT_NORMAL = nnx.initializers.glorot_normal()
ZEROS = nnx.initializers.zeros_init()


class MLP(nnx.Module):
    """Multi-layer perceptron ``features[0] -> ... -> features[-1]`` with an activation between layers.

    The input is flattened (``(batch, *anything) -> (batch, prod(anything))``), so a
    ``(batch, 28, 28, 1)`` MNIST batch and a ``(batch, 784)`` one give the same
    logits. No activation follows the last layer. The forward pass is a pure
    function of the parameters (no batch statistics, no dropout).

    Args:
      features: layer widths including the input and the output,
        ``(in_features, *hidden, num_classes)``; at least two entries.
      activation: elementwise non-linearity between layers (default ReLU).
      kernel_init: kernel initializer (default Glorot normal, as Frankle & Carbin 2019).
      bias_init: bias initializer (default zeros).
      dtype: computation dtype (``None``: inferred from inputs and params).
      param_dtype: parameter dtype.
      rngs: ``nnx.Rngs`` with a ``params`` (or ``default``) stream.

    Example:
      >>> model = MLP((40, 500, 500, 10), rngs=nnx.Rngs(0))
      >>> model(jnp.zeros((2, 40))).shape
      (2, 10)
    """

    def __init__(
        self,
        features: Sequence[int],
        *,
        activation: Callable[[jax.Array], jax.Array] = jax.nn.relu,
        kernel_init: Initializer = GLOROT_NORMAL,
        bias_init: Initializer = ZEROS,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.features = _shapes.positive_ints("features", features, min_len=2)
        self.activation = activation
        self.layers = nnx.List(
            [
                nnx.Linear(
                    d_in,
                    d_out,
                    kernel_init=kernel_init,
                    bias_init=bias_init,
                    dtype=dtype,
                    param_dtype=param_dtype,
                    rngs=rngs,
                )
                for d_in, d_out in itertools.pairwise(self.features)
            ]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits ``(batch, features[-1])`` for ``x`` of shape ``(batch, ...)`` with ``features[0]`` entries per example."""
        x = jnp.asarray(x)
        if x.ndim < 2 or math.prod(x.shape[1:]) != self.features[0]:
            raise ValueError(
                f"{type(self).__name__} expects inputs (batch, ...) with {self.features[0]} "
                f"features per example, got shape {tuple(x.shape)}"
            )
        x = _shapes.flatten(x)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = self.activation(x)
        return x


class LeNet300100(MLP):
    """LeNet-300-100: the ``in_features-300-100-num_classes`` ReLU MLP of LeCun et al. (1998).

    The fully connected baseline of the pruning literature (Han et al. 2015;
    Frankle & Carbin 2019). On 28x28 MNIST it has
    ``784·300 + 300 + 300·100 + 100 + 100·10 + 10 = 266,610`` parameters.

    Args:
      in_features: number of input features (any input shape is flattened).
      num_classes: number of logits.
      rngs: ``nnx.Rngs``.
      **kwargs: ``activation``, ``kernel_init``, ``bias_init``, ``dtype``,
        ``param_dtype`` as for :class:`MLP`.

    References:
      LeCun, Bottou, Bengio & Haffner (1998), Gradient-based learning applied to
      document recognition. Frankle & Carbin (2019), The Lottery Ticket Hypothesis
      (Figure 2: Lenet, 300-100-10, Gaussian Glorot initialisation).
    """

    def __init__(
        self, in_features: int = 784, num_classes: int = 10, *, rngs: nnx.Rngs, **kwargs: Any
    ):
        in_features = _shapes.positive_int("in_features", in_features)
        num_classes = _shapes.positive_int("num_classes", num_classes)
        super().__init__((in_features, 300, 100, num_classes), rngs=rngs, **kwargs)


def mnist1d_mlp(
    *,
    rngs: nnx.Rngs,
    in_features: int = 40,
    hidden: Sequence[int] = (500, 500),
    num_classes: int = 10,
    **kwargs: Any,
) -> MLP:
    """The MNIST-1D MLP ``40-500-500-10`` (ReLU): 276,010 parameters.

    ``40·500 + 500 + 500·500 + 500 + 500·10 + 10 = 276,010``. (The ``MLPBase`` of
    the mnist1d repository's notebooks is a different, smaller model: 100 hidden
    units with a residual connection around the second layer.)

    Args:
      rngs: ``nnx.Rngs``.
      in_features: sequence length of the examples (40 for the default MNIST-1D).
      hidden: hidden widths.
      num_classes: number of logits.
      **kwargs: as for :class:`MLP`.

    Returns:
      An :class:`MLP` with ``features == (in_features, *hidden, num_classes)``.

    References:
      Greydanus & Kobak (2024), Scaling Down Deep Learning with MNIST-1D, ICML.
    """
    hidden = _shapes.positive_ints("hidden", hidden, min_len=0)
    return MLP((in_features, *hidden, num_classes), rngs=rngs, **kwargs)
