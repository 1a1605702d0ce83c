"""Pruning methods by name: the studies' built-in ones and those a user registers.

A :class:`Method` is a score plus a selection (scope, structure, normalisation) and a
schedule (``one_shot`` or ``gradual``), or a function that returns the mask itself. A study
computes one :class:`ScoreInputs` per trained model and asks each method for its mask;
:func:`register_method` adds a user's method, which then runs in every study that compares
methods of its kind (unstructured: ``comparison``; structured: ``structured``), e.g. from a
module given to ``--plugin``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, Literal

import jax

from sparsejax.structures import Neurons

__all__ = [
    "Method",
    "ScoreInputs",
    "get_method",
    "method_names",
    "register_method",
    "unregister_method",
]

PyTree = Any


class ScoreInputs:
    """What a method sees of one trained model (one seed); gradients and Hessians on demand.

    Attributes:
      params: the trained parameters (a pytree; pruned entries are 0).
      loss_fn: ``loss_fn(params, batch) -> scalar`` (cross-entropy of the model).
      batch: ``(x, y)`` scoring batch (training data, never the test split).
      batches: ``(x[B, b, ...], y[B, b])`` several scoring mini-batches (structured study).
      seed: the training seed of this model.
      key: a PRNG key for this model, distinct per seed.
      mask: the current mask (iterative pruning: masks only shrink), or ``None``.
      prunable: the leaves a method may prune (the study's choice, e.g. hidden layers).
      options: study settings a method may read (``hutchinson_samples``, ``round``, ...).
      extras: study-specific helpers (the structured study: ``val_metric``, ``layer_costs``,
        ``sensitivity_grid``, ``max_drop``).
    """

    def __init__(self, params: PyTree, *, grads: PyTree | None = None,
                 loss_fn: Callable[[PyTree, Any], jax.Array] | None = None,
                 batch: Any = None, batches: Any = None, seed: int = 0,
                 key: jax.Array | None = None, mask: PyTree | None = None,
                 prunable: Any = None, options: Mapping[str, Any] | None = None,
                 extras: Mapping[str, Any] | None = None):
        self.params, self.loss_fn, self.batch, self.batches = params, loss_fn, batch, batches
        self.seed, self.mask, self.prunable = seed, mask, prunable
        self._key = key
        self.options = dict(options or {})
        self.extras = dict(extras or {})
        self._grads = grads

    def _need(self, what: str, *names: str) -> None:
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise ValueError(f"ScoreInputs: {what} needs {', '.join(missing)}, which this "
                             "study does not provide here")

    @property
    def key(self) -> jax.Array:
        """This model's PRNG key (default: ``fold_in(key(300), seed)``)."""
        if self._key is None:
            self._key = jax.random.fold_in(jax.random.key(300), self.seed)
        return self._key

    @property
    def grads(self) -> PyTree:
        """Gradient of ``loss_fn`` at ``params`` on ``batch`` (computed once)."""
        if self._grads is None:
            self._need("grads", "loss_fn", "batch")
            self._grads = jax.jit(jax.grad(self.loss_fn))(self.params, self.batch)
        return self._grads

    @functools.cached_property
    def _hessian(self) -> PyTree:
        from sparsejax import scores

        self._need("hessian_diag", "loss_fn", "batch")
        samples = int(self.options.get("hutchinson_samples", 64))
        return scores.hessian_diag_hutchinson(self.loss_fn, self.params, self.batch,
                                              jax.random.key(100 + self.seed), samples)

    def hessian_diag(self) -> PyTree:
        """Hutchinson estimate of the Hessian diagonal on ``batch`` with
        ``options["hutchinson_samples"]`` probes (64 by default), computed once."""
        return self._hessian


@dataclasses.dataclass(frozen=True)
class Method:
    """A pruning method: ``score`` + selection + schedule, or a ``prune`` function.

    Attributes:
      name: the registry name (a valid ``--methods`` value).
      score: ``score(inputs: ScoreInputs) -> scores`` (higher = keep). For ``gradual``
        methods it is called inside the optimizer with ``inputs.params`` and ``inputs.grads``
        only (traced: pure jax).
      scope: ``"layer"`` (each layer to the sparsity) or ``"global"`` (ranked together).
      structure: ``None`` (unstructured) or a :mod:`sparsejax.structures` granularity, e.g.
        ``sparsejax.Neurons()`` (whole units: the structured study).
      normalize: ``prune(normalize=...)`` of global rankings (``"l2"``: per-layer L2).
      schedule: ``"one_shot"`` (prune, then fine-tune) or ``"gradual"`` (prune during
        fine-tuning with the study's polynomial schedule, Zhu & Gupta 2017).
      prune: instead of a score, ``prune(inputs, sparsity) -> mask`` (one-shot only).
      reference: the paper, for tables and ``sparsejax methods``.
      description: one line for listings.
    """

    name: str
    score: Callable[[ScoreInputs], PyTree] | None = None
    scope: Literal["layer", "global"] = "layer"
    structure: Any = None
    normalize: str | None = None
    schedule: Literal["one_shot", "gradual"] = "one_shot"
    prune: Callable[[ScoreInputs, float], PyTree] | None = None
    reference: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "_-" for c in self.name):
            raise ValueError(f"Method: name must be letters, digits, '_' or '-', got {self.name!r}")
        if (self.score is None) == (self.prune is None):
            raise ValueError(f"Method {self.name!r}: give exactly one of score and prune")
        if self.scope not in ("layer", "global"):
            raise ValueError(f"Method {self.name!r}: scope must be 'layer' or 'global', "
                             f"got {self.scope!r}")
        if self.schedule not in ("one_shot", "gradual"):
            raise ValueError(f"Method {self.name!r}: schedule must be 'one_shot' or "
                             f"'gradual', got {self.schedule!r}")
        if self.schedule == "gradual" and self.prune is not None:
            raise ValueError(f"Method {self.name!r}: a gradual method needs a score")

    @property
    def kind(self) -> str:
        """``"unstructured"`` or ``"structured"`` (which studies run it)."""
        return "unstructured" if self.structure is None else "structured"

    def mask(self, inputs: ScoreInputs, sparsity: float) -> PyTree:
        """The one-shot mask at ``sparsity`` (a fraction of ``inputs.prunable``'s weights or
        units; with ``inputs.mask``, masks only shrink)."""
        if self.prune is not None:
            return self.prune(inputs, sparsity)
        import sparsejax as sj

        extra = {} if self.structure is None else {"structure": self.structure}
        return sj.prune(self.score(inputs), sparsity, params=inputs.params, mask=inputs.mask,
                        prunable=inputs.prunable, scope=self.scope, normalize=self.normalize,
                        **extra)


