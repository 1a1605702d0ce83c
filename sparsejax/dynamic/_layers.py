"""Gated layers: :class:`GatedConv` and :class:`GatedLinear`.

A gated layer is a Conv or Dense layer with a cheap auxiliary predictor that scores each
of its ``C`` output channels from the layer's own input, then runs only the ``k`` best
channels for that input and skips the others (their output is exactly ``0.0``)::

    s     = mean |x| over the spatial positions              # (batch, C_in)
    logit = s @ W_g + b_g                                    # (batch, C)   the predictor
    gate  = select_k(logit)                                  # (batch, C)   zero off the top k
    y     = (conv(x, kernel) + bias) * gate                  # (batch, ..., C)

Each layer has two paths: the *masked* path (``__call__``: every channel computed, then
gated; the density may be traced or per example) and the *gathered* path (``gathered``:
one example, only the ``k`` active channels, static ``k``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.nn.initializers import Initializer
from jax.typing import DTypeLike

from sparsejax.dynamic._gates import Gate, _check_kind, _gathered_select, _select
from sparsejax.models import _shapes

GLOROT_NORMAL = nnx.initializers.glorot_normal()
# Predictor init: small weights, bias so that every gate starts open (FBS saliency ≈ 1,
# hard-concrete log α = 3: z = 1 with probability ≈ 0.8 and P(z ≠ 0) ≈ 0.99), so a dense
# model loaded into a gated one computes (almost) the same function at density 1.
_GATE_KERNEL_INIT = nnx.initializers.normal(0.01)
_GATE_BIAS = {"fbs": 1.0, "hard_concrete": 3.0}


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

    Gate kinds: ``"fbs"`` keeps the ``k`` largest saliencies ``relu(logit)``, which scale
    their channels, so the predictor is trained end to end through the winners' values
    (with the L1 penalty of :func:`~sparsejax.dynamic.gate_penalty`); ``"hard_concrete"``
    multiplies the top ``k`` of ``log α = logit`` by hard-concrete gates ``z``
    (:func:`~sparsejax.dynamic.hard_concrete_sample` with a key, else
    :func:`~sparsejax.dynamic.hard_concrete_mean`), trained with the expected-L0 penalty.

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

        ``k = clip(floor(d·C + ½), 1, C)`` channels per example. ``density`` may be a
        Python float, a traced scalar or a per-example ``(batch,)`` array: selection ranks
        the channels with one stable sort, so changing it never retraces.

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

