"""Build any zoo model by name from a per-example input shape and a class count."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from flax import nnx

from sparsejax.models import _shapes
from sparsejax.models.conv import Conv2, Conv4, Conv6
from sparsejax.models.lenet import LeNet5
from sparsejax.models.mlp import MLP, LeNet300100
from sparsejax.models.mnist1d import MNIST1DCNN
from sparsejax.models.resnet import ResNet20, ResNet56
from sparsejax.models.transformer import TransformerClassifier
from sparsejax.models.vgg import VGG16

__all__ = ["MODEL_NAMES", "create_model"]

Builder = Callable[[tuple[int, ...], int, nnx.Rngs, dict[str, Any]], nnx.Module]


def _mlp(shape: tuple[int, ...], classes: int, rngs: nnx.Rngs, kw: dict[str, Any]) -> nnx.Module:
    hidden = _shapes.positive_ints("hidden", kw.pop("hidden", (500, 500)), min_len=0)
    return MLP((math.prod(shape), *hidden, classes), rngs=rngs, **kw)


def _mnist1d_cnn(
    shape: tuple[int, ...], classes: int, rngs: nnx.Rngs, kw: dict[str, Any]
) -> nnx.Module:
    if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise ValueError(f"mnist1d_cnn takes input_shape (length,) or (length, 1), got {shape!r}")
    return MNIST1DCNN(shape[0], classes, rngs=rngs, **kw)


def _image(cls: type[nnx.Module]) -> Builder:
    return lambda shape, classes, rngs, kw: cls(shape, classes, rngs=rngs, **kw)


_BUILDERS: dict[str, Builder] = {
    "lenet300100": lambda shape, classes, rngs, kw: LeNet300100(
        math.prod(shape), classes, rngs=rngs, **kw
    ),
    "mlp": _mlp,
    "lenet5": _image(LeNet5),
    "conv2": _image(Conv2),
    "conv4": _image(Conv4),
    "conv6": _image(Conv6),
    "mnist1d_cnn": _mnist1d_cnn,
    "resnet20": _image(ResNet20),
    "resnet56": _image(ResNet56),
    "vgg16": _image(VGG16),
    "transformer": lambda shape, classes, rngs, kw: TransformerClassifier(
        shape, classes, rngs=rngs, **kw
    ),
}

MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def create_model(
    name: str,
    *,
    rngs: nnx.Rngs,
    input_shape: Sequence[int],
    num_classes: int,
    **kwargs: Any,
) -> nnx.Module:
    """Build a zoo model by name.

    ============== ==================================================================
    name           model (``input_shape`` is per example, no batch axis)
    ============== ==================================================================
    lenet300100    :class:`LeNet300100`, ``in_features = prod(input_shape)``
    mlp            :class:`MLP` ``(prod(input_shape), *hidden, num_classes)``;
                   ``hidden`` kwarg, default ``(500, 500)`` (the MNIST-1D MLP)
    lenet5         :class:`LeNet5` (``padding="SAME"`` for inputs under 16x16)
    conv2/4/6      :class:`Conv2`, :class:`Conv4`, :class:`Conv6`
    mnist1d_cnn    :class:`MNIST1DCNN`, ``input_shape`` ``(length,)`` or ``(length, 1)``
    resnet20/56    :class:`ResNet20`, :class:`ResNet56` (``shortcut="A"`` or ``"B"``)
    vgg16          :class:`VGG16` (``classifier_features`` for the MLP head)
    transformer    :class:`TransformerClassifier` (``patch_shape``, ``dim``, ...)
    ============== ==================================================================

    Args:
      name: one of :data:`MODEL_NAMES`.
      rngs: ``nnx.Rngs`` for the initial parameters (and dropout streams).
      input_shape: per-example input shape (``(28, 28, 1)``, ``(40,)``, ...).
      num_classes: number of logits.
      **kwargs: passed to the model's constructor.

    Returns:
      The model, an ``nnx.Module`` called as ``model(x) -> (batch, num_classes)``.

    Raises:
      ValueError: unknown ``name`` (the message lists the known names) or bad shapes.
      TypeError: ``name`` not a string, or a keyword the model does not take.

    Example:
      >>> model = create_model("lenet5", rngs=nnx.Rngs(0), input_shape=(28, 28, 1),
      ...                      num_classes=10)
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {name!r}")
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
    shape = _shapes.positive_ints("input_shape", input_shape)
    num_classes = _shapes.positive_int("num_classes", num_classes)
    return _BUILDERS[name](shape, num_classes, rngs, dict(kwargs))
