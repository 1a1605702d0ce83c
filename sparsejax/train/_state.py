"""The train state: everything that changes during training, as one pytree."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct

from sparsejax import transforms
from sparsejax.masks import apply_mask
from sparsejax.tree import PyTree, named_leaves


@struct.dataclass
class TrainState:
    """Everything that changes during training, as one pytree.

    Under :func:`create_train_states` every array field gets a leading seed
    axis ``S`` (``step: int32[S]``, each params leaf ``[S, *shape]``, ...).

    Attributes:
      step: ``int32[]`` number of optimizer steps taken.
      params: the model's ``nnx.Param`` state (what is differentiated).
      rest: every other variable of the model (``nnx.BatchStat`` running
        statistics, ``nnx.RngKey``/``nnx.RngCount`` of dropout streams,
        non-trainable masks, ...); empty for a plain MLP.
      opt_state: the optax state of ``tx`` (holds the sparsejax mask and
        pruning step when ``tx`` is a sparsejax transform).
      key: typed PRNG key (``jax.random.key``); step ``t`` reseeds the model's
        RNG streams from ``fold_in(key, t)``.
      epoch: ``int32[]`` epoch of the next batch to train on.
      batch: ``int32[]`` index within that epoch of the next batch.
      graphdef: static structure of the model (not a pytree leaf).
      tx: the optimizer (static, not a pytree leaf).
    """

    step: jax.Array
    params: nnx.State
    rest: nnx.State
    opt_state: optax.OptState
    key: jax.Array
    epoch: jax.Array
    batch: jax.Array
    graphdef: nnx.GraphDef = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)

    @classmethod
    def create(
        cls,
        *,
        graphdef: nnx.GraphDef,
        params: nnx.State,
        rest: nnx.State,
        tx: optax.GradientTransformation,
        key: jax.Array | int,
    ) -> TrainState:
        """A state at step 0 and data position ``(0, 0)`` from a model's parts.

        For states whose params come from elsewhere than a freshly built model
        (a trained dense model, one pruned copy per run, ...); otherwise use
        :func:`create_train_state` / :func:`create_train_states`.

        Args:
          graphdef: the model's static structure (``nnx.split(model, nnx.Param, ...)[0]``).
          params: its ``nnx.Param`` state.
          rest: its other variables.
          tx: the optimizer; ``opt_state = tx.init(params)``.
          key: a single key (typed, raw or an int seed): a single-seed state; or
            ``S`` keys (``key<impl>[S]`` or ``uint32[S, 2]``): a state of ``S``
            stacked seeds, where every leaf of ``params`` and ``rest`` has a
            leading axis ``S`` and ``opt_state = jax.vmap(tx.init)(params)``.

        Returns:
          A :class:`TrainState`.

        Raises:
          ValueError: a key batch of rank > 1, or leaves without the leading
            seed axis of a stacked state.

        Example:
          >>> import optax, sparsejax as sj
          >>> graphdef, params, rest = nnx.split(nnx.Linear(4, 3, rngs=nnx.Rngs(0)), nnx.Param, ...)
          >>> state = TrainState.create(graphdef=graphdef, params=params, rest=rest,
          ...                           tx=sj.keep_sparse(optax.sgd(0.1)), key=1)
          >>> int(state.step), state.params["kernel"].shape
          (0, (4, 3))
        """
        key = _as_key(key)
        if key.ndim > 1:
            raise ValueError(f"key must be one key or a 1-D batch of keys, got shape {key.shape}")
        if key.ndim == 0:
            opt_state = tx.init(params)
        else:
            num_seeds = key.shape[0]
            for what, tree in (("params", params), ("rest", rest)):
                for name, leaf in named_leaves(tree):
                    if np.shape(leaf)[:1] != (num_seeds,):
                        raise ValueError(
                            f"TrainState.create: {num_seeds} keys, but the {what} leaf {name!r} "
                            f"has shape {np.shape(leaf)}, without a leading seed axis of size "
                            f"{num_seeds}"
                        )
            opt_state = jax.vmap(tx.init)(params)
        zeros = jnp.zeros(key.shape, jnp.int32)
        return cls(
            step=zeros,
            params=params,
            rest=rest,
            opt_state=opt_state,
            key=key,
            epoch=zeros,
            batch=zeros,
            graphdef=graphdef,
            tx=tx,
        )

    def model(self) -> nnx.Module:
        """A new ``nnx.Module`` holding copies of this state's variables (single-seed states).

        Running it (even in training mode) never changes the state.
        """
        return nnx.merge(self.graphdef, self.params, self.rest, copy=True)

    def with_mask(self, mask: PyTree) -> TrainState:
        """This state with its params masked by ``mask`` and ``mask`` in its optimizer state.

        ``params`` become ``sparsejax.apply_mask(params, mask)`` and the mask of
        the one :func:`~sparsejax.transforms.keep_sparse` or
        :func:`~sparsejax.transforms.pruning` state inside ``opt_state`` is
        replaced (:func:`sparsejax.transforms.with_mask`); everything else is
        kept. One optimizer then serves many masks: build the state with
        ``tx=sparsejax.keep_sparse(inner)`` (all-keep) and give it each run's
        mask. On a freshly created state this equals creating it with
        ``keep_sparse(inner, mask)`` on the masked params, whenever
        ``inner.init`` reads only the shapes of the params (all of optax's
        optimizers).

        Args:
          mask: a mask mirroring ``params``. For a state of ``S`` stacked
            seeds, every mask leaf has a leading axis ``S`` (seed ``i`` gets
            ``mask[i]``, through ``jax.vmap``).

        Returns:
          The masked :class:`TrainState`. Pure; works under ``jit`` and ``vmap``.

        Raises:
          ValueError: the optimizer state holds no sparsejax state or more than
            one, or the mask does not fit the params (naming the path).
        """
        if np.ndim(self.step) == 1:  # stacked seeds: one mask per seed
            return jax.vmap(lambda state, m: state.with_mask(m))(self, mask)
        opt_state = transforms.with_mask(self.opt_state, mask, self.params)
        return self.replace(params=apply_mask(self.params, mask), opt_state=opt_state)


def _as_key(key: Any, name: str = "key") -> jax.Array:
    """A typed PRNG key from a typed key, a raw ``uint32[2]`` key or a Python int."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jax.random.key(int(key))
    if isinstance(key, (jax.Array, np.ndarray)):
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            return key
        if key.dtype == np.uint32 and key.shape[-1:] == (2,):
            return jax.random.wrap_key_data(key)
    raise TypeError(
        f"{name} must be a jax.random.key(...), a raw uint32[..., 2] PRNGKey or an int, got {key!r}"
    )


