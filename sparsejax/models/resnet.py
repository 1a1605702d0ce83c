"""CIFAR ResNets (He et al. 2016, Section 4.2): ResNet-20, ResNet-56 and any depth 6n+2.

Train / eval mode: the BatchNorm layers start in training mode (batch statistics,
running averages updated in place on every call, Flax's default). Call
``model.eval()`` to use the running averages and ``model.train()`` to go back;
after ``nnx.split`` the mode is part of the ``GraphDef``. The running averages
are ``nnx.BatchStat`` variables, so ``nnx.split(model, nnx.Param, ...)`` puts them
in the rest, never in the parameters that masks mirror.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.nn.initializers import Initializer
from jax.typing import DTypeLike

from sparsejax.models import _shapes

__all__ = ["BasicBlock", "CifarResNet", "ResNet20", "ResNet56"]

HE_NORMAL = nnx.initializers.he_normal()
PAD1 = ((1, 1), (1, 1))  # PyTorch's padding=1: same alignment as the strided identity.
SHORTCUTS = ("A", "B")


class BasicBlock(nnx.Module):
    """Two 3x3 conv-BN layers with a residual connection (He et al. 2016, Fig. 2).

    ``y = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``. Convolutions have
    no bias (BatchNorm follows) and explicit padding 1 on each side, as in the
    PyTorch reference implementations, so a stride-2 convolution samples the
    same pixels (0, 2, 4, ...) as the strided shortcut.

    Shortcut when the shape changes (``stride != 1`` or ``in != out``):

    * option ``"A"`` (the paper's CIFAR choice, parameter-free): identity on
      ``x[:, ::stride, ::stride, :]`` with the new ``out - in`` channels
      zero-padded at the end;
    * option ``"B"``: 1x1 convolution with stride ``stride`` and BatchNorm
      (``shortcut_conv``, ``shortcut_bn``; ``in·out + 2·out`` parameters).

    Otherwise the shortcut is the identity.

    Args:
      in_channels: input channels.
      out_channels: output channels (>= ``in_channels`` for option A).
      stride: stride of ``conv1`` and of the shortcut.
      shortcut: ``"A"`` or ``"B"``.
      kernel_init: conv kernel initializer.
      bn_momentum: BatchNorm running-average decay (0.9 = PyTorch's momentum 0.1).
      bn_epsilon: BatchNorm epsilon.
      dtype: computation dtype.
      param_dtype: parameter dtype.
      rngs: ``nnx.Rngs``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        *,
        shortcut: str = "A",
        kernel_init: Initializer = HE_NORMAL,
        bn_momentum: float = 0.9,
        bn_epsilon: float = 1e-5,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        in_channels = _shapes.positive_int("in_channels", in_channels)
        out_channels = _shapes.positive_int("out_channels", out_channels)
        stride = _shapes.positive_int("stride", stride)
        if shortcut == "A" and out_channels < in_channels:
            raise ValueError(
                f"option A shortcuts zero-pad channels, so out_channels ({out_channels}) must be "
                f">= in_channels ({in_channels}); use shortcut='B'"
            )
        conv = dict(use_bias=False, kernel_init=kernel_init, dtype=dtype, param_dtype=param_dtype)
        bn = dict(momentum=bn_momentum, epsilon=bn_epsilon, dtype=dtype, param_dtype=param_dtype)
        self.stride = stride
        self.out_channels = out_channels
        self.conv1 = nnx.Conv(
            in_channels, out_channels, (3, 3), strides=stride, padding=PAD1, **conv, rngs=rngs
        )
        self.bn1 = nnx.BatchNorm(out_channels, **bn, rngs=rngs)
        self.conv2 = nnx.Conv(out_channels, out_channels, (3, 3), padding=PAD1, **conv, rngs=rngs)
        self.bn2 = nnx.BatchNorm(out_channels, **bn, rngs=rngs)
        self.projection = shortcut == "B" and (stride != 1 or in_channels != out_channels)
        if self.projection:
            self.shortcut_conv = nnx.Conv(
                in_channels,
                out_channels,
                (1, 1),
                strides=stride,
                padding="VALID",
                **conv,
                rngs=rngs,
            )
            self.shortcut_bn = nnx.BatchNorm(out_channels, **bn, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``(batch, h, w, in) -> (batch, ceil(h / stride), ceil(w / stride), out)``."""
        y = jax.nn.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.projection:
            s = self.shortcut_bn(self.shortcut_conv(x))
        else:
            s = x[:, :: self.stride, :: self.stride, :]
            extra = self.out_channels - s.shape[-1]
            if extra:
                s = jnp.pad(s, ((0, 0), (0, 0), (0, 0), (0, extra)))
        return jax.nn.relu(y + s)


class CifarResNet(nnx.Module):
    """The CIFAR-10 ResNet of He et al. (2016, Section 4.2), depth ``6n + 2``.

    3x3 conv (``width`` filters) → BN → ReLU → three stages of ``n``
    :class:`BasicBlock` with ``width``, ``2·width``, ``4·width`` filters (the first
    block of stages 2 and 3 has stride 2) → global average pool → linear
    ``num_classes``.

    Exact parameter counts (10 classes, 3 input channels; BatchNorm scale and
    bias included, running averages excluded):

    =========  ==========  ==========
    model      option A    option B
    =========  ==========  ==========
    ResNet-20     269,722     272,474
    ResNet-56     853,018     855,770
    =========  ==========  ==========

    (paper, Table 6: 0.27M and 0.85M; option B adds 16·32 + 2·32 + 32·64 + 2·64
    = 2,752). The global pool makes the model work for any image size;
    ``in_shape`` fixes the size the input is checked against.

    Parameter paths: ``conv/kernel`` ``(3, 3, C, width)``, ``bn/scale``, ``bn/bias``,
    ``blocks/{i}/conv1/kernel``, ``blocks/{i}/bn1/scale``, ... (blocks numbered
    through the stages: block ``i`` is in stage ``i // n``),
    ``blocks/{i}/shortcut_conv/kernel`` (option B), ``linear/kernel``
    ``(4·width, num_classes)``, ``linear/bias``.

    Train / eval: see the module docstring (``model.eval()`` / ``model.train()``).

    Args:
      depth: ``6n + 2`` with ``n >= 1`` (20, 32, 44, 56, 110, ...).
      in_shape: per-example input shape ``(height, width, channels)``.
      num_classes: number of logits.
      shortcut: ``"A"`` (zero-padding identity, default) or ``"B"`` (projection).
      width: filters of the first stage (16 in the paper).
      kernel_init: kernel initializer of convolutions and the classifier
        (default He normal, He et al. 2015).
      bn_momentum: BatchNorm running-average decay.
      bn_epsilon: BatchNorm epsilon.
      dtype: computation dtype.
      param_dtype: parameter dtype.
      rngs: ``nnx.Rngs``.

    References:
      He, Zhang, Ren & Sun (2016), Deep Residual Learning for Image Recognition,
      CVPR (Section 4.2, Table 6).
    """

    def __init__(
        self,
        depth: int,
        in_shape: Sequence[int] = (32, 32, 3),
        num_classes: int = 10,
        *,
        shortcut: str = "A",
        width: int = 16,
        kernel_init: Initializer = HE_NORMAL,
        bn_momentum: float = 0.9,
        bn_epsilon: float = 1e-5,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        depth = _shapes.positive_int("depth", depth)
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, ...), got {depth}")
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        self.in_shape = _shapes.image_shape("in_shape", in_shape)
        num_classes = _shapes.positive_int("num_classes", num_classes)
        width = _shapes.positive_int("width", width)
        self.model_name = f"ResNet{depth}"
        self.blocks_per_stage = (depth - 2) // 6
        common = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        bn = dict(momentum=bn_momentum, epsilon=bn_epsilon, **common)
        self.conv = nnx.Conv(
            self.in_shape[2],
            width,
            (3, 3),
            padding=PAD1,
            use_bias=False,
            kernel_init=kernel_init,
            **common,
        )
        self.bn = nnx.BatchNorm(width, **bn)
        blocks = []
        channels = width
        for stage in range(3):
            out = width * 2**stage
            for b in range(self.blocks_per_stage):
                stride = 2 if stage > 0 and b == 0 else 1
                blocks.append(
                    BasicBlock(
                        channels,
                        out,
                        stride,
                        shortcut=shortcut,
                        kernel_init=kernel_init,
                        bn_momentum=bn_momentum,
                        bn_epsilon=bn_epsilon,
                        **common,
                    )
                )
                channels = out
        self.blocks = nnx.List(blocks)
        self.linear = nnx.Linear(channels, num_classes, kernel_init=kernel_init, **common)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits ``(batch, num_classes)`` for ``x`` of shape ``(batch, *in_shape)``."""
        x = _shapes.check_input(self.model_name, x, self.in_shape)
        x = jax.nn.relu(self.bn(self.conv(x)))
        for block in self.blocks:
            x = block(x)
        return self.linear(jnp.mean(x, axis=(1, 2)))


class ResNet20(CifarResNet):
    """ResNet-20 (n = 3): 269,722 parameters with option A. See :class:`CifarResNet`."""

    def __init__(
        self,
        in_shape: Sequence[int] = (32, 32, 3),
        num_classes: int = 10,
        *,
        rngs: nnx.Rngs,
        **kwargs: Any,
    ):
        super().__init__(20, in_shape, num_classes, rngs=rngs, **kwargs)


class ResNet56(CifarResNet):
    """ResNet-56 (n = 9): 853,018 parameters with option A. See :class:`CifarResNet`."""

    def __init__(
        self,
        in_shape: Sequence[int] = (32, 32, 3),
        num_classes: int = 10,
        *,
        rngs: nnx.Rngs,
        **kwargs: Any,
    ):
        super().__init__(56, in_shape, num_classes, rngs=rngs, **kwargs)
