"""Dynamic (input-dependent) channel gating and adaptive sparsity at inference.

A *gated* layer is a Dense or Conv layer with a cheap auxiliary predictor that
scores each of its ``C`` output channels from the layer's own input, then runs
only the ``k`` best channels for that input and skips the others (their output
is exactly ``0.0``)::

    s     = mean |x| over the spatial positions              # (batch, C_in)
    logit = s @ W_g + b_g                                    # (batch, C)   the predictor
    gate  = select_k(logit)                                  # (batch, C)   zero off the top k
    y     = (conv(x, kernel) + bias) * gate                  # (batch, ..., C)

Two gate kinds:

* ``"fbs"`` — Feature Boosting and Suppression (Gao et al. 2019): saliency
  ``g = relu(logit)``, k-winner-take-all ``wta_k(g)`` keeps the ``k`` largest
  saliencies and zeroes the rest; the kept saliencies *scale* their channels,
  so the predictor is trained end to end through the winners' values, with
  the paper's L1 penalty ``λ·mean(g)`` on the saliency (:func:`gate_penalty`).
* ``"hard_concrete"`` — input-dependent L0 gates (Louizos et al. 2018): the
  predictor gives the log-alpha of a hard-concrete variable
  ``z = clip(sigmoid((log u − log(1−u) + log α)/β)·(ζ − γ) + γ, 0, 1)``,
  ``u ~ U(0, 1)`` during training (:func:`hard_concrete_sample`), the
  deterministic ``clip(sigmoid(log α)·(ζ − γ) + γ, 0, 1)`` at test time
  (:func:`hard_concrete_mean`), with the paper's constants ``β = 2/3``,
  ``γ = −0.1``, ``ζ = 1.1`` and the expected-L0 penalty
  ``P(z ≠ 0) = sigmoid(log α − β·log(−γ/ζ))`` (:func:`expected_l0`). The top-k
  of the density is taken on ``log α``, and a gate that is exactly 0 skips its
  channel even inside the top k (so at ``density=1`` the gates are the plain,
  naturally sparse L0 gates).

**Density is a runtime argument.** ``k = clip(floor(d·C + ½), 1, C)`` (f32
arithmetic, :func:`num_active`), so one trained model serves every operating
point. On the *masked* path (:meth:`GatedConv.__call__`) ``d`` may be a
Python float, a traced scalar or a per-example ``(batch,)`` array: selection
ranks the channels with one stable sort, so changing ``d`` never retraces. The
*gathered* path (:func:`apply_gathered`, or :func:`make_gathered` for serving at a
fixed operating point; for batch-1 / small-batch inference)
computes only the active channels: it gathers the ``k`` active output columns
of every kernel (and the matching input rows of the next layer) into dense
arrays with a static ``k`` — one compilation per distinct tuple of ``k``, not
per density — and equals the masked path up to float summation order.

Ties between equal scores go to the lower channel index on both paths.

Statistics: :func:`active_counts` (nonzero gates per example and layer),
:func:`active_fraction`, :func:`effective_flops` (multiply-accumulates per
example that an ideal gathered kernel performs, predictor included) from the
model's :class:`LayerCost` table. :func:`adaptive_select` /
:func:`adaptive_predict` implement the confidence cascade: run at the lowest
density, escalate while ``max softmax < threshold``; every run made counts
toward the compute spent.

Gated zoo models with the layer shapes (and parameter paths) of
:class:`sparsejax.models.LeNet5` and :class:`sparsejax.models.MNIST1DCNN`:
:class:`GatedLeNet5`, :class:`GatedMNIST1DCNN` (their ``kernel``/``bias``
leaves sit at the zoo paths, so a trained dense model's weights load into
them, see :func:`load_dense_params`).

References:
  Gao, Zhao, Dudziak, Mullins & Xu (2019), Dynamic Channel Pruning: Feature
  Boosting and Suppression, ICLR (FBS: subsample ``ss(x) = mean|x|``, predictor,
  ``wta_k``, L1 on the saliency). Louizos, Welling & Kingma (2018), Learning
  Sparse Neural Networks through L0 Regularization, ICLR (hard concrete,
  β = 2/3, γ = −0.1, ζ = 1.1, eq. 12 expected L0, test-time estimator). Yu,
  Yang, Xu, Yang & Huang (2019), Slimmable Neural Networks, ICLR (one model,
  several widths, trained with sampled widths). Bolukbasi, Wang, Dekel &
  Saligrama (2017), Adaptive Neural Networks for Efficient Inference, ICML
  (confidence-based early exit).

Example:
  >>> import jax, jax.numpy as jnp
  >>> from flax import nnx
  >>> model = GatedMNIST1DCNN(rngs=nnx.Rngs(0))
  >>> x = jnp.ones((2, 40))
  >>> logits, gates = model.with_gates(x, density=0.2)
  >>> active_counts(gates)["conv2"].tolist()        # k = floor(0.2·25 + ½) = 5
  [5, 5]
  >>> fast = apply_gathered(*nnx.split(model), x, model.active_k(0.2))
  >>> bool(jnp.allclose(fast, logits, atol=1e-5))
  True
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.nn.initializers import Initializer
from jax.typing import DTypeLike

from sparsejax.models import _shapes
from sparsejax.structures import Neurons
from sparsejax.train import Batch, StepFn, TrainState
from sparsejax.tree import named_leaves

__all__ = [
    "BETA",
    "GAMMA",
    "GATE_KINDS",
    "ZETA",
    "AdaptiveResult",
    "Gate",
    "GatedConv",
    "GatedLeNet5",
    "GatedLinear",
    "GatedMNIST1DCNN",
    "GatedPredictions",
    "LayerCost",
    "active_count",
    "active_counts",
    "active_fraction",
    "adaptive_predict",
    "adaptive_select",
    "apply_gathered",
    "check_density",
    "dense_flops",
    "effective_flops",
    "expected_l0",
    "gate_penalty",
    "gated_predictions",
    "hard_concrete_mean",
    "hard_concrete_sample",
    "init_gates_from_filters",
    "load_dense_params",
    "make_gated_train_step",
    "make_gathered",
    "num_active",
    "topk_mask",
]

BETA = 2.0 / 3.0
"""Hard-concrete temperature β (Louizos et al. 2018)."""
GAMMA = -0.1
"""Hard-concrete stretch lower end γ (Louizos et al. 2018)."""
ZETA = 1.1
"""Hard-concrete stretch upper end ζ (Louizos et al. 2018)."""
GATE_KINDS = ("fbs", "hard_concrete")
"""The gate kinds: FBS saliency with k-winner-take-all, and input-dependent hard-concrete L0."""

GLOROT_NORMAL = nnx.initializers.glorot_normal()
TORCH_DEFAULT = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
# Predictor init: small weights, bias so that every gate starts open (FBS saliency ≈ 1,
# hard-concrete log α = 3: z = 1 with probability ≈ 0.8 and P(z ≠ 0) ≈ 0.99), so a dense
# model loaded into a gated one computes (almost) the same function at density 1.
_GATE_KERNEL_INIT = nnx.initializers.normal(0.01)
_GATE_BIAS = {"fbs": 1.0, "hard_concrete": 3.0}
_EPS = 1e-6


# --------------------------------------------------------------------------- density and top-k


def _is_traced(x: Any) -> bool:
    try:
        np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return True
    return False


def check_density(density: Any, name: str = "density") -> Any:
    """Validate a density ``d ∈ (0, 1]`` (fraction of channels kept).

    Args:
      density: a Python/numpy number, a concrete array of any shape (every entry
        checked) or a traced array (not checkable; clipped by :func:`active_count`).
      name: the argument's name for the error message.

    Returns:
      A Python ``float`` for scalar numbers, otherwise the array as ``float32``.

    Raises:
      TypeError: a bool, string or other non-numeric value.
      ValueError: a value ``<= 0``, ``> 1`` or NaN, naming ``name`` and the value.
    """
    if isinstance(density, bool) or isinstance(density, (str, bytes)):
        raise TypeError(f"{name} must be a number in (0, 1], got {density!r}")
    if isinstance(density, numbers.Real):
        d = float(density)
        if not (0.0 < d <= 1.0):  # NaN fails both comparisons
            raise ValueError(f"{name} must be in (0, 1], got {density!r}")
        return d
    if _is_traced(density):
        return jnp.asarray(density, jnp.float32)
    arr = np.asarray(density)
    if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype} ({density!r})")
    bad = ~((arr > 0) & (arr <= 1))
    if np.any(bad):
        raise ValueError(f"{name} must be in (0, 1], got {arr[bad].reshape(-1)[0]!r} in {density!r}")
    if arr.ndim == 0:
        return float(arr)
    return jnp.asarray(arr, jnp.float32)


def num_active(density: float, channels: int) -> int:
    """Static number of active channels ``k = clip(floor(d·C + ½), 1, C)`` (f32 arithmetic).

    Computed in float32 exactly like :func:`active_count`, so the gathered and the masked
    paths always agree. Pure.

    Raises:
      ValueError: ``density`` outside ``(0, 1]`` or NaN; ``channels < 1``.
    """
    d = check_density(density)
    if not isinstance(d, float):
        raise TypeError(f"num_active needs a Python scalar density, got {density!r}")
    channels = _shapes.positive_int("channels", channels)
    k = math.floor(np.float32(d) * np.float32(channels) + np.float32(0.5))
    return int(min(max(k, 1), channels))


def active_count(density: Any, channels: int) -> jax.Array:
    """:func:`num_active` for traced or per-example densities: ``int32`` of ``density``'s shape."""
    d = jnp.asarray(density, jnp.float32)
    k = jnp.floor(d * jnp.float32(channels) + jnp.float32(0.5))
    return jnp.clip(k, 1, channels).astype(jnp.int32)