def _is_variable(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def _plain(tree: Any) -> Any:
    """The same pytree (e.g. an ``nnx.State``) with every ``nnx.Variable`` replaced by its value."""

    def value(v):
        return v.get_value() if hasattr(v, "get_value") else v.value  # flax < 0.12.1: .value

    return jax.tree.map(lambda x: value(x) if _is_variable(x) else x, tree, is_leaf=_is_variable)


def _holds_variables(tree: Any) -> bool:
    return any(_is_variable(x) for x in jax.tree.leaves(tree, is_leaf=_is_variable))


def create_train_state(
    model: nnx.Module,
    tx: optax.GradientTransformation,
    *,
    key: jax.Array | int,
    plain_arrays: bool = False,
) -> TrainState:
    """Split ``model`` and initialise the optimizer: step 0, data position ``(0, 0)``.

    Args:
      model: any ``nnx.Module`` (its ``nnx.Param`` variables are trained; all
        other variables go to ``rest``).
      tx: an optax transformation, e.g. ``optax.adam(1e-3)`` or
        ``sparsejax.transforms.pruning(optax.adam(1e-3), ...)``.
      key: PRNG key (typed, raw or an int seed) for the model's stochastic
        layers during training. Parameter initialisation is the model's own
        business (its ``nnx.Rngs``).
      plain_arrays: store ``params`` and ``rest`` as ``nnx.State`` trees of
        plain arrays instead of ``nnx.Variable`` objects (and so the optimizer
        state too). Same paths (without ``.value``), same training; a jitted
        step no longer rebuilds a Python ``Variable`` object per parameter on
        every call, which is most of the host time of a small model's step
        (``benchmarks/pruning_overhead.py``). Build masks from
        ``state.params`` so that they mirror it.

    Returns:
      A :class:`TrainState`. Pure: ``model`` is not modified.
    """
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be an nnx.Module, got {type(model).__name__}")
    key = _as_key(key)
    if key.shape != ():
        raise ValueError(
            f"key must be a single key, got a batch of shape {key.shape}; for a batch of seeds "
            "use create_train_states"
        )
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    if plain_arrays:
        params, rest = _plain(params), _plain(rest)
    return TrainState.create(graphdef=graphdef, params=params, rest=rest, tx=tx, key=key)


def create_train_states(
    make_model: Callable[[jax.Array], nnx.Module],
    tx: optax.GradientTransformation,
    keys: jax.Array,
    *,
    plain_arrays: bool = False,
) -> TrainState:
    """``S`` independent train states stacked on a leading seed axis, built inside ``jax.vmap``.

    Seed ``i`` is exactly
    ``create_train_state(make_model(k0), tx, key=k1)`` with
    ``k0, k1 = jax.random.split(keys[i])``: the first half of the split
    initialises the model, the second drives its dropout.

    Args:
      make_model: ``key -> nnx.Module``, e.g.
        ``lambda k: LeNet300100(rngs=nnx.Rngs(k))``; traced under ``vmap`` so
        it must be a pure function of the key.
      tx: the optimizer shared by all seeds.
      keys: ``S`` typed keys (``key<impl>[S]``) or raw keys ``uint32[S, 2]``.
      plain_arrays: plain arrays instead of ``nnx.Variable`` objects, as in
        :func:`create_train_state`.

    Returns:
      A :class:`TrainState` whose array leaves have a leading axis ``S``.
    """
    keys = _as_key(keys, "keys")
    if keys.ndim != 1 or keys.shape[0] < 1:
        raise ValueError(f"keys must be a 1-D batch of S >= 1 keys, got shape {keys.shape}")
    model0 = nnx.eval_shape(lambda: make_model(jax.random.split(keys[0])[0]))
    if not isinstance(model0, nnx.Module):
        raise TypeError(f"make_model must return an nnx.Module, got {type(model0).__name__}")
    graphdef = nnx.split(model0, nnx.Param, ...)[0]

    def init_one(k):
        model_key, dropout_key = jax.random.split(k)
        _, params, rest = nnx.split(make_model(model_key), nnx.Param, ...)
        if plain_arrays:
            params, rest = _plain(params), _plain(rest)
        return params, rest, tx.init(params), dropout_key

    params, rest, opt_state, dropout_keys = jax.jit(jax.vmap(init_one))(keys)
    zeros = jnp.zeros(keys.shape, jnp.int32)
    return TrainState(
        step=zeros,
        params=params,
        rest=rest,
        opt_state=opt_state,
        key=dropout_keys,
        epoch=zeros,
        batch=zeros,
        graphdef=graphdef,
        tx=tx,
    )
