"""Shape bookkeeping shared by the model zoo: argument checks and feature-map sizes.

Every model takes its per-example input shape (no batch axis; NHWC images are
``(height, width, channels)``) when it is built, because the width of its first
dense layer depends on it. These helpers validate such shapes, follow the
spatial size through convolutions and pools, and check the array a model is
called with, so that a wrong input fails with a message naming the model and
the shapes instead of a matmul error deep inside XLA.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

Padding = str | Sequence[tuple[int, int]]


def positive_int(name: str, value: Any) -> int:
    """``value`` as a Python ``int`` if it is an integer >= 1, else a clear error."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    try:
        out = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be a positive integer, got {value!r}") from None
    if out < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return out


def positive_ints(name: str, values: Any, *, min_len: int = 1) -> tuple[int, ...]:
    """A tuple of positive ints (e.g. a shape or a list of layer widths) of length >= ``min_len``."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a sequence of positive integers, got {values!r}")
    out = tuple(positive_int(f"{name}[{i}]", v) for i, v in enumerate(values))
    if len(out) < min_len:
        raise ValueError(f"{name} must have at least {min_len} entries, got {values!r}")
    return out


def image_shape(name: str, in_shape: Any) -> tuple[int, int, int]:
    """Validate an NHWC per-example shape ``(height, width, channels)``."""
    shape = positive_ints(name, in_shape)
    if len(shape) != 3:
        raise ValueError(
            f"{name} must be (height, width, channels) for NHWC images, got {in_shape!r}"
        )
    return shape  # type: ignore[return-value]


def rate(name: str, value: Any) -> float:
    """A dropout rate in ``[0, 1)``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float in [0, 1), got {value!r}")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return float(value)


def conv_size(
    model: str,
    layer: str,
    size: tuple[int, ...],
    kernel: tuple[int, ...],
    *,
    stride: int = 1,
    padding: Padding = "SAME",
    hint: str = "",
) -> tuple[int, ...]:
    """Spatial size after a convolution (``lax.conv_general_dilated`` arithmetic).

    Args:
      model: model name for the error message.
      layer: layer name for the error message.
      size: spatial input size, one entry per spatial axis.
      kernel: kernel size, same length as ``size``.
      stride: stride on every spatial axis.
      padding: ``"SAME"`` (output ``ceil(size / stride)``), ``"VALID"`` or explicit
        ``((lo, hi), ...)`` pairs (output ``(size + lo + hi - k) // stride + 1``).
      hint: appended to the error message (e.g. how to fix it).

    Raises:
      ValueError: if the kernel does not fit in the (padded) input.
    """
    if padding == "SAME":
        return tuple(-(-s // stride) for s in size)
    pads = [(0, 0)] * len(size) if padding == "VALID" else list(padding)
    out = []
    for s, k, (lo, hi) in zip(size, kernel, pads, strict=True):
        if s + lo + hi < k:
            raise ValueError(
                f"{model}: the input is too small: the feature map entering {layer} has spatial "
                f"size {size}, smaller than its {kernel} kernel (padding {padding!r}).{hint}"
            )
        out.append((s + lo + hi - k) // stride + 1)
    return tuple(out)


def pool_size(
    model: str, layer: str, size: tuple[int, ...], window: int, *, hint: str = ""
) -> tuple[int, ...]:
    """Spatial size after a ``window``-wide, ``window``-strided VALID pool (floor division).

    Raises:
      ValueError: if a spatial axis is smaller than the window.
    """
    if any(s < window for s in size):
        raise ValueError(
            f"{model}: the input is too small: the feature map entering {layer} has spatial size "
            f"{size}, smaller than the {window}x{window} pooling window.{hint}"
        )
    return tuple(s // window for s in size)


def check_input(model: str, x: jax.Array, in_shape: tuple[int, ...]) -> jax.Array:
    """Check that ``x`` is a batch of ``in_shape`` examples; return it (maybe reshaped).

    A batch missing a trailing channel axis of size 1 (grayscale ``(batch, 28, 28)``
    for ``in_shape == (28, 28, 1)``) gets that axis added; nothing else is reshaped.

    Raises:
      ValueError: naming the model, the expected and the received shapes.
    """
    x = jnp.asarray(x)
    if x.ndim == len(in_shape) and in_shape[-1] == 1 and tuple(x.shape[1:]) == in_shape[:-1]:
        x = x[..., None]
    if x.ndim != len(in_shape) + 1 or tuple(x.shape[1:]) != tuple(in_shape):
        raise ValueError(
            f"{model} expects inputs of shape (batch, {', '.join(map(str, in_shape))}), "
            f"got {tuple(x.shape)}"
        )
    return x


def flatten(x: jax.Array) -> jax.Array:
    """``(batch, ...) -> (batch, prod(...))`` in row-major (NHWC: h, w, c) order."""
    return x.reshape(x.shape[0], math.prod(x.shape[1:]))
