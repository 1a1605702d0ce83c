"""LeNet-5, Caffe variant (the LeNet-5 of the pruning literature, 431,080 parameters)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.nn.initializers import Initializer
from jax.typing import DTypeLike

from sparsejax.models import _shapes

__all__ = ["LeNet5"]

GLOROT_NORMAL = nnx.initializers.glorot_normal()


class LeNet5(nnx.Module):
    """LeNet-5 as in Caffe's ``lenet_train_test.prototxt`` (NHWC).

    ``conv1`` 20@5x5 → 2x2 max-pool → ``conv2`` 50@5x5 → 2x2 max-pool → flatten →
    ``fc1`` 500 → ReLU → ``fc2`` ``num_classes``. As in Caffe there is no
    non-linearity after the convolutions (the max-pools are the only one).

    On 28x28x1 MNIST with ``padding="VALID"`` (Caffe's choice): 28 → 24 → 12 → 8 → 4,
    so ``fc1`` sees 4·4·50 = 800 features and the model has
    ``(5·5·1·20 + 20) + (5·5·20·50 + 50) + (800·500 + 500) + (500·10 + 10) = 431,080``
    parameters.

    Other input sizes: the width of ``fc1`` is computed from ``in_shape``. With
    ``padding="VALID"`` each side must be at least 16 (after ``conv1`` and the
    pool, ``conv2`` needs a 5x5 map); smaller inputs raise a ``ValueError`` that
    suggests ``padding="SAME"``. With ``"SAME"`` the convolutions keep the size, so
    any input with sides >= 4 works: for the 8x8 scikit-learn digits,
    8 → 8 → 4 → 4 → 2 and ``fc1`` sees 2·2·50 = 200 features (131,080 parameters
    with 10 classes).

    Parameter paths: ``conv1/kernel`` ``(5, 5, C, 20)``, ``conv2/kernel``
    ``(5, 5, 20, 50)``, ``fc1/kernel`` ``(h·w·50, 500)``, ``fc2/kernel``
    ``(500, num_classes)`` and the matching ``bias`` leaves. The flatten is in
    NHWC ``(h, w, c)`` order (Caffe flattens ``(c, h, w)``: permute ``fc1`` rows to
    port Caffe weights). The forward pass is pure (no batch statistics, no dropout).

    Args:
      in_shape: per-example input shape ``(height, width, channels)``.
      num_classes: number of logits.
      padding: ``"VALID"`` (Caffe, default) or ``"SAME"`` for both convolutions.
      kernel_init: kernel initializer (default Glorot normal).
      dtype: computation dtype.
      param_dtype: parameter dtype.
      rngs: ``nnx.Rngs``.

    References:
      LeCun, Bottou, Bengio & Haffner (1998), Gradient-based learning applied to
      document recognition. Han, Pool, Tran & Dally (2015), Learning both Weights
      and Connections for Efficient Neural Networks (Table 2, LeNet-5, 431K weights).
    """

    def __init__(
        self,
        in_shape: Sequence[int] = (28, 28, 1),
        num_classes: int = 10,
        *,
        padding: str = "VALID",
        kernel_init: Initializer = GLOROT_NORMAL,
        dtype: DTypeLike | None = None,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.in_shape = _shapes.image_shape("in_shape", in_shape)
        num_classes = _shapes.positive_int("num_classes", num_classes)
        if padding not in ("VALID", "SAME"):
            raise ValueError(f"padding must be 'VALID' or 'SAME', got {padding!r}")
        hint = (
            " LeNet5 with padding='VALID' needs inputs of at least 16x16; use padding='SAME' "
            "for smaller images."
            if padding == "VALID"
            else ""
        )
        size = self.in_shape[:2]
        size = _shapes.conv_size("LeNet5", "conv1", size, (5, 5), padding=padding, hint=hint)
        size = _shapes.pool_size("LeNet5", "pool1", size, 2, hint=hint)
        size = _shapes.conv_size("LeNet5", "conv2", size, (5, 5), padding=padding, hint=hint)
        size = _shapes.pool_size("LeNet5", "pool2", size, 2, hint=hint)
        flat = size[0] * size[1] * 50
        kw = dict(kernel_init=kernel_init, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.conv1 = nnx.Conv(self.in_shape[2], 20, (5, 5), padding=padding, **kw)
        self.conv2 = nnx.Conv(20, 50, (5, 5), padding=padding, **kw)
        self.fc1 = nnx.Linear(flat, 500, **kw)
        self.fc2 = nnx.Linear(500, num_classes, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits ``(batch, num_classes)`` for ``x`` of shape ``(batch, *in_shape)``."""
        x = _shapes.check_input("LeNet5", x, self.in_shape)
        x = nnx.max_pool(self.conv1(x), (2, 2), strides=(2, 2))
        x = nnx.max_pool(self.conv2(x), (2, 2), strides=(2, 2))
        x = jax.nn.relu(self.fc1(_shapes.flatten(x)))
        return self.fc2(x)