_REGISTRY: dict[str, Method] = {}
_BUILTIN: set[str] = set()


def register_method(method: Method | str, score: Callable | None = None, *,
                    overwrite: bool = False, **fields: Any) -> Method:
    """Register a pruning method; the studies of its kind can then run it by name.

    Args:
      method: a :class:`Method`, or its name with ``score`` (and ``fields``) to build one.
      score: see :class:`Method`.
      overwrite: replace an earlier registration (never a built-in method).
      **fields: other :class:`Method` fields (``scope``, ``structure``, ``prune``, ...).

    Returns:
      The registered :class:`Method`.

    Raises:
      ValueError: a taken name, or an invalid method.

    Example:
      >>> import jax.numpy as jnp
      >>> m = register_method("global_squared", lambda inputs: jax.tree.map(
      ...     jnp.square, inputs.params), scope="global", overwrite=True)
      >>> m.kind, "global_squared" in method_names("unstructured")
      ('unstructured', True)
    """
    if not isinstance(method, Method):
        method = Method(name=method, score=score, **fields)
    elif score is not None or fields:
        raise ValueError("register_method: pass a Method, or a name with its fields")
    if method.name in _REGISTRY and (method.name in _BUILTIN or not overwrite):
        what = "a built-in method" if method.name in _BUILTIN else "already registered"
        raise ValueError(f"register_method: {method.name!r} is {what}"
                         + ("" if method.name in _BUILTIN else "; pass overwrite=True"))
    _REGISTRY[method.name] = method
    return method


def unregister_method(name: str) -> None:
    """Remove a method registered with :func:`register_method` (not a built-in one)."""
    get_method(name)
    if name in _BUILTIN:
        raise ValueError(f"unregister_method: {name!r} is a built-in method")
    del _REGISTRY[name]


