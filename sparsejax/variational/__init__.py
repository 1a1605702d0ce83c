"""Sparse variational dropout: NNX layers, the KL term, warm start and conversion to params + mask.

Each weight gets a Gaussian posterior ``w ~ N(θ, σ²)`` under the log-uniform prior
``p(|w|) ∝ 1/|w|`` (additive reparameterization: the parameters are ``θ`` and
``log σ²``); its dropout rate is ``α = σ²/θ²``, used as
``log α = clip(log σ² − log θ², −8, 8)`` (:func:`log_alpha`). The layers
(:class:`VDLinear`, :class:`VDConv`; ``structured=True``: one noise variable per unit or
filter) hold parameters only, train with the local reparameterization trick on noise drawn
from a key given to the call (``model(x, key=key)``) and, in evaluation mode, remove the
weights with ``log α ≥ threshold``. The recipe: :func:`from_dense` (θ from a trained dense
model), then ``sparsejax.train.make_train_step(forward=noisy_forward,
penalty=kl_penalty(N, kl_warmup(W)))`` (``KL(q‖p)`` of :func:`kl_divergence`, Molchanov's
eq. 14 approximation, per example and warmed up), then :func:`to_plain`: the parameters and
mask (plain arrays) of a plain zoo model (``VDLeNet300100`` →
:class:`~sparsejax.models.LeNet300100`, ``VDLeNet5`` → :class:`~sparsejax.models.LeNet5`).

References:
  Molchanov, Ashukha & Vetrov (2017), Variational Dropout Sparsifies Deep
  Neural Networks, ICML (eq. 14 KL approximation, additive reparameterization,
  threshold log α = 3). Kingma, Salimans & Welling (2015), Variational Dropout
  and the Local Reparameterization Trick. Neklyudov, Molchanov, Ashukha &
  Vetrov (2017), Structured Bayesian Pruning via Log-Normal Multiplicative
  Noise. Louizos, Ullrich & Welling (2017), Bayesian Compression for Deep Learning.
"""

from sparsejax.variational._convert import WARM_START_LOG_SIGMA2, from_dense, to_plain
from sparsejax.variational._kl import (
    K1,
    K2,
    K3,
    LOG_ALPHA_MAX,
    LOG_ALPHA_MIN,
    kl_divergence,
    kl_warmup,
    log_alpha,
    neg_kl_approx,
)
from sparsejax.variational._layers import VDConv, VDLinear
from sparsejax.variational._models import VDLeNet5, VDLeNet300100
from sparsejax.variational._training import (
    kl_penalty,
    make_vd_train_step,
    model_kl,
    noisy_forward,
    vd_layers,
)

__all__ = [
    "K1",
    "K2",
    "K3",
    "LOG_ALPHA_MAX",
    "LOG_ALPHA_MIN",
    "WARM_START_LOG_SIGMA2",
    "VDConv",
    "VDLeNet5",
    "VDLeNet300100",
    "VDLinear",
    "from_dense",
    "kl_divergence",
    "kl_penalty",
    "kl_warmup",
    "log_alpha",
    "make_vd_train_step",
    "model_kl",
    "neg_kl_approx",
    "noisy_forward",
    "to_plain",
    "vd_layers",
]
