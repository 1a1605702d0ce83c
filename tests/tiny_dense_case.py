"""A tiny Dense layer (params with an int step counter, grads, a batch, losses) for the score tests."""

import jax
import jax.numpy as jnp

F32 = jnp.float32


def params():
    """A tiny pytree with a Dense layer and an int step counter."""
    return {
        "dense": {
            "kernel": jnp.array([[1.0, -2.0], [0.5, 3.0], [-1.5, 0.25]], F32),
            "bias": jnp.array([0.1, -0.2], F32),
        },
        "step": jnp.array(7, jnp.int32),
    }


def grads():
    return {
        "dense": {
            "kernel": jnp.array([[0.5, 1.0], [-2.0, -0.5], [4.0, 2.0]], F32),
            "bias": jnp.array([-1.0, 0.5], F32),
        },
        "step": jnp.array(0, jnp.int32),
    }


def batch():
    x = jnp.array(
        [[0.2, -1.0, 0.5], [1.5, 0.3, -0.7], [-0.4, 0.8, 1.1], [0.9, -0.6, 0.0], [0.1, 0.2, 0.3]],
        F32,
    )
    y = jnp.array([0, 1, 1, 0, 1], jnp.int32)
    return {"x": x, "y": y}


def forward(params, x):
    return x @ params["dense"]["kernel"] + params["dense"]["bias"]


def example_loss(params, example):
    logits = forward(params, example["x"])
    return -jax.nn.log_softmax(logits)[example["y"]]


def mean_loss(params, batch):
    return jnp.mean(jax.vmap(example_loss, in_axes=(None, 0))(params, batch))