def _descending_order(scores: jax.Array) -> jax.Array:
    # 0 - s turns -0.0 into 0.0, so signed zeros never change the order; stable sort: ties
    # go to the lower channel index.
    return jnp.argsort(jnp.float32(0.0) - scores, axis=-1, stable=True)


def topk_mask(scores: jax.Array, k: Any) -> jax.Array:
    """Boolean mask of the ``k`` largest scores along the last axis, exactly ``k`` per row.

    Args:
      scores: ``(..., C)`` float scores.
      k: int, or an int array of shape ``scores.shape[:-1]`` (one ``k`` per row); may be
        traced (selection is by rank from one stable sort, so ``k`` is not static).

    Returns:
      ``bool (..., C)``; ties go to the lower index. Pure; jit/vmap-safe.
    """
    scores = jnp.asarray(scores)
    order = _descending_order(scores)
    rank = jnp.argsort(order, axis=-1)  # inverse permutation: rank of each channel
    k = jnp.broadcast_to(jnp.asarray(k, jnp.int32), scores.shape[:-1])
    return rank < k[..., None]


# --------------------------------------------------------------------------- hard concrete


def hard_concrete_sample(
    log_alpha: jax.Array,
    key: jax.Array,
    *,
    beta: float = BETA,
    gamma: float = GAMMA,
    zeta: float = ZETA,
) -> jax.Array:
    """A hard-concrete sample ``z ∈ [0, 1]`` of ``log_alpha``'s shape (Louizos et al. eq. 10).

    ``u ~ U(ε, 1−ε)``, ``s = sigmoid((log u − log(1−u) + log α)/β)``,
    ``z = clip(s·(ζ − γ) + γ, 0, 1)``. Reparameterized: differentiable in ``log_alpha``.
    Pure given ``key``.
    """
    log_alpha = jnp.asarray(log_alpha, jnp.float32)
    u = jax.random.uniform(key, log_alpha.shape, jnp.float32, _EPS, 1.0 - _EPS)
    s = jax.nn.sigmoid((jnp.log(u) - jnp.log1p(-u) + log_alpha) / beta)
    return jnp.clip(s * (zeta - gamma) + gamma, 0.0, 1.0)


