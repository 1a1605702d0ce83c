"""Sparse variational dropout layers: :class:`VDLinear` and :class:`VDConv`.

The layers hold parameters only (``kernel`` θ, ``bias``, ``log_sigma2`` and, structured,
``scale``): no RNG state, so ``nnx.split(layer, nnx.Param)`` takes all of it. The training
noise is drawn from a PRNG key given to the call, ``layer(x, key=key)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax.nn.initializers import Initializer

from sparsejax.models import _shapes
from sparsejax.variational._kl import _EPS, kl_divergence, log_alpha

GLOROT_NORMAL = nnx.initializers.glorot_normal()
ZEROS = nnx.initializers.zeros_init()


class _VDLayer(nnx.Module):
    """Shared logic of :class:`VDLinear` and :class:`VDConv`.

    Not instantiated itself: each subclass calls ``_init_common`` from its
    ``__init__`` and defines ``_op(x, w)``, its linear operation (a dense
    contraction or a convolution).
    """

    def _init_common(
        self,
        kernel_shape: tuple[int, ...],
        out_features: int,
        *,
        structured: bool,
        threshold: float,
        log_sigma2_init: float,
        kernel_init: Initializer,
        bias_init: Initializer,
        rngs: nnx.Rngs,
    ) -> None:
        if not isinstance(structured, bool):
            raise TypeError(f"structured must be a bool, got {structured!r}")
        for name, v in (("threshold", threshold), ("log_sigma2_init", log_sigma2_init)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite float, got {v!r}")
        self.structured = structured
        self.threshold = float(threshold)
        self.deterministic = False
        self.kernel = nnx.Param(kernel_init(rngs.params(), kernel_shape, jnp.float32))
        self.bias = nnx.Param(bias_init(rngs.params(), (out_features,), jnp.float32))
        noise_shape = (1,) * (len(kernel_shape) - 1) + (out_features,) if structured else kernel_shape
        self.log_sigma2 = nnx.Param(jnp.full(noise_shape, float(log_sigma2_init), jnp.float32))
        if structured:
            self.scale = nnx.Param(jnp.ones(noise_shape, jnp.float32))

    def _add_bias(self, y: jax.Array, b: jax.Array) -> jax.Array:
        return y + b.reshape((1,) * (y.ndim - 1) + (-1,))

    def log_alpha(self) -> jax.Array:
        """``log α``: kernel shape (unstructured) or ``(1, …, 1, out)`` (structured)."""
        theta = self.scale[...] if self.structured else self.kernel[...]
        return log_alpha(theta, self.log_sigma2[...])

    def kl(self) -> jax.Array:
        """``KL(q‖p)`` of this layer's noisy variables (f32[])."""
        return kl_divergence(self.log_alpha())

    def keep(self) -> jax.Array:
        """Mask of the variables kept at evaluation: ``log α < threshold``."""
        return self.log_alpha() < self.threshold

    def deterministic_params(self) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """``(kernel, bias, kernel_mask, bias_mask)`` of the equivalent deterministic layer.

        Unstructured: ``kernel = where(keep, θ, 0)``, mask of the kernel's
        shape, bias mask scalar ``True``. Structured: ``kernel = where(keep,
        kernel·scale, 0)`` and ``bias = where(keep, bias·scale, 0)``, masks
        ``(1, …, out)`` and ``(out,)``.
        """
        keep = self.keep()
        if self.structured:
            s = self.scale[...]
            kernel = jnp.where(keep, self.kernel[...] * s, 0.0)
            bias_keep = keep.reshape(-1)
            bias = jnp.where(bias_keep, self.bias[...] * s.reshape(-1), 0.0)
            return kernel, bias, keep, bias_keep
        kernel = jnp.where(keep, self.kernel[...], 0.0)
        return kernel, self.bias[...], keep, jnp.ones((), bool)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Outputs for ``x``: noisy (training, ``key`` required) or masked-deterministic.

        Training (``deterministic=False``, the state after construction and
        ``model.train()``): the *local reparameterization trick*. For a Dense layer
        ``γ = x θ + b``, ``δ = x² (α θ²)`` and the output is ``γ + √(δ + 10⁻⁸) ⊙ ε``,
        ``ε ~ N(0, 1)`` drawn from ``key`` per example and output (per output position
        for a convolution). Structured: the unit's pre-activation times
        ``z ~ N(s, α s²)``, drawn per example and unit. Evaluation
        (``deterministic=True``, set by ``model.eval()``; ``key`` is ignored): weights with
        ``log α ≥ threshold`` (3 in the paper: ``α > 20``) are removed and the others
        are ``θ``; the layer is deterministic.

        Raises:
          ValueError: training mode without a ``key``, or inputs of the wrong shape.
        """
        if self.deterministic:
            kernel, bias, _, _ = self.deterministic_params()
            return self._add_bias(self._op(x, kernel), bias)
        if key is None:
            raise ValueError(
                f"{type(self).__name__} in training mode draws its noise from a PRNG key: call "
                "it as layer(x, key=jax.random.key(...)) (a model: model(x, key=...); in "
                "sparsejax.train.make_train_step pass forward=sparsejax.variational."
                "noisy_forward), or switch to the deterministic pass with .eval()"
            )
        if self.structured:
            y = self._add_bias(self._op(x, self.kernel[...]), self.bias[...])
            s = self.scale[...]
            std = jnp.sqrt(jnp.exp(self.log_alpha())) * jnp.abs(s)
            s, std = s.reshape(-1), std.reshape(-1)
            lead = (y.shape[0],) + (1,) * (y.ndim - 2) + (y.shape[-1],)
            eps = jax.random.normal(key, lead, y.dtype)
            return y * (s.reshape((1,) * (y.ndim - 1) + (-1,))
                        + std.reshape((1,) * (y.ndim - 1) + (-1,)) * eps)
        theta = self.kernel[...]
        mean = self._add_bias(self._op(x, theta), self.bias[...])
        var = self._op(jnp.square(x), jnp.exp(self.log_alpha()) * jnp.square(theta))
        eps = jax.random.normal(key, mean.shape, mean.dtype)
        return mean + jnp.sqrt(var + _EPS) * eps


class VDLinear(_VDLayer):
    """Dense layer with sparse variational dropout; kernel ``(in, out)`` like ``nnx.Linear``.

    Args:
      in_features: input width.
      out_features: output width.
      structured: one ``log α`` per output neuron instead of per weight.
      threshold: ``log α`` at and above which a weight (neuron) is removed at eval (3).
      log_sigma2_init: initial ``log σ²`` (−10, the ``ard_init`` of the paper's code).
      kernel_init: initializer of θ (Glorot normal).
      bias_init: initializer of the bias (zeros).
      rngs: ``nnx.Rngs`` with a ``params`` (or ``default``) stream, read at construction
        only: the layer keeps no RNG state.

    Shapes: ``(batch, in) -> (batch, out)``; ``layer(x, key=key)`` in training mode
    (the state after construction, ``model.train()``), ``layer(x)`` after ``.eval()``.
    Parameter names: ``kernel`` (θ), ``bias``, ``log_sigma2`` and, structured, ``scale``;
    they are all ``nnx.Param``, so ``nnx.split(layer, nnx.Param)`` is exhaustive.

    **Structured** variant (``structured=True``): one noise variable per output unit /
    filter, ``z_j ~ N(s_j, α_j s_j²)`` with the parameters ``scale`` s (init 1) and
    ``log_sigma2`` (shape ``(1, …, 1, out)``), multiplying the unit's pre-activation
    ``(x·kernel_j + b_j)``; the same KL prior on ``z_j`` drops whole units (group sparse
    variational dropout in the spirit of Neklyudov et al. 2017 and Louizos et al. 2017,
    with Molchanov's KL). The kernel itself is a point estimate.

    Example:
      >>> layer = VDLinear(4, 3, rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((2, 4)), key=jax.random.key(1)).shape
      (2, 3)

    References:
      Molchanov, Ashukha & Vetrov (2017), Variational Dropout Sparsifies DNNs.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        structured: bool = False,
        threshold: float = 3.0,
        log_sigma2_init: float = -10.0,
        kernel_init: Initializer = GLOROT_NORMAL,
        bias_init: Initializer = ZEROS,
        rngs: nnx.Rngs,
    ):
        in_features = _shapes.positive_int("in_features", in_features)
        out_features = _shapes.positive_int("out_features", out_features)
        self._init_common((in_features, out_features), out_features, structured=structured,
                          threshold=threshold, log_sigma2_init=log_sigma2_init,
                          kernel_init=kernel_init, bias_init=bias_init, rngs=rngs)

    def _op(self, x: jax.Array, w: jax.Array) -> jax.Array:
        if x.ndim < 1 or x.shape[-1] != w.shape[0]:
            raise ValueError(f"VDLinear expects inputs (..., {w.shape[0]}), got {x.shape}")
        return jax.lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())))


