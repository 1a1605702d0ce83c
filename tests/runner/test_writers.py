"""Metric writers: JSON lines by default, TensorBoard event files read back by TensorBoard."""

import json

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from sparsejax.runner import JsonlWriter, MetricWriter, create_writer
from sparsejax.train import create_train_state, train


def test_jsonl_writer_rows_scopes_and_append(tmp_path):
    path = tmp_path / "m" / "metrics.jsonl"
    with JsonlWriter(path) as w:
        w.write_scalars(10, {"loss": np.float32(0.5), "acc": [0.25, 0.75]})
        w.scoped("dense").write_scalars(20, {"train/minibatch_loss": float("nan")})
    with JsonlWriter(path) as w:  # a resumed run appends
        w.write_scalars(30, {"loss": 0.125})
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 30]
    assert rows[0]["loss"] == 0.5 and rows[0]["acc"] == [0.25, 0.75]
    assert rows[1] == {"step": 20, "time": rows[1]["time"], "dense/train/minibatch_loss": None}
    assert all(isinstance(r["time"], float) for r in rows)
    with pytest.raises(ValueError, match="step must be an int >= 0"):
        JsonlWriter(tmp_path / "x.jsonl").write_scalars(-1, {})


def test_train_writes_minibatch_and_eval_metrics(tmp_path):
    x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    state = create_train_state(nnx.Linear(4, 2, rngs=nnx.Rngs(0)), optax.sgd(0.1),
                               key=jax.random.key(1))
    with create_writer(["jsonl"], tmp_path) as writer:
        train(state, x, y, batch_size=10, seed=0, steps=8, log_every=4, eval_data=(x, y),
              eval_every=4, progress=False, writer=writer.scoped("dense"))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "dense/train/minibatch_loss" in r]
    eval_rows = [r for r in rows if "dense/eval/accuracy" in r]
    assert [r["step"] for r in train_rows] == [4, 8] and [r["step"] for r in eval_rows] == [4, 8]
    assert set(train_rows[0]) == {"step", "time", "dense/train/minibatch_loss",
                                  "dense/train/minibatch_accuracy"}
    assert "dense/eval/confusion" not in eval_rows[0]  # only scalars are written
    with pytest.raises(TypeError, match="write_scalars"):
        train(state, x, y, batch_size=10, seed=0, steps=1, progress=False, writer=object())


def test_progress_lines_when_not_a_terminal(capsys):
    x = np.zeros((20, 3), np.float32)
    y = np.zeros(20, np.int32)
    state = create_train_state(nnx.Linear(3, 2, rngs=nnx.Rngs(0)), optax.sgd(0.1),
                               key=jax.random.key(1))
    train(state, x, y, batch_size=2, seed=0, steps=20, log_every=2, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err  # no carriage-return updates in a log file
    lines = err.splitlines()
    assert len(lines) == 10 and lines[-1].startswith("train step 20/20 (")
    assert "mini-batch loss (mean of 2)" in lines[-1]
    with pytest.raises(ValueError, match="progress must be"):
        train(state, x, y, batch_size=2, seed=0, steps=1, progress="maybe")


def test_create_writer_rejects_unknown_kinds(tmp_path):
    with pytest.raises(ValueError, match="unknown metric writers"):
        create_writer(["wandb"], tmp_path)
    assert isinstance(create_writer([], tmp_path), MetricWriter)


def test_tensorboard_event_files_load_in_tensorboards_reader(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with create_writer(["tensorboard", "jsonl"], tmp_path) as writer:
        for step in (1, 2, 3):
            writer.scoped("dense").write_scalars(step, {"loss": 1.0 / step, "acc": [0.5, 0.7]})
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["tensors"]) | set(acc.Tags()["scalars"])
    assert {"dense/loss", "dense/acc", "dense/acc/seed_0", "dense/acc/seed_1"} <= tags
    events = acc.Tensors("dense/loss") if "dense/loss" in acc.Tags()["tensors"] else None
    values = ([float(np.asarray(tensor_value(e))) for e in events] if events is not None
              else [e.value for e in acc.Scalars("dense/loss")])
    assert [e.step for e in (events or acc.Scalars("dense/loss"))] == [1, 2, 3]
    np.testing.assert_allclose(values, [1.0, 0.5, 1 / 3], rtol=1e-6)
    mean = acc.Tensors("dense/acc")[0]
    assert float(np.asarray(tensor_value(mean))) == pytest.approx(0.6)
    assert (tmp_path / "metrics.jsonl").exists()


def tensor_value(event):
    from tensorboard.util import tensor_util

    return tensor_util.make_ndarray(event.tensor_proto)