def hard_concrete_mean(
    log_alpha: jax.Array, *, gamma: float = GAMMA, zeta: float = ZETA
) -> jax.Array:
    """Test-time gate ``clip(sigmoid(log α)·(ζ − γ) + γ, 0, 1)`` (Louizos et al. §3). Pure."""
    return jnp.clip(jax.nn.sigmoid(jnp.asarray(log_alpha)) * (zeta - gamma) + gamma, 0.0, 1.0)


def expected_l0(
    log_alpha: jax.Array, *, beta: float = BETA, gamma: float = GAMMA, zeta: float = ZETA
) -> jax.Array:
    """``P(z ≠ 0) = sigmoid(log α − β·log(−γ/ζ))`` per gate (Louizos et al. eq. 12). Pure."""
    return jax.nn.sigmoid(jnp.asarray(log_alpha) - beta * math.log(-gamma / zeta))


# --------------------------------------------------------------------------- gated layers


class Gate(NamedTuple):
    """The gate of one layer for a batch.

    Attributes:
      values: ``(batch, C)`` multipliers of the output channels; exactly ``0.0`` for a
        skipped channel (FBS: the winners' saliencies; hard concrete: ``z``).
      logits: ``(batch, C)`` raw predictor outputs (FBS: pre-ReLU saliency; hard concrete:
        ``log α``), used by :func:`gate_penalty`.
    """

    values: jax.Array
    logits: jax.Array


def _check_kind(gate: str) -> str:
    if gate not in GATE_KINDS:
        raise ValueError(f"gate must be one of {GATE_KINDS}, got {gate!r}")
    return gate


def _select(kind: str, logits: jax.Array, density: Any, key: jax.Array | None) -> jax.Array:
    """Gate values ``(batch, C)`` of ``kind`` at ``density`` (masked path)."""
    channels = logits.shape[-1]
    k = active_count(density, channels)
    if k.ndim == 1:
        if k.shape[0] != logits.shape[0]:
            raise ValueError(
                f"a per-example density needs shape (batch,) = ({logits.shape[0]},), "
                f"got {k.shape}"
            )
    elif k.ndim != 0:
        raise ValueError(f"density must be a scalar or a (batch,) array, got shape {k.shape}")
    if kind == "fbs":
        saliency = jax.nn.relu(logits)
        return jnp.where(topk_mask(saliency, k), saliency, 0.0)
    z = hard_concrete_sample(logits, key) if key is not None else hard_concrete_mean(logits)
    return jnp.where(topk_mask(logits, k), z, 0.0)