class VDConv(_VDLayer):
    """2-D convolution with sparse variational dropout; NHWC, kernel ``(kh, kw, in, out)``.

    Args:
      in_features: input channels.
      out_features: filters.
      kernel_size: ``(kh, kw)``.
      padding: ``"VALID"`` or ``"SAME"``.
      structured: one ``log α`` per filter instead of per weight.
      threshold, log_sigma2_init, kernel_init, bias_init, rngs: as for :class:`VDLinear`.

    Shapes: ``(batch, h, w, in) -> (batch, h', w', out)`` (stride 1). In
    training (``layer(x, key=key)``) the local reparameterization noise is drawn per
    output position.

    References:
      Molchanov, Ashukha & Vetrov (2017), Variational Dropout Sparsifies DNNs.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: Sequence[int],
        *,
        padding: str = "VALID",
        structured: bool = False,
        threshold: float = 3.0,
        log_sigma2_init: float = -10.0,
        kernel_init: Initializer = GLOROT_NORMAL,
        bias_init: Initializer = ZEROS,
        rngs: nnx.Rngs,
    ):
        in_features = _shapes.positive_int("in_features", in_features)
        out_features = _shapes.positive_int("out_features", out_features)
        ks = _shapes.positive_ints("kernel_size", kernel_size)
        if len(ks) != 2:
            raise ValueError(f"kernel_size must be (kh, kw), got {kernel_size!r}")
        if padding not in ("VALID", "SAME"):
            raise ValueError(f"padding must be 'VALID' or 'SAME', got {padding!r}")
        self.padding = padding
        self._init_common((*ks, in_features, out_features), out_features, structured=structured,
                          threshold=threshold, log_sigma2_init=log_sigma2_init,
                          kernel_init=kernel_init, bias_init=bias_init, rngs=rngs)

    def _op(self, x: jax.Array, w: jax.Array) -> jax.Array:
        if x.ndim != 4 or x.shape[-1] != w.shape[2]:
            raise ValueError(f"VDConv expects NHWC inputs (batch, h, w, {w.shape[2]}), got {x.shape}")
        return jax.lax.conv_general_dilated(
            x, w, (1, 1), self.padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
