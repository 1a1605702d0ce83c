"""Dynamic (input-dependent) channel gating and adaptive sparsity at inference.

A gated layer (:class:`GatedConv`, :class:`GatedLinear`) scores its ``C`` output channels
from its own input with a cheap predictor, runs only the ``k`` best for that input and
outputs exactly ``0.0`` on the others. Gate kinds (:data:`GATE_KINDS`): FBS saliency with
k-winner-take-all, and input-dependent hard-concrete L0 gates. **Density is a runtime
argument**, ``k = clip(floor(d·C + ½), 1, C)`` (:func:`num_active`), so one trained model
serves every operating point: the masked path takes ``d`` traced or per example; the
gathered path (:func:`apply_gathered`, :func:`make_gathered`) computes only the active
channels and equals the masked path up to float summation order. Costs:
:class:`LayerCost`, :func:`effective_flops`; the confidence cascade:
:func:`adaptive_predict`; training: :func:`sampled_density_forward` for
:func:`sparsejax.train.make_train_step`; gated zoo models: :class:`GatedLeNet5`,
:class:`GatedMNIST1DCNN` (dense weights load with :func:`load_dense_params`).

References:
  Gao et al. (2019), Dynamic Channel Pruning: Feature Boosting and Suppression, ICLR;
  Louizos et al. (2018), Learning Sparse Neural Networks through L0 Regularization, ICLR;
  Yu et al. (2019), Slimmable Neural Networks, ICLR; Bolukbasi et al. (2017), ICML.

Example:
  >>> import jax.numpy as jnp
  >>> from flax import nnx
  >>> model = GatedMNIST1DCNN(rngs=nnx.Rngs(0))
  >>> logits, gates = model.with_gates(jnp.ones((2, 40)), density=0.2)
  >>> active_counts(gates)["conv2"].tolist()        # k = floor(0.2·25 + ½) = 5
  [5, 5]
  >>> bool(jnp.allclose(apply_gathered(*nnx.split(model), jnp.ones((2, 40)),
  ...                                  model.active_k(0.2)), logits, atol=1e-5))
  True
"""

from sparsejax.dynamic._cost import (
    LayerCost,
    active_counts,
    active_fraction,
    dense_flops,
    effective_flops,
    gate_penalty,
)
from sparsejax.dynamic._gates import (
    BETA,
    GAMMA,
    GATE_KINDS,
    ZETA,
    Gate,
    active_count,
    check_density,
    expected_l0,
    hard_concrete_mean,
    hard_concrete_sample,
    num_active,
    topk_mask,
)
from sparsejax.dynamic._inference import (
    AdaptiveResult,
    GatedPredictions,
    adaptive_predict,
    adaptive_select,
    apply_gathered,
    gated_predictions,
    make_gathered,
)
from sparsejax.dynamic._init import init_gates_from_filters, load_dense_params
from sparsejax.dynamic._layers import GatedConv, GatedLinear
from sparsejax.dynamic._models import GatedLeNet5, GatedMNIST1DCNN
from sparsejax.dynamic._training import make_gated_train_step, sampled_density_forward

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
    "sampled_density_forward",
    "topk_mask",
]