def _gathered_select(kind: str, logits: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """Static-k selection for the gathered path: sorted indices ``(k,)`` and their gates.

    The same channels as :func:`topk_mask` (ties to the lower index, ``-0.0 == 0.0``) from
    one ``lax.top_k`` instead of a full stable sort: on the CPU a 500-channel selection
    takes 9 µs (top-k and the sort of its k indices) instead of 55 µs at batch 1.
    """
    scores = jax.nn.relu(logits) if kind == "fbs" else logits
    _, top = jax.lax.top_k(jnp.where(scores == 0, jnp.zeros_like(scores), scores), k)
    idx = jnp.sort(top, axis=-1)
    values = jnp.take(scores if kind == "fbs" else hard_concrete_mean(logits), idx, axis=-1)
    return idx, values


def _channels_last(v: jax.Array, ndim: int) -> jax.Array:
    """``(C,) -> (1, ..., 1, C)`` of rank ``ndim`` (explicit: rank promotion is an error)."""
    return v.reshape((1,) * (ndim - 1) + (v.shape[-1],))


def _conv_specs(n: int) -> tuple[str, str, str]:
    spatial = "DHW"[-n:] if n <= 3 else None
    if spatial is None:
        raise ValueError(f"GatedConv supports 1 to 3 spatial axes, got {n}")
    return f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"


class GatedConv(nnx.Module):
    """A convolution whose output channels are gated per input (FBS or hard-concrete L0).

    Parameters: ``kernel (*kernel_size, in, out)``, ``bias (out,)`` (the paths and shapes
    of ``nnx.Conv``) and the predictor ``gate`` (an ``nnx.Linear`` ``in → out``, input:
    the per-channel mean absolute value of ``x`` over its spatial positions, FBS's
    ``ss(x)``).

    Args:
      in_features: input channels ``C_in``.
      out_features: output channels ``C``.
      kernel_size: spatial kernel size (1 to 3 axes).
      strides: stride per spatial axis (an int applies to all).
      padding: ``"SAME"``, ``"VALID"`` or explicit ``((lo, hi), ...)`` pairs.
      gate: ``"fbs"`` or ``"hard_concrete"``.
      kernel_init: kernel initializer; bias starts at 0.
      param_dtype: parameter dtype.
      rngs: ``nnx.Rngs`` (``params`` stream).

    References:
      Gao et al. (2019), FBS, ICLR. Louizos, Welling & Kingma (2018), L0, ICLR.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: Sequence[int],
        *,
        strides: int | Sequence[int] = 1,
        padding: str | Sequence[tuple[int, int]] = "SAME",
        gate: str = "fbs",
        kernel_init: Initializer = GLOROT_NORMAL,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        in_features = _shapes.positive_int("in_features", in_features)
        out_features = _shapes.positive_int("out_features", out_features)
        kernel_size = _shapes.positive_ints("kernel_size", kernel_size)
        n = len(kernel_size)
        if isinstance(strides, int):
            strides = (strides,) * n
        self.strides = _shapes.positive_ints("strides", strides)
        if len(self.strides) != n:
            raise ValueError(f"strides {strides!r} must have {n} entries like kernel_size")
        if isinstance(padding, str):
            if padding not in ("SAME", "VALID"):
                raise ValueError(f"padding must be 'SAME', 'VALID' or pairs, got {padding!r}")
            self.padding: Any = padding
        else:
            self.padding = tuple((int(lo), int(hi)) for lo, hi in padding)
            if len(self.padding) != n:
                raise ValueError(f"padding {padding!r} must have {n} (lo, hi) pairs")
        self.gate_kind = _check_kind(gate)
        self.kernel = nnx.Param(
            kernel_init(rngs.params(), (*kernel_size, in_features, out_features), param_dtype)
        )
        self.bias = nnx.Param(jnp.zeros((out_features,), param_dtype))
        self.gate = nnx.Linear(
            in_features,
            out_features,
            kernel_init=_GATE_KERNEL_INIT,
            bias_init=nnx.initializers.constant(_GATE_BIAS[gate]),
            param_dtype=param_dtype,
            rngs=rngs,
        )

    def _conv(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
        specs = _conv_specs(kernel.ndim - 2)
        dn = jax.lax.conv_dimension_numbers(x.shape, kernel.shape, specs)
        return jax.lax.conv_general_dilated(
            x, kernel.astype(x.dtype), self.strides, self.padding, dimension_numbers=dn
        )

    def predictor(self, x: jax.Array) -> jax.Array:
        """Gate logits ``(batch, C)`` from ``x (batch, *spatial, C_in)``: ``gate(mean|x|)``."""
        return self.gate(jnp.mean(jnp.abs(x), axis=tuple(range(1, x.ndim - 1))))

    def __call__(
        self, x: jax.Array, density: Any = 1.0, *, key: jax.Array | None = None
    ) -> tuple[jax.Array, Gate]:
        """Masked path: ``((conv(x) + bias) · gate, Gate)``; ``x (batch, *spatial, C_in)``.

        Args:
          x: NHWC (or NWC, ...) input.
          density: fraction of channels kept, scalar or ``(batch,)``, may be traced.
          key: PRNG key for stochastic hard-concrete gates (training); ``None`` for the
            deterministic test-time gates. Unused by FBS.

        Returns:
          ``y (batch, *spatial', C)`` with skipped channels exactly 0, and the :class:`Gate`.
        """
        logits = self.predictor(x)
        values = _select(self.gate_kind, logits, density, key)
        y = self._conv(x, self.kernel[...])
        y = y + _channels_last(self.bias[...], y.ndim)
        shape = (values.shape[0],) + (1,) * (y.ndim - 2) + (values.shape[1],)
        return y * values.reshape(shape).astype(y.dtype), Gate(values, logits)

    def gathered(
        self, x: jax.Array, in_idx: jax.Array | None, k: int
    ) -> tuple[jax.Array, jax.Array]:
        """Compute only the ``k`` active channels of ONE example.

        Args:
          x: ``(1, *spatial, k_in)``: the active input channels ``in_idx`` (all ``C_in`` when
            ``in_idx`` is None).
          in_idx: ``int (k_in,)`` indices of the input channels present in ``x``, or None.
          k: static number of active output channels.

        Returns:
          ``(y (1, *spatial', k), idx (k,))``: the active outputs (gate applied) and their
          channel indices, ascending.
        """
        gk, kernel = self.gate.kernel[...], self.kernel[...]
        if in_idx is not None:
            gk = jnp.take(gk, in_idx, axis=0)
        s = jnp.mean(jnp.abs(x), axis=tuple(range(1, x.ndim - 1)))
        logits = s @ gk + self.gate.bias[...][None]
        idx, values = _gathered_select(self.gate_kind, logits[0], k)
        # One gather of the (k_in, k) block: no intermediate copy of k_in full rows.
        kernel = (kernel[..., idx] if in_idx is None
                  else kernel[..., in_idx[:, None], idx[None, :]])
        y = self._conv(x, kernel)
        y = y + _channels_last(jnp.take(self.bias[...], idx), y.ndim)
        return y * _channels_last(values, y.ndim).astype(y.dtype), idx


class GatedLinear(nnx.Module):
    """A dense layer whose output units are gated per input (FBS or hard-concrete L0).

    Parameters: ``kernel (in, out)``, ``bias (out,)`` (as ``nnx.Linear``) and the
    predictor ``gate`` (``nnx.Linear`` ``in_channels → out``). The input is a flattened
    channels-last feature map ``(batch, P·in_channels)`` (``P`` positions); the predictor
    sees the per-channel mean absolute value over the ``P`` positions (a ``in_channels``
    vector, not all ``in`` features, so that it stays cheap). ``in_channels=None`` means
    ``in_channels = in`` (``P = 1``).

    Args:
      in_features: ``in = P·in_channels``.
      out_features: output units ``C``.
      in_channels: channels of the flattened input (must divide ``in_features``).
      gate: ``"fbs"`` or ``"hard_concrete"``.
      kernel_init: kernel initializer; bias starts at 0.
      param_dtype: parameter dtype.
      rngs: ``nnx.Rngs``.

    References:
      Gao et al. (2019), FBS, ICLR. Louizos, Welling & Kingma (2018), L0, ICLR.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        in_channels: int | None = None,
        gate: str = "fbs",
        kernel_init: Initializer = GLOROT_NORMAL,
        param_dtype: DTypeLike = jnp.float32,
        rngs: nnx.Rngs,
    ):
        in_features = _shapes.positive_int("in_features", in_features)
        out_features = _shapes.positive_int("out_features", out_features)
        channels = in_features if in_channels is None else _shapes.positive_int(
            "in_channels", in_channels
        )
        if in_features % channels:
            raise ValueError(
                f"in_channels={channels} must divide in_features={in_features}"
            )
        self.in_channels = channels
        self.gate_kind = _check_kind(gate)
        self.kernel = nnx.Param(kernel_init(rngs.params(), (in_features, out_features), param_dtype))
        self.bias = nnx.Param(jnp.zeros((out_features,), param_dtype))
        self.gate = nnx.Linear(
            channels,
            out_features,
            kernel_init=_GATE_KERNEL_INIT,
            bias_init=nnx.initializers.constant(_GATE_BIAS[gate]),
            param_dtype=param_dtype,
            rngs=rngs,
        )

    def predictor(self, x: jax.Array) -> jax.Array:
        """Gate logits ``(batch, C)`` from ``x (batch, in)``."""
        s = jnp.mean(jnp.abs(x.reshape(x.shape[0], -1, self.in_channels)), axis=1)
        return self.gate(s)

    def __call__(
        self, x: jax.Array, density: Any = 1.0, *, key: jax.Array | None = None
    ) -> tuple[jax.Array, Gate]:
        """Masked path: ``((x @ kernel + bias) · gate, Gate)`` for ``x (batch, in)``.

        Arguments as in :meth:`GatedConv.__call__`.
        """
        logits = self.predictor(x)
        values = _select(self.gate_kind, logits, density, key)
        y = x @ self.kernel[...] + self.bias[...][None]
        return y * values.astype(y.dtype), Gate(values, logits)

    def gathered(
        self, x: jax.Array, in_idx: jax.Array | None, k: int
    ) -> tuple[jax.Array, jax.Array]:
        """Active units of ONE example.

        Args:
          x: ``(1, P, k_in)`` (or any shape ending in ``k_in`` with ``P·k_in`` entries after
            the leading 1): the active input channels ``in_idx`` at every position.
          in_idx: ``int (k_in,)`` or None (all ``in_channels``).
          k: static number of active units.

        Returns:
          ``(y (1, k), idx (k,))``.
        """
        c = self.in_channels
        kernel = self.kernel[...].reshape(-1, c, self.kernel[...].shape[-1])  # (P, C_in, C)
        gk = self.gate.kernel[...]
        if in_idx is not None:
            gk = jnp.take(gk, in_idx, axis=0)
        k_in = c if in_idx is None else in_idx.shape[0]
        x = x.reshape(1, kernel.shape[0], k_in)
        logits = jnp.mean(jnp.abs(x), axis=1) @ gk + self.gate.bias[...][None]
        idx, values = _gathered_select(self.gate_kind, logits[0], k)
        # One gather of the (P, k_in, k) block, as in GatedConv.gathered.
        w = (kernel[..., idx] if in_idx is None
             else kernel[:, in_idx[:, None], idx[None, :]]).reshape(-1, k)
        y = x.reshape(1, -1) @ w + jnp.take(self.bias[...], idx)[None]
        return y * values[None].astype(y.dtype), idx


# --------------------------------------------------------------------------- cost model


@dataclasses.dataclass(frozen=True)
class LayerCost:
    """How the MACs of one layer depend on the active channels (per example).

    ``MACs = macs_per_pair · a_in · a_out`` where ``a_in`` is the number of active channels
    of ``source`` (``in_channels`` when ``source`` is None) and ``a_out`` the active
    channels of this layer (``out_channels`` when not ``gated``). A gated layer's predictor
    adds ``a_in · out_channels`` MACs.

    Attributes:
      name: the layer's attribute name (its parameter path prefix).
      macs_per_pair: output positions × kernel window (conv) or input positions (dense).
      source: the gated layer whose channels feed this one, or None.
      in_channels: input channels.
      out_channels: output channels.
      gated: whether this layer's outputs are gated.
    """

    name: str
    macs_per_pair: int
    source: str | None
    in_channels: int
    out_channels: int
    gated: bool


def dense_flops(costs: Sequence[LayerCost]) -> int:
    """Dense MACs per example (no predictor): ``Σ macs_per_pair · C_in · C_out``.

    Equals :func:`sparsejax.metrics.flops` of the matching zoo model on one example.
    """
    return sum(c.macs_per_pair * c.in_channels * c.out_channels for c in costs)


def effective_flops(
    costs: Sequence[LayerCost],
    counts: Mapping[str, Any],
    *,
    include_predictor: bool = True,
) -> jax.Array:
    """Multiply-accumulates per example given the active channels of each gated layer.

    Args:
      costs: the model's ``costs`` table (:class:`LayerCost`).
      counts: ``{layer: int (batch,) or scalar}`` active output channels of every gated
        layer (:func:`active_counts`, or the kept filters of a statically pruned model).
      include_predictor: add the predictors' MACs (``a_in · C_out`` per gated layer);
        ``False`` for a statically pruned model, which has no predictor.

    Returns:
      ``float32`` MACs, of the broadcast shape of the counts (``(batch,)``). Pure.

    Raises:
      ValueError: a gated layer missing from ``counts``.
    """
    total = jnp.zeros((), jnp.float32)
    for c in costs:
        if c.gated and c.name not in counts:
            raise ValueError(f"counts has no entry for gated layer {c.name!r}; got {list(counts)}")
        a_in = (
            jnp.asarray(counts[c.source], jnp.float32)
            if c.source is not None
            else jnp.float32(c.in_channels)
        )
        a_out = jnp.asarray(counts[c.name], jnp.float32) if c.gated else jnp.float32(c.out_channels)
        total = total + c.macs_per_pair * a_in * a_out
        if c.gated and include_predictor:
            total = total + a_in * c.out_channels
    return total


def active_counts(gates: Mapping[str, Gate]) -> dict[str, jax.Array]:
    """``{layer: int32 (batch,)}`` number of nonzero gates (channels computed) per example."""
    return {name: jnp.sum(g.values != 0, axis=-1, dtype=jnp.int32) for name, g in gates.items()}


def active_fraction(gates: Mapping[str, Gate]) -> dict[str, jax.Array]:
    """``{layer: float32 (batch,)}`` fraction of channels computed per example."""
    return {
        name: jnp.mean((g.values != 0).astype(jnp.float32), axis=-1) for name, g in gates.items()
    }


def gate_penalty(gates: Mapping[str, Gate], kind: str) -> jax.Array:
    """Sparsity regularizer averaged over every gate of every example and layer (f32[]).

    ``"fbs"``: ``mean(relu(logits))``, the L1 norm of the saliency (Gao et al. 2019).
    ``"hard_concrete"``: ``mean(P(z ≠ 0))`` (:func:`expected_l0`; Louizos et al. eq. 12).
    Multiply by the regularization strength λ. Pure.
    """
    _check_kind(kind)
    parts = []
    for g in gates.values():
        parts.append(jnp.mean(jax.nn.relu(g.logits) if kind == "fbs" else expected_l0(g.logits)))
    return jnp.mean(jnp.stack(parts))


# --------------------------------------------------------------------------- gated models


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


# --------------------------------------------------------------------------- inference helpers


@functools.partial(jax.jit, static_argnames=("graphdef", "ks"))
def apply_gathered(
    graphdef: nnx.GraphDef, state: nnx.State, x: jax.Array, ks: tuple[int, ...]
) -> jax.Array:
    """Gathered (compute-only-active-channels) inference of a gated model, jitted.

    Every example runs :meth:`gathered_one` (vmapped): the ``k`` active output columns of
    each kernel and the matching input rows of the next layer are gathered into dense
    arrays of static shape, so one compilation serves every density with the same ``ks``.

    Args:
      graphdef: from ``nnx.split(model)``.
      state: the model's full state from ``nnx.split(model)``.
      x: ``(batch, *input_shape)``.
      ks: static active channels per gated layer, ``model.active_k(density)``.

    Returns:
      ``(batch, classes)`` logits; equal to ``model(x, density)`` (deterministic gates)
      up to float summation order.

    ``graphdef`` is a static argument, so every call hashes it to find the compiled
    program (about 40 µs on the CPU for the MNIST-1D CNN, more than its whole batch-1
    forward); for latency-critical serving use :func:`make_gathered`.
    """
    return _gathered_batch(graphdef, state, x, ks)


def _gathered_batch(graphdef, state, x, ks):
    model = nnx.merge(graphdef, state)
    return jax.vmap(lambda xi: model.gathered_one(xi, ks))(x)


def make_gathered(graphdef: nnx.GraphDef, ks: Sequence[int]) -> Callable[..., jax.Array]:
    """A jitted ``f(state, x) -> logits`` of the gathered path for fixed ``ks``.

    The same computation as :func:`apply_gathered`, with ``graphdef`` and ``ks`` closed
    over: a call looks up no static argument, so the host cost per call is only the
    flattening of ``state``. Build one function per operating point and keep it.

    Args:
      graphdef: from ``nnx.split(model)`` of a gated model.
      ks: active channels per gated layer, ``model.active_k(density)`` (positive ints).

    Returns:
      ``f(state, x)``: ``state`` the model's full state, ``x (batch, *input_shape)``;
      returns ``(batch, classes)`` logits.
    """
    ks = tuple(ks)
    for i, k in enumerate(ks):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"ks[{i}] must be a positive int, got {k!r}")
    ks = tuple(int(k) for k in ks)
    return jax.jit(functools.partial(_gathered_batch, graphdef, ks=ks))


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _predict(graphdef, state, x, density):
    model = nnx.merge(graphdef, state)
    logits, gates = model.with_gates(x, density)
    counts = active_counts(gates)
    return logits, counts, effective_flops(model.costs, counts)


class GatedPredictions(NamedTuple):
    """Per-example outputs of :func:`gated_predictions` (numpy arrays)."""

    logits: np.ndarray  # (N, classes)
    counts: dict[str, np.ndarray]  # {layer: (N,)} active channels
    flops: np.ndarray  # (N,) effective MACs, predictor included


def gated_predictions(
    model: _GatedModel, x: Any, density: float, *, batch_size: int = 1000
) -> GatedPredictions:
    """Logits, active channels and effective MACs of every example at ``density``.

    Deterministic gates, masked path, one compilation for every density (the density is
    traced). Host loop over batches of ``batch_size``.

    Raises:
      ValueError: a density outside ``(0, 1]``.
    """
    density = check_density(density)
    batch_size = _shapes.positive_int("batch_size", batch_size)
    graphdef, state = nnx.split(model)
    x = np.asarray(x)
    outs = [
        jax.device_get(_predict(graphdef, state, x[i : i + batch_size], jnp.float32(density)))
        for i in range(0, x.shape[0], batch_size)
    ]
    logits = np.concatenate([o[0] for o in outs])
    counts = {n: np.concatenate([o[1][n] for o in outs]) for n in outs[0][1]}
    flops = np.concatenate([np.broadcast_to(o[2], (o[0].shape[0],)) for o in outs])
    return GatedPredictions(logits, counts, flops)


class AdaptiveResult(NamedTuple):
    """Outcome of the confidence cascade (:func:`adaptive_select`).

    Attributes:
      logits: ``(batch, classes)`` logits of the level where each example stopped.
      level: ``int32 (batch,)`` index of that level in the density ladder.
      flops: ``(batch,)`` MACs spent: the sum over every level run (0 .. level).
    """

    logits: jax.Array
    level: jax.Array
    flops: jax.Array


def adaptive_select(logits: jax.Array, flops: jax.Array, threshold: float) -> AdaptiveResult:
    """The escalation policy, given every level's outputs.

    An example runs at level 0 (the lowest density); while its confidence
    ``max softmax(logits)`` is below ``threshold`` and a higher level remains, it is run
    again at the next level. The cost is cumulative (the low-density runs that failed are
    paid for).

    Args:
      logits: ``(L, batch, classes)``, level ``l`` = the model at the ``l``-th density of
        an increasing ladder.
      flops: ``(L, batch)`` or ``(L,)`` effective MACs of each level.
      threshold: confidence threshold in ``[0, 1]`` (``0``: always level 0; ``1``: always
        the last level, paying for all).

    Returns:
      :class:`AdaptiveResult`. Pure; jit-safe for a traced ``threshold``.

    References:
      Bolukbasi et al. (2017), Adaptive Neural Networks for Efficient Inference, ICML.
    """
    logits = jnp.asarray(logits)
    if logits.ndim != 3:
        raise ValueError(f"logits must be (levels, batch, classes), got shape {logits.shape}")
    if not _is_traced(threshold) and not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    levels, batch = logits.shape[:2]
    flops = jnp.broadcast_to(jnp.asarray(flops, jnp.float32).reshape(levels, -1), (levels, batch))
    # threshold 1 means "never confident": a float32 softmax can round to exactly 1.0
    confident = jnp.max(jax.nn.softmax(logits, axis=-1), axis=-1) >= threshold  # (L, B)
    confident = (confident & (jnp.asarray(threshold) < 1.0)).at[-1].set(True)
    level = jnp.argmax(confident, axis=0).astype(jnp.int32)  # first confident level
    chosen = jnp.take_along_axis(logits, level[None, :, None], axis=0)[0]
    spent = jnp.sum(jnp.where(jnp.arange(levels)[:, None] <= level[None, :], flops, 0.0), axis=0)
    return AdaptiveResult(chosen, level, spent)


def adaptive_predict(
    model: _GatedModel, x: jax.Array, densities: Sequence[float], threshold: float
) -> AdaptiveResult:
    """Run the confidence cascade of ``model`` on ``x (batch, ...)`` (masked path, jitted).

    Every level runs on the whole batch (a simulation of the cascade: the cost an example
    is charged is only that of the levels it reached); the density is a traced argument,
    so the ladder compiles once.

    Args:
      model: a gated model.
      x: a batch.
      densities: strictly increasing ladder, each in ``(0, 1]``.
      threshold: escalate while ``max softmax < threshold``.

    Returns:
      :class:`AdaptiveResult` (:func:`adaptive_select` over the ladder).

    Raises:
      ValueError: an invalid or non-increasing ladder.
    """
    ds = [check_density(d, f"densities[{i}]") for i, d in enumerate(densities)]
    if not ds or any(b <= a for a, b in itertools.pairwise(ds)):
        raise ValueError(f"densities must be a non-empty increasing sequence, got {densities!r}")
    graphdef, state = nnx.split(model)
    outs = [_predict(graphdef, state, x, jnp.float32(d)) for d in ds]  # one compilation
    return adaptive_select(
        jnp.stack([o[0] for o in outs]),
        jnp.stack([jnp.broadcast_to(o[2], (o[0].shape[0],)) for o in outs]),
        threshold,
    )


# --------------------------------------------------------------------------- training


def make_gated_train_step(
    *,
    min_density: float = 0.25,
    max_density: float = 1.0,
    penalty: float = 0.0,
    sandwich: bool = True,
    loss_fn: Callable[[jax.Array, jax.Array], jax.Array] = (
        optax.softmax_cross_entropy_with_integer_labels
    ),
    jit: bool = True,
) -> StepFn:
    """A train step for gated models, for :func:`sparsejax.train.train`.

    Each example of each step runs at its own density ``d ~ U(min_density, max_density)``
    (slimmable-style sampled widths, so one model serves every density in that range);
    with ``sandwich`` (default) examples ``i ≡ 0 (mod 4)`` run at ``min_density`` and
    ``i ≡ 1 (mod 4)`` at ``max_density`` instead, so both ends of the range are trained at
    every step (the sandwich rule of Yu & Huang 2019). Hard-concrete gates are sampled. Loss = ``mean(loss_fn) + penalty · gate_penalty``.
    The randomness is ``fold_in(state.key, state.step)``: a pure function of the state.

    Args:
      min_density: lower end of the sampled densities, in ``(0, 1]``.
      max_density: upper end, in ``[min_density, 1]``.
      penalty: λ of :func:`gate_penalty` (FBS L1 / expected L0), ``>= 0``.
      sandwich: pin a quarter of each batch to each end of the density range.
      loss_fn: per-example loss ``(logits, labels) -> (batch,)``.
      jit: wrap in ``jax.jit``.

    Returns:
      ``step(state, (x, y)) -> (state, {"loss", "penalty", "accuracy"})``.

    References:
      Yu et al. (2019), Slimmable Neural Networks; Yu & Huang (2019), Universally Slimmable
      Networks and Improved Training Techniques (sandwich rule); Gao et al. (2019);
      Louizos et al. (2018).
    """
    lo = check_density(min_density, "min_density")
    hi = check_density(max_density, "max_density")
    if hi < lo:
        raise ValueError(f"max_density={max_density!r} is below min_density={min_density!r}")
    if isinstance(penalty, bool) or not isinstance(penalty, numbers.Real) or not penalty >= 0:
        raise ValueError(f"penalty must be a number >= 0, got {penalty!r}")
    lam = float(penalty)

    def step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        x, y = batch
        k_density, k_gate = jax.random.split(jax.random.fold_in(state.key, state.step))
        density = jax.random.uniform(k_density, (x.shape[0],), jnp.float32, lo, hi)
        if sandwich:
            slot = jnp.arange(x.shape[0]) % 4
            density = jnp.where(slot == 0, lo, jnp.where(slot == 1, hi, density))

        def objective(params):
            model = nnx.merge(state.graphdef, params, state.rest, copy=True)
            logits, gates = model.with_gates(x, density, key=k_gate)
            reg = gate_penalty(gates, model.gate_kind)
            loss = jnp.mean(loss_fn(logits, y)) + lam * reg
            return loss, (logits, reg)

        (loss, (logits, reg)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        acc = jnp.mean(jnp.argmax(logits, -1) == y)
        new = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new, {"loss": loss, "penalty": reg, "accuracy": acc}

    return jax.jit(step) if jit else step


def init_gates_from_filters(gated: _GatedModel, spread: float = 0.1) -> None:
    """Start every gate predictor at the static L1 filter ranking (in place).

    The predictor's weights become 0 and its biases ``base + spread · r``, with ``r`` in
    ``[0, 1]`` the rank of the channel's filter L1 norm in its layer (0: the smallest;
    equal norms: the lower index ranks lower, as in :func:`sparsejax.prune`) and
    ``base`` the gate kind's initial bias (FBS 1.0, hard concrete 3.0). At step 0 every
    input selects, at every density, the channels that L1-norm filter pruning (Li et al.
    2017) keeps, with multipliers near 1 (FBS ``1 .. 1 + spread``, hard concrete 1): the
    gated model starts as the statically pruned one, and training makes the choice
    input-dependent. Call after :func:`load_dense_params`, so the norms are the trained
    filters'.

    Args:
      gated: a gated zoo model (:class:`GatedLeNet5`, :class:`GatedMNIST1DCNN`).
      spread: bias range of the ranking, ``> 0`` (small: the winners' FBS saliencies
        scale their channels).

    Raises:
      ValueError: ``spread`` not a positive number.
    """
    if isinstance(spread, bool) or not isinstance(spread, numbers.Real) or not spread > 0:
        raise ValueError(f"spread must be a number > 0, got {spread!r}")
    base = _GATE_BIAS[gated.gate_kind]
    for name in gated.gated_layers:
        layer = getattr(gated, name)
        kernel = layer.kernel[...]
        channels = kernel.shape[-1]
        norms = Neurons().reduce(jnp.abs(kernel), "l1").reshape(channels)  # as sj.prune
        rank = jnp.argsort(jnp.argsort(norms, stable=True), stable=True)
        bias = base + spread * rank.astype(jnp.float32) / max(channels - 1, 1)
        gate = layer.gate
        gate.kernel[...] = jnp.zeros_like(gate.kernel[...])
        gate.bias[...] = bias.astype(gate.bias[...].dtype)


def load_dense_params(gated: _GatedModel, dense_params: nnx.State) -> None:
    """Copy a trained zoo model's ``nnx.Param`` state into ``gated`` (in place).

    Every ``kernel``/``bias`` of the dense model (e.g. ``nnx.state(LeNet5(...), nnx.Param)``)
    must exist in the gated model with the same path and shape; the gate predictors keep
    their initialisation.

    Raises:
      ValueError: a dense path missing from the gated model, or a shape mismatch (naming
        the path and both shapes).
    """
    target = dict(named_leaves(nnx.state(gated, nnx.Param)))
    for name, value in named_leaves(dense_params):
        if name not in target:
            raise ValueError(f"dense parameter {name!r} has no counterpart in the gated model")
        if tuple(target[name].shape) != tuple(np.shape(value)):
            raise ValueError(
                f"shape mismatch at {name!r}: dense {tuple(np.shape(value))}, gated "
                f"{tuple(target[name].shape)}"
            )
    nnx.update(gated, dense_params)
