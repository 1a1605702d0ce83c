"""The platform a computation targets, for the choices made while tracing it.

A choice made while tracing (a Pallas kernel or its jnp reference, a sort or counting
passes) must follow the platform the program is *lowered* for, which need not be this
host's: ``jax.export.export(jax.jit(f), platforms=["tpu"])`` lowers for a TPU on a CPU.
:func:`by_platform` stages one branch per platform out with
:func:`jax.lax.platform_dependent`, each traced while :func:`target_platform` returns its
platform (:func:`targeting`); lowering keeps only the branch of the lowering platform.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import jax
from jax import lax

__all__ = [
    "PLATFORMS",
    "by_platform",
    "host_platform",
    "target_device_count",
    "target_platform",
    "targeting",
]

#: The platforms a trace-time choice is made for (``"gpu"``: CUDA and ROCm).
PLATFORMS: tuple[str, ...] = ("cpu", "gpu", "tpu")
#: ``lax.platform_dependent`` keywords of each platform of :data:`PLATFORMS`.
_LOWERING_NAMES: dict[str, tuple[str, ...]] = {
    "cpu": ("cpu",), "gpu": ("cuda", "rocm"), "tpu": ("tpu",)
}

_TARGET: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "sparsejax_target_platform", default=None
)


def host_platform() -> str:
    """``"cpu"``, ``"gpu"`` or ``"tpu"``: the platform of ``jax.default_device`` where one
    is set (the config option, or the context manager), else :func:`jax.default_backend`
    (what :func:`target_platform` returns outside :func:`targeting`)."""
    device = jax.config.jax_default_device
    if device is None:
        return jax.default_backend()
    platform = device if isinstance(device, str) else device.platform
    return "gpu" if platform in ("cuda", "rocm") else platform


def target_platform() -> str:
    """``"cpu"``, ``"gpu"`` or ``"tpu"``: the platform being traced for.

    Inside :func:`targeting` (a branch of :func:`by_platform`) its platform; else the
    platform of ``jax.default_device`` where one is set (the config option, or the
    context manager), else :func:`jax.default_backend`. So a program placed on the CPU
    devices of a GPU host (``with jax.default_device(jax.devices("cpu")[0])``) gets the
    CPU's choices, and a branch staged out for a TPU the TPU's on any host.
    """
    platform = _TARGET.get()
    return host_platform() if platform is None else platform


def target_device_count() -> int:
    """The number of devices of :func:`target_platform` (all processes).

    A platform this host lacks (a branch traced for another platform's lowering) counts
    one device: a program exported for it is taken to run unsharded.
    """
    platform = target_platform()
    if platform in ("cpu", host_platform()):
        return jax.device_count(platform)
    return 1  # not on this host: never initialise its backend to ask


@contextlib.contextmanager
def targeting(platform: str) -> Iterator[None]:
    """While it is open, :func:`target_platform` returns ``platform`` (one of :data:`PLATFORMS`).

    Raises:
      ValueError: ``platform`` not in :data:`PLATFORMS`.
    """
    if platform not in PLATFORMS:
        raise ValueError(f"platform must be one of {PLATFORMS}, got {platform!r}")
    token = _TARGET.set(platform)
    try:
        yield
    finally:
        _TARGET.reset(token)


def by_platform(
    choose: Callable[[], Hashable], run: Callable[..., Any], *args: Any
) -> Any:
    """``run(choice, *args)`` with the ``choice`` of the platform the program is lowered for.

    ``choose()`` is evaluated per platform of :data:`PLATFORMS` under :func:`targeting`
    (so it reads :func:`target_platform`, :func:`target_device_count`); where every
    platform makes the same choice ``run`` is called once, directly. Else each distinct
    choice becomes a branch of :func:`jax.lax.platform_dependent` (``"gpu"`` → ``cuda``
    and ``rocm``; other platforms take the TPU's branch), traced under the platform's
    :func:`targeting`: lowering for one platform keeps its branch only, so a TPU program
    never holds the GPU's Pallas call. Eagerly, only the running platform's branch runs.
    Inside an enclosing branch (:func:`targeting` already open) that platform decides.

    Args:
      choose: a static choice (hashable) of the current target platform.
      run: ``run(choice, *args)``; the branches must return the same shapes and dtypes.
      *args: arrays (pytrees) passed to every branch.

    Returns:
      ``run(choice, *args)`` for the lowering platform's choice.
    """
    if _TARGET.get() is not None:
        return run(choose(), *args)
    choices = {}
    for platform in PLATFORMS:
        with targeting(platform):
            choices[platform] = choose()
    if len(set(choices.values())) == 1:
        return run(choices[PLATFORMS[0]], *args)
    branch_of: dict[Hashable, Callable[..., Any]] = {}

    def branch(platform: str, choice: Hashable) -> Callable[..., Any]:
        if choice not in branch_of:

            def traced(*a: Any, platform=platform, choice=choice) -> Any:
                with targeting(platform):
                    return run(choice, *a)

            branch_of[choice] = traced
        return branch_of[choice]

    # The TPU's branch is the default (other platforms, e.g. plugins, take it too); the
    # platforms choosing differently get their own.
    default = branch("tpu", choices["tpu"])
    per_platform = {
        name: branch(platform, choices[platform])
        for platform in PLATFORMS
        if choices[platform] != choices["tpu"]
        for name in _LOWERING_NAMES[platform]
    }
    return lax.platform_dependent(*args, default=default, **per_platform)
