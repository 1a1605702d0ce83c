"""Sparse variational dropout: NNX layers, the KL term, and conversion to params + mask.

Each weight gets a Gaussian posterior ``w ~ N(θ, σ²)`` under the log-uniform prior
``p(|w|) ∝ 1/|w|`` (additive reparameterization: the parameters are ``θ`` and
``log σ²``); its dropout rate is ``α = σ²/θ²``, used as
``log α = clip(log σ² − log θ², −8, 8)`` (:func:`log_alpha`). The layers
(:class:`VDLinear`, :class:`VDConv`; ``structured=True``: one noise variable per unit or
filter) train with the local reparameterization trick and, in evaluation mode, remove
the weights with ``log α ≥ threshold``. The objective adds ``KL(q‖p)``
(:func:`kl_divergence`, Molchanov's eq. 14 approximation) weighted per example by ``1/N``
and warmed up (:func:`kl_warmup`):
``sparsejax.train.make_train_step(penalty=kl_penalty(N, kl_warmup(W)))``.
:func:`to_plain` turns a trained VD model into the parameters and mask of a plain zoo
model (``VDLeNet300100`` → :class:`~sparsejax.models.LeNet300100`, ``VDLeNet5`` →
:class:`~sparsejax.models.LeNet5`).

References:
  Molchanov, Ashukha & Vetrov (2017), Variational Dropout Sparsifies Deep
  Neural Networks, ICML (eq. 14 KL approximation, additive reparameterization,
  threshold log α = 3). Kingma, Salimans & Welling (2015), Variational Dropout
  and the Local Reparameterization Trick. Neklyudov, Molchanov, Ashukha &
  Vetrov (2017), Structured Bayesian Pruning via Log-Normal Multiplicative
  Noise. Louizos, Ullrich & Welling (2017), Bayesian Compression for Deep Learning.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.nn.initializers import Initializer

from sparsejax.models import _shapes
from sparsejax.tree import check_same_structure, path_str

__all__ = [
    "K1",
    "K2",
    "K3",
    "LOG_ALPHA_MAX",
    "LOG_ALPHA_MIN",
    "VDConv",
    "VDLeNet5",
    "VDLeNet300100",
    "VDLinear",
    "kl_divergence",
    "kl_penalty",
    "kl_warmup",
    "log_alpha",
    "make_vd_train_step",
    "model_kl",
    "neg_kl_approx",
    "to_plain",
]

K1, K2, K3 = 0.63576, 1.87320, 1.48695
LOG_ALPHA_MIN, LOG_ALPHA_MAX = -8.0, 8.0
_EPS = 1e-8
GLOROT_NORMAL = nnx.initializers.glorot_normal()
ZEROS = nnx.initializers.zeros_init()


def log_alpha(theta: jax.Array, log_sigma2: jax.Array) -> jax.Array:
    """``clip(log σ² − log(θ² + 1e-8), −8, 8)``; broadcasts ``log_sigma2`` to ``theta``. Pure."""
    theta, log_sigma2 = jnp.asarray(theta), jnp.asarray(log_sigma2)
    if log_sigma2.ndim != theta.ndim:
        raise ValueError(
            f"log_sigma2 of shape {log_sigma2.shape} must have the rank of theta {theta.shape}"
        )
    la = log_sigma2 - jnp.log(jnp.square(theta) + _EPS)
    return jnp.clip(la, LOG_ALPHA_MIN, LOG_ALPHA_MAX)


def neg_kl_approx(log_alpha: jax.Array) -> jax.Array:
    """Elementwise ``−KL ≈ k₁·σ(k₂ + k₃·log α) − ½·log1p(e^{−log α}) − k₁`` (Molchanov eq. 14).

    ``k₁ = 0.63576``, ``k₂ = 1.87320``, ``k₃ = 1.48695`` (:data:`K1`, :data:`K2`, :data:`K3`).
    ``½·log1p(e^{−log α})`` is computed as ``½·softplus(−log α)`` (stable for any
    ``log α``). Tends to 0 as ``log α → ∞``. Pure; same shape as the input.
    """
    la = jnp.asarray(log_alpha, jnp.float32)
    return K1 * jax.nn.sigmoid(K2 + K3 * la) - 0.5 * jax.nn.softplus(-la) - K1


def kl_divergence(log_alpha: jax.Array) -> jax.Array:
    """``Σ KL(q(w|θ, α) ‖ p(w))`` over all entries: ``−sum(neg_kl_approx(log_alpha))`` (f32[])."""
    return -jnp.sum(neg_kl_approx(log_alpha))


def kl_warmup(steps: int, begin: int = 0) -> optax.Schedule:
    """KL weight β rising linearly from 0 to 1 over ``steps`` steps from ``begin``, then 1.

    The warm-up of Molchanov et al. (2017) (after Sønderby et al. 2016): the
    ELBO starts as the plain likelihood and the prior is switched in gradually.
    An ``optax.linear_schedule``.
    """
    steps = _shapes.positive_int("steps", steps)
    if isinstance(begin, bool) or not isinstance(begin, int) or begin < 0:
        raise ValueError(f"begin must be an int >= 0, got {begin!r}")
    return optax.linear_schedule(0.0, 1.0, transition_steps=steps, transition_begin=begin)


# --------------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------------


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
        self.rngs = rngs["dropout"].fork()

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

    def __call__(self, x: jax.Array) -> jax.Array:
        """Outputs for ``x``: noisy (training) or masked-deterministic (``deterministic=True``).

        Training (``deterministic=False``): the *local reparameterization trick*. For a
        Dense layer ``γ = x θ + b``, ``δ = x² (α θ²)`` and the output is ``γ + √δ ⊙ ε``,
        ``ε ~ N(0, 1)`` drawn per example and output (per output position for a
        convolution) from the layer's ``dropout`` RNG stream. Structured: the unit's
        pre-activation times ``z ~ N(s, α s²)``, drawn per example and unit.
        Evaluation (``deterministic=True``, set by ``model.eval()``): weights with
        ``log α ≥ threshold`` (3 in the paper: ``α > 20``) are removed and the others are
        ``θ``; the layer is deterministic.
        """
        if self.deterministic:
            kernel, bias, _, _ = self.deterministic_params()
            return self._add_bias(self._op(x, kernel), bias)
        key = self.rngs()
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
      log_sigma2_init: initial ``log σ²`` (−10, as in the paper's code).
      kernel_init: initializer of θ (Glorot normal).
      bias_init: initializer of the bias (zeros).
      rngs: ``nnx.Rngs``; ``params`` (or ``default``) initialises, ``dropout``
        (or ``default``) draws the training noise.

    Shapes: ``(batch, in) -> (batch, out)``. ``model.train()`` / ``model.eval()``
    switch between the noisy and the deterministic forward pass. Parameter names:
    ``kernel`` (θ), ``bias``, ``log_sigma2`` and, structured, ``scale``.

    **Structured** variant (``structured=True``): one noise variable per output unit /
    filter, ``z_j ~ N(s_j, α_j s_j²)`` with the parameters ``scale`` s (init 1) and
    ``log_sigma2`` (shape ``(1, …, 1, out)``), multiplying the unit's pre-activation
    ``(x·kernel_j + b_j)``; the same KL prior on ``z_j`` drops whole units (group sparse
    variational dropout in the spirit of Neklyudov et al. 2017 and Louizos et al. 2017,
    with Molchanov's KL). The kernel itself is a point estimate.

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
    training the local reparameterization noise is drawn per output position.

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


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------


class VDLeNet300100(nnx.Module):
    """LeNet-300-100 with sparse VD layers; paths ``layers/{i}/kernel|bias`` as in ``LeNet300100``.

    With ``structured=True`` the two hidden layers get one ``log α`` per neuron
    (the output layer stays per weight: class units are never removed).
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

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits ``(batch, num_classes)``; any ``(batch, ...)`` input with ``in_features`` entries."""
        x = jnp.asarray(x)
        if x.ndim < 2 or math.prod(x.shape[1:]) != self.features[0]:
            raise ValueError(f"VDLeNet300100 expects (batch, ...) inputs with {self.features[0]} "
                             f"features per example, got shape {tuple(x.shape)}")
        x = _shapes.flatten(x)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = jax.nn.relu(x)
        return x


class VDLeNet5(nnx.Module):
    """LeNet-5 (Caffe variant) with sparse VD layers; paths as in :class:`~sparsejax.models.LeNet5`.

    ``conv1`` 20@5x5 → max-pool → ``conv2`` 50@5x5 → max-pool → ``fc1`` 500 →
    ReLU → ``fc2``. ``structured=True``: one ``log α`` per filter of
    ``conv1``/``conv2`` and per neuron of ``fc1`` (``fc2`` stays per weight).
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

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits ``(batch, num_classes)`` for ``x`` of shape ``(batch, *in_shape)``."""
        x = _shapes.check_input("VDLeNet5", x, self.in_shape)
        x = nnx.max_pool(self.conv1(x), (2, 2), strides=(2, 2))
        x = nnx.max_pool(self.conv2(x), (2, 2), strides=(2, 2))
        x = jax.nn.relu(self.fc1(_shapes.flatten(x)))
        return self.fc2(x)


# --------------------------------------------------------------------------------------------
# KL of a model, conversion, training step
# --------------------------------------------------------------------------------------------


def _vd_layers(model: nnx.Module) -> list[tuple[str, _VDLayer]]:
    return [
        ("/".join(str(k) for k in path), node)
        for path, node in nnx.iter_graph(model)
        if isinstance(node, _VDLayer)
    ]


def model_kl(model: nnx.Module) -> jax.Array:
    """Sum of :meth:`VDLinear.kl` over every VD layer of ``model`` (f32[]; 0 if none)."""
    return sum((layer.kl() for _, layer in _vd_layers(model)), jnp.zeros((), jnp.float32))


def to_plain(vd_model: nnx.Module, plain_model: nnx.Module) -> tuple[nnx.State, Any]:
    """Deterministic parameters and mask of a trained VD model, for a plain model.

    Every VD layer at path ``P`` of ``vd_model`` provides ``P/kernel`` and
    ``P/bias`` (:meth:`VDLinear.deterministic_params`); every other ``nnx.Param``
    of ``plain_model`` is copied from the same path of ``vd_model``.

    Args:
      vd_model: e.g. a trained :class:`VDLeNet300100` (not modified).
      plain_model: a model with ``nnx.Linear``/``nnx.Conv`` at the VD layers'
        paths, e.g. ``LeNet300100(rngs=nnx.Rngs(0))`` (only its structure and
        shapes are read; it is not modified).

    Returns:
      ``(params, mask)``: ``params`` is an ``nnx.State`` like
      ``nnx.split(plain_model, nnx.Param)[1]`` (removed weights already
      ``0.0``); ``mask`` mirrors it (kernel masks of full shape, or ``(1, …,
      out)`` with ``bias`` masks ``(out,)`` for structured layers, scalar
      ``True`` elsewhere). ``nnx.update(plain_model, params)`` gives a model
      whose outputs equal ``vd_model`` in eval mode; the mask is in the format of
      :mod:`sparsejax.masks`, so metrics, ``apply_mask`` and fine-tuning work unchanged.

    Raises:
      ValueError: a plain parameter path missing from ``vd_model``, a VD layer
        with no counterpart in ``plain_model``, or a shape mismatch (the path is named).
    """
    converted: dict[str, tuple[jax.Array, jax.Array]] = {}
    for name, layer in _vd_layers(vd_model):
        kernel, bias, kmask, bmask = layer.deterministic_params()
        converted[f"{name}/kernel"] = (kernel, kmask)
        converted[f"{name}/bias"] = (bias, bmask)
    _, vd_params, _ = nnx.split(vd_model, nnx.Param, ...)
    vd_flat = {path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(vd_params)[0]}
    _, params, _ = nnx.split(plain_model, nnx.Param, ...)
    names = [path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    unused = [n for n in converted if n not in set(names)]
    if unused:
        raise ValueError(f"VD parameters {unused} have no counterpart in plain_model; its "
                         f"parameter paths are {names}")

    def value(path, leaf):
        name = path_str(path)
        if name in converted:
            new = converted[name][0]
        elif name in vd_flat:
            new = vd_flat[name]
        else:
            raise ValueError(f"plain_model parameter {name!r} not found in vd_model")
        if jnp.shape(new) != jnp.shape(leaf):
            raise ValueError(f"parameter {name!r}: vd_model gives shape {jnp.shape(new)}, "
                             f"plain_model has {jnp.shape(leaf)}")
        return jnp.asarray(new, jnp.result_type(leaf))

    def mask(path, leaf):
        name = path_str(path)
        return converted[name][1] if name in converted else jnp.ones((), bool)

    new_params = jax.tree_util.tree_map_with_path(value, params)
    new_mask = jax.tree_util.tree_map_with_path(mask, params)
    check_same_structure(new_params, new_mask)
    return new_params, new_mask


def kl_penalty(
    num_examples: int, kl_weight: float | Callable[[jax.Array], jax.Array] = 1.0
) -> Callable[[nnx.Module, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]:
    """The KL term of the per-example negative ELBO, for ``make_train_step(penalty=...)``.

    ``penalty(model, step) -> (β(step) · model_kl(model) / num_examples, {"kl", "kl_weight"})``
    with ``β`` = ``kl_weight`` (a float or a schedule such as :func:`kl_warmup`). With
    :func:`sparsejax.train.make_train_step` the objective is
    ``mean(loss_fn(logits, y)) + β(step) · model_kl(model) / num_examples``, evaluated on the
    training-mode model (noisy layers, RNG streams reseeded every step); the metrics are
    ``loss`` (the objective), ``data_loss`` (the negative log-likelihood), ``kl``,
    ``kl_weight`` and ``accuracy``.

    Args:
      num_examples: training-set size ``N`` (the KL is per data set).
      kl_weight: β, float or ``step -> β``.

    Returns:
      The pure penalty function.

    Raises:
      ValueError: ``num_examples`` not a positive int.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> import sparsejax.train as train
      >>> from flax import nnx
      >>> step = train.make_train_step(penalty=kl_penalty(60_000, kl_warmup(1_000)))
      >>> state = train.create_train_state(VDLeNet300100(rngs=nnx.Rngs(0)), optax.adam(1e-3),
      ...                                  key=0)
      >>> sorted(step(state, (jnp.ones((4, 784)), jnp.zeros(4, jnp.int32)))[1])
      ['accuracy', 'data_loss', 'kl', 'kl_weight', 'loss']
    """
    num_examples = _shapes.positive_int("num_examples", num_examples)

    def penalty(model: nnx.Module, step: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        beta = jnp.asarray(kl_weight(step) if callable(kl_weight) else kl_weight, jnp.float32)
        kl = model_kl(model)
        return beta * kl / num_examples, {"kl": kl, "kl_weight": beta}

    return penalty


def make_vd_train_step(
    num_examples: int,
    kl_weight: float | Callable[[jax.Array], jax.Array] = 1.0,
    loss_fn: Callable[[jax.Array, jax.Array], jax.Array] = (
        optax.softmax_cross_entropy_with_integer_labels
    ),
    *,
    jit: bool = True,
) -> Callable[..., Any]:
    """Deprecated: use ``make_train_step(loss_fn, penalty=kl_penalty(num_examples, kl_weight))``.

    Builds exactly that step (:func:`sparsejax.train.make_train_step` with
    :func:`kl_penalty`): training mode, the model's RNG streams reseeded from
    ``fold_in(state.key, step)``; metrics ``loss``, ``data_loss``, ``kl``, ``kl_weight``,
    ``accuracy``. Arguments as in :func:`kl_penalty`; ``jit`` wraps the step in ``jax.jit``.
    """
    warnings.warn(
        "sparsejax.variational.make_vd_train_step is deprecated: use "
        "sparsejax.train.make_train_step(penalty=sparsejax.variational.kl_penalty(...))",
        DeprecationWarning,
        stacklevel=2,
    )
    penalty = kl_penalty(num_examples, kl_weight)
    from sparsejax.train import make_train_step  # deprecated alias: imports up a layer

    return make_train_step(loss_fn, penalty=penalty, jit=jit)
