"""Network slimming: the BatchNorm scale ``|γ|`` as the score of the filters it normalizes.

:func:`bn_conv_pairs` pairs every BatchNorm scale with the conv kernel whose output it
normalizes (explicitly or by the same-module naming convention); :func:`bn_scale` places
``|γ|`` on that kernel as unit scores (Liu et al. 2017).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

from sparsejax.scores._activations import neuron_scores
from sparsejax.scores._units import _check_float
from sparsejax.tree import Prunable, PyTree, named_leaves

_BN_TOKEN = re.compile(r"^(batch_?norm|bn|norm)(.*)$", re.IGNORECASE)


def _conventional_conv(bn_path: str) -> str | None:
    """``blocks/0/bn1/scale`` -> ``blocks/0/conv1/kernel``; ``norms/3/scale`` -> ``convs/3/kernel``."""
    parts = bn_path.split("/")
    if len(parts) < 2 or parts[-1] != "scale":
        return None
    module = parts[:-1]
    for i in range(len(module) - 1, -1, -1):
        m = _BN_TOKEN.match(module[i])
        if m:
            token = m.group(1)
            conv = "Conv" if token[:1].isupper() else "conv"
            return "/".join([*module[:i], conv + m.group(2), *module[i + 1 :], "kernel"])
    return None


def bn_conv_pairs(
    params: PyTree, bn_to_conv: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The BatchNorm scale → conv kernel pairing used by :func:`bn_scale`.

    With ``bn_to_conv`` given, its keys are BatchNorm scale paths (or module
    paths, ``"/scale"`` is appended) and its values conv kernel paths (or module
    paths, ``"/kernel"`` appended). Otherwise the *same-module convention* pairs
    every leaf ``…/<bn-name>/scale`` whose module name starts with ``bn``,
    ``norm`` or ``batchnorm``/``batch_norm`` (any case) with the kernel of the
    module of the same name with that token replaced by ``conv``: ``bn1`` →
    ``conv1``, ``bn`` → ``conv``, ``norms/3`` → ``convs/3``, Linen's
    ``BatchNorm_0`` → ``Conv_0``.

    Returns:
      ``{bn_scale_path: conv_kernel_path}`` in ``jax.tree.leaves`` order of the scales.

    Raises:
      ValueError: a given path that is not a parameter, a scale whose size
        differs from the conv's output units, or (convention) no pair found or a
        BatchNorm scale whose conventional conv does not exist — the message
        names the paths and asks for an explicit ``bn_to_conv``.
    """
    leaves = dict(named_leaves(params))
    names = list(leaves)

    def resolve(path: str, suffix: str, what: str) -> str:
        if path in leaves:
            return path
        if f"{path}/{suffix}" in leaves:
            return f"{path}/{suffix}"
        raise ValueError(f"bn_to_conv {what} {path!r} is not a parameter path; paths are {names}")

    pairs: dict[str, str] = {}
    if bn_to_conv is not None:
        if not isinstance(bn_to_conv, Mapping):
            raise TypeError(f"bn_to_conv must be a mapping {{bn_path: conv_path}}, got {bn_to_conv!r}")
        if not bn_to_conv:
            raise ValueError("bn_to_conv is empty; give at least one {bn_path: conv_path} pair")
        for bn, conv in bn_to_conv.items():
            pairs[resolve(bn, "scale", "key")] = resolve(conv, "kernel", "value")
    else:
        for name in names:
            conv = _conventional_conv(name)
            if conv is None:
                continue
            if conv not in leaves:
                raise ValueError(
                    f"BatchNorm scale {name!r} has no conv kernel at the conventional path "
                    f"{conv!r}; pass bn_to_conv={{{name!r}: <conv kernel path>}}"
                )
            pairs[name] = conv
        if not pairs:
            raise ValueError(
                "no BatchNorm scale found by the same-module convention (a leaf "
                "'.../bn*/scale', '.../norm*/scale' or '.../BatchNorm*/scale'); pass "
                f"bn_to_conv={{bn_scale_path: conv_kernel_path}} explicitly. Paths are {names}"
            )
    seen: dict[str, str] = {}
    for bn, conv in pairs.items():
        if conv in seen:
            raise ValueError(
                f"conv kernel {conv!r} is paired with two BatchNorm scales, {seen[conv]!r} and "
                f"{bn!r}"
            )
        seen[conv] = bn
        g_shape, k_shape = np.shape(leaves[bn]), np.shape(leaves[conv])
        if len(g_shape) != 1 or not k_shape or g_shape[0] != k_shape[-1]:
            raise ValueError(
                f"BatchNorm scale {bn!r} has shape {g_shape} but conv kernel {conv!r} has shape "
                f"{k_shape}: the scale must be a vector of its {k_shape[-1:] or '?'} output units"
            )
    return pairs


def bn_scale(
    params: PyTree,
    bn_to_conv: Mapping[str, str] | None = None,
    *,
    prunable: Prunable = None,
) -> PyTree:
    """Network slimming: ``|γ|`` of a BatchNorm as the score of the conv filters it normalizes.

    Liu et al. (2017) train with an L1 penalty on the BatchNorm scales ``γ`` and
    prune the channels with small ``|γ|``. Here ``|γ|`` of each BatchNorm is
    placed on the conv kernel whose output it normalizes, in the ``Neurons``
    mask shape. Pairing: :func:`bn_conv_pairs` (explicit ``bn_to_conv`` or the
    same-module convention). Kernels with no BatchNorm get the scalar 0.0: prune
    only the paired kernels, e.g. ``prunable=[re.escape(c) + "$" for c in
    bn_conv_pairs(params).values()]``. Pure.

    Args:
      params: parameter pytree holding the BatchNorm scales and conv kernels.
      bn_to_conv: optional ``{bn_scale_path: conv_kernel_path}``.
      prunable: if given, every prunable leaf must be a paired kernel and vice
        versa (checked by :func:`sparsejax.scores.neuron_scores`).

    Returns:
      Unit scores ``(1, …, 1, out)`` on paired kernels, scalar 0.0 elsewhere.

    Raises:
      ValueError: see :func:`bn_conv_pairs`; a prunable kernel without BatchNorm.

    References:
      Liu, Li, Shen, Huang, Yan, Zhang. "Learning Efficient Convolutional Networks
      through Network Slimming", ICCV 2017.
    """
    pairs = bn_conv_pairs(params, bn_to_conv)
    leaves = dict(named_leaves(params))
    for bn in pairs:
        _check_float(bn, leaves[bn], "BatchNorm scale")
    by_conv = {conv: jnp.abs(jnp.asarray(leaves[bn], jnp.float32)) for bn, conv in pairs.items()}
    return neuron_scores(params, by_conv, prunable)