def get_method(name: str) -> Method:
    """The registered :class:`Method` ``name``; ``ValueError`` listing the known ones."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def method_names(kind: str | None = None, *, builtin: bool | None = None) -> tuple[str, ...]:
    """Registered method names, built-in first; ``kind``: ``"unstructured"`` /
    ``"structured"``; ``builtin``: only built-in (True) or only registered (False) ones."""
    return tuple(n for n, m in _REGISTRY.items()
                 if (kind is None or m.kind == kind)
                 and (builtin is None or (n in _BUILTIN) == builtin))


def _builtin(method: Method) -> None:
    _REGISTRY[method.name] = method
    _BUILTIN.add(method.name)


def _scores():
    from sparsejax import scores

    return scores


# ------------------------------------------------------------------ unstructured (comparison)
_HAN = "Han et al. 2015"
for _scope in ("global", "layer"):
    _builtin(Method(f"{_scope}_magnitude", lambda i: _scores().magnitude(i.params), _scope,
                    reference=_HAN, description=f"|w|, {_scope} ranking"))
    _builtin(Method(f"{_scope}_gradient", lambda i: _scores().gradient(i.grads), _scope,
                    reference="ShrinkBench", description=f"|g|, {_scope} ranking"))
_builtin(Method("global_taylor", lambda i: _scores().taylor(i.params, i.grads), "global",
                reference="Molchanov et al. 2017", description="|w·g|, global ranking"))
_builtin(Method("global_obd", lambda i: _scores().obd(i.params, i.hessian_diag()), "global",
                reference="LeCun et al. 1990",
                description="½·h·w² with a Hutchinson Hessian diagonal, global ranking"))
_builtin(Method("random", lambda i: _scores().random(i.params, jax.random.key(200 + i.seed)),
                "layer", reference="control", description="U[0, 1) scores, layerwise"))
_builtin(Method("gradual_magnitude", lambda i: _scores().magnitude(i.params), "layer",
                schedule="gradual", reference="Zhu & Gupta 2017",
                description="|w|, layerwise, polynomial schedule during fine-tuning"))


# ------------------------------------------------------------------ structured (units)
def _unit_score(kind: str) -> Callable[[ScoreInputs], PyTree]:
    def score(i: ScoreInputs) -> PyTree:
        s = _scores()
        if kind in ("l1", "l2"):
            return s.filter_norm(i.params, 1 if kind == "l1" else 2, prunable=i.prunable)
        if kind == "taylor":
            return s.mean_group_taylor(i.loss_fn, i.params, i.batches, prunable=i.prunable)
        key = jax.random.key(1000 * i.seed + 7 + int(i.options.get("round", 0)))
        return s.random_units(i.params, key, prunable=i.prunable)

    return score


def _sensitivity_prune(i: ScoreInputs, target: float) -> PyTree:
    """L1 ranking inside each layer, per-layer fractions from the layer-sensitivity curves."""
    import sparsejax as sj
    from sparsejax.sensitivity import allocate_budget, layer_sensitivity

    for name in ("val_metric", "layer_costs", "sensitivity_grid"):
        if name not in i.extras:
            raise ValueError(f"method 'sensitivity' needs ScoreInputs.extras[{name!r}]")
    scores = _unit_score("l1")(i)
    sens = layer_sensitivity(i.extras["val_metric"], i.params, scores,
                             i.extras["sensitivity_grid"], prunable=i.prunable,
                             structure=sj.Neurons(), mask=i.mask)
    if "on_sensitivity" in i.extras:
        i.extras["on_sensitivity"](sens)
    alloc = allocate_budget(sens, target, costs=i.extras["layer_costs"],
                            max_drop=i.extras.get("max_drop"))
    return sj.prune(scores, 0.0, params=i.params, mask=i.mask, prunable=i.prunable,
                    structure=sj.Neurons(), distribution=alloc)


for _kind, _ref in (("l1", "Li et al. 2017"), ("taylor", "Molchanov et al. 2019"),
                    ("random", "control")):
    for _scope in ("layer", "global"):
        _builtin(Method(f"{_kind}_{_scope}", _unit_score(_kind), _scope, Neurons(),
                        reference=_ref, description=f"{_kind} unit scores, {_scope} ranking"))
    if _kind != "random":
        _builtin(Method(f"{_kind}_global_l2", _unit_score(_kind), "global", Neurons(),
                        normalize="l2", reference="Molchanov et al. 2017",
                        description=f"{_kind} unit scores over their layer's L2 norm, global"))
_builtin(Method("sensitivity", structure=Neurons(), prune=_sensitivity_prune,
                reference="Li et al. 2017 (§4.2)",
                description="L1 within layers, per-layer budget from sensitivity curves"))
