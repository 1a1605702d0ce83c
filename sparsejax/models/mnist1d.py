"""The MNIST-1D convolutional baseline (``ConvBase`` of the mnist1d repository), in NNX."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.nn.initializers import Initializer
from jax.typing import DTypeLike

from sparsejax.models import _shapes

__all__ = ["MNIST1DCNN"]

# PyTorch's default Conv1d / Linear kernel init, kaiming_uniform(a=sqrt(5)) = U(±1/sqrt(fan_in)).
TORCH_DEFAULT = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


class MNIST1DCNN(nnx.Module):
    """Three stride-2 1-D convolutions with ReLU and a linear classifier (Greydanus & Kobak).

    Layer for layer the ``ConvBase`` model of the mnist1d repository
    (``notebooks/models.py``)::

      conv1  Conv1d(1 → 25, kernel 5, stride 2, padding 1)  → ReLU   40 → 19
      conv2  Conv1d(25 → 25, kernel 3, stride 2, padding 1) → ReLU   19 → 10
      conv3  Conv1d(25 → 25, kernel 3, stride 2, padding 1) → ReLU   10 → 5
      linear 25·5 = 125 → 10

    (only the first convolution has kernel 5; the other two have kernel 3, as in
    the reference). Parameters with the defaults:
    ``(5·1·25 + 25) + 2·(3·25·25 + 25) + (125·10 + 10) = 150 + 2·1,900 + 1,260 = 5,210``,
    the count the reference prints.

    Input: ``(batch, length)`` sequences (a channel axis is added) or
    ``(batch, length, 1)``. The flatten before ``linear`` is channel-major,
    ``(batch, length, channels) -> (batch, channels·length)``, like PyTorch's
    ``view`` of an NCL tensor, so weights port from the reference by transposing
    each kernel only. Output lengths use ``floor((L + 2 - k) / 2) + 1``.

    Parameter paths: ``conv1/kernel`` ``(5, 1, C)``, ``conv2/kernel`` and
    ``conv3/kernel`` ``(3, C, C)``, ``linear/kernel`` ``(C·L3, num_classes)`` with
    their ``bias``. Pure forward pass.

    Args:
      in_length: sequence length (40 for the default MNIST-1D).
      num_classes: number of logits.
      channels: channels of every convolution (25 in the reference).
      kernel_init: kernel initializer (default: PyTorch's default,
        ``U(±1/sqrt(fan_in))``); biases start at zero.
      dtype: computation dtype.
      param_dtype: parameter dtype.
      rngs: ``nnx.Rngs``.

    References:
      Greydanus & Kobak (2024), Scaling Down Deep Learning with MNIST-1D, ICML;
      https://github.com/greydanus/mnist1d (``ConvBase``).
    """

    def __init__(
        self,
        in_length: int = 40,
        num_classes: int = 10,
        *,
        channels: int = 25,
        kernel_init: Initializer = TORCH_DEFAULT,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.in_length = _shapes.positive_int("in_length", in_length)
        num_classes = _shapes.positive_int("num_classes", num_classes)
        channels = _shapes.positive_int("channels", channels)
        kw = dict(kernel_init=kernel_init, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        pad = ((1, 1),)
        size = (self.in_length,)
        size = _shapes.conv_size("MNIST1DCNN", "conv1", size, (5,), stride=2, padding=pad)
        size = _shapes.conv_size("MNIST1DCNN", "conv2", size, (3,), stride=2, padding=pad)
        size = _shapes.conv_size("MNIST1DCNN", "conv3", size, (3,), stride=2, padding=pad)
        self.conv1 = nnx.Conv(1, channels, (5,), strides=(2,), padding=pad, **kw)
        self.conv2 = nnx.Conv(channels, channels, (3,), strides=(2,), padding=pad, **kw)
        self.conv3 = nnx.Conv(channels, channels, (3,), strides=(2,), padding=pad, **kw)
        self.linear = nnx.Linear(channels * size[0], num_classes, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits ``(batch, num_classes)`` for ``x`` of shape ``(batch, L)`` or ``(batch, L, 1)``."""
        x = _shapes.check_input("MNIST1DCNN", x, (self.in_length, 1))
        x = jax.nn.relu(self.conv1(x))
        x = jax.nn.relu(self.conv2(x))
        x = jax.nn.relu(self.conv3(x))
        x = _shapes.flatten(jnp.swapaxes(x, 1, 2))
        return self.linear(x)
