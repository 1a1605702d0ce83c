"""The platform a computation targets, for the choices made while tracing it."""

from __future__ import annotations

import jax

__all__ = ["target_device_count", "target_platform"]


def target_platform() -> str:
    """``"cpu"``, ``"gpu"`` or ``"tpu"``: the platform of ``jax.default_device`` where
    one is set (the config option, or the context manager), else
    :func:`jax.default_backend`.

    Choices made while tracing (a Pallas kernel or its jnp reference, a sort or
    counting passes) follow it, so a program placed on the CPU devices of a GPU host
    (``with jax.default_device(jax.devices("cpu")[0])``) gets the CPU's choices.
    Arrays committed to another platform's devices without that setting are not
    seen here.
    """
    device = jax.config.jax_default_device
    if device is None:
        return jax.default_backend()
    platform = device if isinstance(device, str) else device.platform
    return "gpu" if platform in ("cuda", "rocm") else platform


def target_device_count() -> int:
    """The number of devices of :func:`target_platform` (all processes)."""
    return jax.device_count(target_platform())
