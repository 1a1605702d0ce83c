"""What the Pallas (Triton) kernels of :mod:`sparsejax.select` and :mod:`sparsejax.block_sparse` share.

Which kernel backend the target platform runs by default, and the Triton compiler
parameters of a ``pallas_call``. Nothing here imports Pallas or Triton at module import:
the Triton module is imported only when a kernel is about to be launched.
"""

from __future__ import annotations

from typing import Any

from sparsejax._platform import target_platform

__all__ = ["default_backend", "triton_compiler_params"]


def default_backend() -> str:
    """``"pallas"`` on NVIDIA GPUs (Triton lowering), ``"reference"`` elsewhere (CPU, TPU).

    The platform is :func:`sparsejax._platform.target_platform`: inside a branch of
    ``sparsejax._platform.by_platform`` the platform that branch is lowered for (so a
    program exported for a TPU never holds a Pallas kernel, and one exported for CUDA
    holds the Triton kernels even when traced on a CPU); elsewhere that of
    ``jax.default_device`` where one is set, else the default backend's.
    """
    return "pallas" if target_platform() == "gpu" else "reference"


def triton_compiler_params(num_warps: int | None, num_stages: int | None) -> Any:
    """``CompilerParams`` of the Pallas Triton backend, robust to the jax 0.7–0.11 renames.

    Always returned when the Triton module imports: passing Triton params makes
    ``pallas_call`` pick the Triton lowering on GPU whatever
    ``jax_pallas_use_mosaic_gpu`` says. ``None`` when the module or class is
    missing (the kernel then runs with ``pallas_call``'s default GPU lowering).
    """
    try:
        from jax.experimental.pallas import triton as plgpu
    except ImportError:  # pragma: no cover - jax builds without the Triton module
        return None
    cls = getattr(plgpu, "CompilerParams", None) or getattr(plgpu, "TritonCompilerParams", None)
    if cls is None:  # pragma: no cover - future renames: fall back to the default lowering
        return None
    return cls(num_warps=num_warps, num_stages=num_stages)
