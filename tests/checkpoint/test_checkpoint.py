"""Tests of sparsejax.checkpoint: bit-exact round trips, resume, corruption, snapshots."""

from __future__ import annotations

import json
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from etils import epath
from flax import nnx

from sparsejax import checkpoint as ckpt
from sparsejax import schedules, scores, transforms
from sparsejax import train as sj_train
from sparsejax.checkpoint import _record, _steps
from sparsejax.checkpoint._record import write_record


class Net(nnx.Module):
    """Linear -> ReLU -> BatchNorm -> Dropout -> Linear (params, batch stats and an RNG stream)."""

    def __init__(self, rngs: nnx.Rngs, hidden: int = 8):
        self.fc1 = nnx.Linear(5, hidden, rngs=rngs)
        self.bn = nnx.BatchNorm(hidden, momentum=0.9, rngs=rngs)
        self.drop = nnx.Dropout(0.25, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, 3, rngs=rngs)

    def __call__(self, x):
        return self.fc2(self.drop(self.bn(nnx.relu(self.fc1(x)))))


# Gradual magnitude pruning (Zhu & Gupta; mask updates at steps 2, 4, 6, 8, 10) around Adam
# inside inject_hyperparams: PruningState > InjectStatefulHyperparamsState > ScaleByAdamState,
# NamedTuples nested in NamedTuples, a mask, counters and a dict of hyperparameters. One shared
# object, so that jit compiles the step once.
TX = transforms.pruning(
    optax.inject_hyperparams(optax.adam)(learning_rate=1e-2),
    score=lambda params, grads: scores.magnitude(params),
    schedule=schedules.polynomial(0.0, 0.5, begin=2, end=10, every=2),
)
STEP = sj_train.make_train_step()


def fresh_state(seed: int = 0, hidden: int = 8, tx=TX) -> sj_train.TrainState:
    return sj_train.create_train_state(Net(nnx.Rngs(seed), hidden), tx, key=jax.random.key(11))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(36, 5)).astype(np.float32)
    y = rng.integers(0, 3, size=36).astype(np.int32)
    return x, y


@pytest.fixture(scope="module")
def trained(data):
    """A state after 7 steps: Adam moments, BN statistics and the position are all non-trivial."""
    state, _ = sj_train.train(
        fresh_state(), *data, batch_size=8, seed=0, steps=7, train_step=STEP, progress=False
    )
    return state


def mask_like(state):
    """A sparsejax mask: full-shape, neuron-shaped (1, out) and scalar leaves."""
    return {
        "fc1": np.arange(40).reshape(5, 8) % 3 != 0,
        "fc2": np.array([[True, False, True]]),
        "bn": np.bool_(True),
    }


def assert_bit_equal(a, b):
    chex.assert_trees_all_equal_structs(a, b)
    chex.assert_trees_all_equal(a, b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype


# --------------------------------------------------------------------------- round trip


def test_round_trip_is_bit_exact_with_named_tuples_keys_masks_and_position(tmp_path, trained):
    assert (int(trained.step), int(trained.epoch), int(trained.batch)) == (7, 1, 3)
    mask = mask_like(trained)
    path = ckpt.save(tmp_path, 7, trained, extra=mask, metadata={"lr": 1e-2, "run": "a"})
    assert path == tmp_path / "7" and ckpt.all_steps(tmp_path) == [7]

    target = fresh_state(seed=1)  # different values, same structure
    out = ckpt.restore(tmp_path, target, extra_target=jax.tree.map(np.ones_like, mask))
    assert out.step == 7 and out.metadata == {"lr": 1e-2, "run": "a"}
    assert_bit_equal(out.state, trained)
    assert_bit_equal(out.extra, jax.tree.map(jnp.asarray, mask))
    # The optimizer state keeps its NamedTuple types, not dicts, and the pruning state its mask.
    prune_state = out.state.opt_state
    assert type(prune_state) is transforms.PruningState and int(prune_state.step) == 7
    hyper = prune_state.inner_state
    assert type(hyper) is type(trained.opt_state.inner_state) and "hyperparams" in hyper._fields
    assert type(hyper.inner_state[0]) is optax.ScaleByAdamState
    assert int(hyper.count) == 7 and int(hyper.inner_state[0].count) == 7
    kept = transforms.current_mask(out.state.opt_state)["fc1"]["kernel"][...]
    assert kept.dtype == bool and 0 < int((~kept).sum()) < kept.size
    # Typed keys (the state's and the dropout stream's) come back as typed keys.
    assert jnp.issubdtype(out.state.key.dtype, jax.dtypes.prng_key)
    assert jnp.issubdtype(out.state.rest["drop"]["rngs"]["key"][...].dtype, jax.dtypes.prng_key)
    # Training continues from the restored state exactly as from the original.
    batch = (np.ones((8, 5), np.float32), np.zeros(8, np.int32))
    chex.assert_trees_all_equal(STEP(out.state, batch), STEP(trained, batch))


def test_restore_into_abstract_target_with_sharding(tmp_path, trained, devices8):
    ckpt.save(tmp_path, 7, trained)
    device = devices8[3]
    target = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(
            a.shape, a.dtype, sharding=jax.sharding.SingleDeviceSharding(device)
        ),
        trained,
    )
    out = ckpt.restore(tmp_path, target, step=7)
    assert_bit_equal(out.state, trained)
    assert out.state.params["fc1"]["kernel"][...].devices() == {device}
    # Without a sharding the arrays land on the default device.
    plain = ckpt.restore(tmp_path, jax.eval_shape(lambda: trained)).state
    assert plain.params["fc1"]["kernel"][...].devices() == {jax.devices()[0]}
    assert_bit_equal(plain, trained)


def test_target_mismatch_names_the_leaf(tmp_path, trained):
    ckpt.save(tmp_path, 7, trained)
    with pytest.raises(
        ValueError,
        match=r"target at 'params/bn/bias' is float32\[4\], but the "
        r"checkpoint .*7 holds float32\[8\]",
    ):
        ckpt.restore(tmp_path, fresh_state(hidden=4))
    with pytest.raises(ValueError, match=r"paths only in the checkpoint: \['step'"):
        ckpt.restore(tmp_path, {"params": trained.params})
    with pytest.raises(ValueError, match="has no extra item"):
        ckpt.restore(tmp_path, trained, extra_target={"a": np.zeros(2)})
    with pytest.raises(ValueError, match=r"no checkpoint of step 3 .* steps: \[7\]"):
        ckpt.restore(tmp_path, trained, step=3)
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        ckpt.restore(tmp_path / "empty", trained)


# --------------------------------------------------------------------------- kill and resume


class Killed(Exception):
    pass


def test_killed_run_resumed_from_checkpoint_ends_bit_identical(tmp_path, data):
    """N=11 steps, checkpoints every 3, killed after step 8: resume from step 6 to 11."""
    x, y = data  # batch 8: 4 batches per epoch, so the resume point is mid-epoch
    common = dict(
        batch_size=8, seed=5, steps=11, train_step=STEP, checkpoint_every=3, progress=False
    )
    reference, _ = sj_train.train(fresh_state(), x, y, checkpoint_dir=tmp_path / "ref", **common)
    assert ckpt.all_steps(tmp_path / "ref") == [6, 9, 11]  # keep=3, final step saved too

    run = tmp_path / "run"

    def kill(state, metrics):
        if int(state.step) == 8:
            raise Killed

    with pytest.raises(Killed):
        sj_train.train(fresh_state(), x, y, checkpoint_dir=run, callback=kill, **common)
    assert ckpt.latest_step(run) == 6

    restored = ckpt.restore(run, fresh_state(seed=99))
    assert restored.step == 6
    assert (int(restored.state.epoch), int(restored.state.batch)) == (1, 2)
    assert restored.metadata == {
        "seed": 5,
        "batch_size": 8,
        "num_examples": 36,
        "epoch": 1,
        "batch": 2,
    }
    resumed, _ = sj_train.train(restored.state, x, y, checkpoint_dir=run, **common)
    assert_bit_equal(resumed, reference)
    # The pruning transform went on from the restored mask to the final 50 % at step 10.
    mask = transforms.current_mask(resumed.opt_state)
    for layer, pruned in (("fc1", 20), ("fc2", 12)):
        kept = np.asarray(mask[layer]["kernel"][...])
        assert int((~kept).sum()) == pruned
        assert np.all(np.asarray(resumed.params[layer]["kernel"][...])[~kept] == 0.0)
    assert ckpt.all_steps(run) == [6, 9, 11]
    assert_bit_equal(ckpt.restore(run, reference).state, reference)


def test_train_resumes_after_a_kill_between_orbax_commit_and_the_record(
    tmp_path, data, monkeypatch
):
    """Killed after orbax committed step 9 but before its record: the run resumes from step
    6 and ends bit-identical (before: "holds steps [9] newer than the state's step 6")."""
    x, y = data
    common = dict(
        batch_size=8, seed=5, steps=11, train_step=STEP, checkpoint_every=3, progress=False
    )
    reference, _ = sj_train.train(fresh_state(), x, y, checkpoint_dir=tmp_path / "ref", **common)
    run = tmp_path / "run"
    write = _record.write_record

    def killed(step_dir, step):
        if step == 9:
            raise Killed
        write(step_dir, step)

    monkeypatch.setattr(_steps, "write_record", killed)
    with pytest.raises(Killed):
        sj_train.train(fresh_state(), x, y, checkpoint_dir=run, **common)
    monkeypatch.undo()
    assert ckpt.all_steps(run) == [3, 6] and (run / "9").is_dir()
    with pytest.warns(RuntimeWarning, match=r"ignoring '.*/9': an interrupted save"):
        restored = ckpt.restore(run, fresh_state(seed=99))
    assert restored.step == 6
    with pytest.warns(RuntimeWarning, match=r"'.*/9' \(incomplete\) moved aside"):
        resumed, _ = sj_train.train(restored.state, x, y, checkpoint_dir=run, **common)
    assert_bit_equal(resumed, reference)
    assert ckpt.all_steps(run) == [6, 9, 11]


def test_train_refuses_a_directory_with_newer_steps(tmp_path, data, trained):
    with pytest.raises(TypeError, match="metadata must be JSON-serialisable"):
        sj_train.train(
            fresh_state(),
            *data,
            batch_size=8,
            seed=0,
            steps=2,
            train_step=STEP,
            checkpoint_dir=tmp_path,
            metadata={"tx": TX},
            progress=False,
        )
    assert ckpt.all_steps(tmp_path) == []
    ckpt.save(tmp_path, 9, trained)
    with pytest.raises(ValueError, match=r"holds steps \[9\] newer than the state's step 0"):
        sj_train.train(
            fresh_state(),
            *data,
            batch_size=8,
            seed=0,
            steps=2,
            train_step=STEP,
            checkpoint_dir=tmp_path,
            progress=False,
        )


# --------------------------------------------------------------------------- retention, clashes


def test_keep_n_retention_and_step_clashes(tmp_path):
    tree = {"w": jnp.arange(6.0).reshape(2, 3), "count": jnp.int32(0)}
    for step in range(1, 6):
        ckpt.save(tmp_path, step, jax.tree.map(lambda a, s=step: a + s, tree), keep=2)
    assert ckpt.all_steps(tmp_path) == [4, 5] and ckpt.latest_step(tmp_path) == 5
    assert int(ckpt.restore(tmp_path, tree).state["count"]) == 5
    with pytest.raises(ValueError, match=r"cannot save step 4 .* already holds steps \[4, 5\]"):
        ckpt.save(tmp_path, 4, tree)
    ckpt.save(tmp_path, 4, tree, overwrite=True)
    assert ckpt.all_steps(tmp_path) == [4]
    assert int(ckpt.restore(tmp_path, tree).state["count"]) == 0
    ckpt.delete(tmp_path, 4)
    assert ckpt.all_steps(tmp_path) == [] and ckpt.latest_step(tmp_path) is None
    with pytest.raises(TypeError, match="metadata must be JSON-serialisable"):
        ckpt.save(tmp_path, 1, tree, metadata={"f": object()})
    with pytest.raises(ValueError, match="step must be an int >= 0, got -1"):
        ckpt.save(tmp_path, -1, tree)
    with pytest.raises(ValueError, match="keep must be None or an int >= 1, got 0"):
        ckpt.save(tmp_path, 1, tree, keep=0)


# --------------------------------------------------------------------------- corruption


def three_steps(directory: pathlib.Path):
    tree = {"w": jnp.arange(12.0).reshape(3, 4), "m": jnp.arange(12).reshape(3, 4) % 2 == 0}
    for step in (1, 2, 3):
        ckpt.save(
            directory, step, jax.tree.map(lambda a, s=step: a + s if a.dtype != bool else a, tree)
        )
    return tree


def data_files(step_dir: pathlib.Path) -> list[pathlib.Path]:
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files, f"no array data files under {step_dir}"
    return files


@pytest.mark.parametrize(
    "damage", ["truncate", "delete", "missing_item", "manifest_edit", "leaf_checksum"]
)
def test_corrupt_latest_falls_back_to_previous_names_it_and_moves_it_aside(tmp_path, damage):
    tree = three_steps(tmp_path)
    step_dir = tmp_path / "3"
    if damage == "truncate":
        for f in data_files(step_dir):
            with open(f, "r+b") as fh:
                fh.truncate(5)
        reason = r"file state/.*d/[0-9a-f]+ has 5 bytes, [0-9]+ were written"
    elif damage == "delete":
        for f in data_files(step_dir):
            f.unlink()
        reason = r"incomplete: file state/.*d/[0-9a-f]+ is missing"
    elif damage == "missing_item":
        for f in (step_dir / "manifest").iterdir():
            f.unlink()
        (step_dir / "manifest").rmdir()
        reason = r"incomplete: file manifest/\S+ is missing"
    else:  # same sizes, readable, but a leaf checksum of the manifest differs
        manifest_file = step_dir / "manifest" / "metadata"
        text = manifest_file.read_text()
        checksum = json.loads(text)["state"][0]["checksum"]  # leaf "m"
        changed = str(checksum)[:-1] + str((int(str(checksum)[-1]) + 1) % 10)
        manifest_file.write_text(
            text.replace(f'"checksum": {checksum}', f'"checksum": {changed}', 1)
        )
        reason = r"file manifest/metadata fails its SHA-256"
        if damage == "leaf_checksum":  # re-committed: only the leaf checksums can tell
            write_record(epath.Path(step_dir), 3)
            reason = rf"state leaf 'm' fails its checksum \(read {checksum}, saved {changed}\)"

    with pytest.raises(ckpt.CorruptCheckpointError, match=rf"{step_dir} \(step 3\).*{reason}"):
        ckpt.restore(tmp_path, tree, step=3)
    with pytest.warns(RuntimeWarning, match=rf"{step_dir} \(step 3\).*moved to .*aside/3\.damaged\..*falling back"):
        out = ckpt.restore(tmp_path, tree)
    assert out.step == 2
    np.testing.assert_array_equal(out.state["w"], np.arange(12.0).reshape(3, 4) + 2)
    # The damaged step is kept aside, so a resumed run saves step 3 again.
    assert ckpt.all_steps(tmp_path) == [1, 2]
    assert [p.name.split(".")[:2] for p in (tmp_path / "aside").iterdir()] == [["3", "damaged"]]
    ckpt.save(tmp_path, 3, tree)
    assert ckpt.restore(tmp_path, tree).step == 3


# When one of several arrays fails to read, orbax can leave a tensorstore callback that fires on
# its closed event loop ("RuntimeError: Event loop is closed", an unraisable exception in a
# background thread). A single-array tree avoids that race; the filter keeps it out of the
# verdict should it still happen.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_unreadable_array_data_of_the_right_size(tmp_path):
    tree = {"w": jnp.arange(12.0).reshape(3, 4)}
    ckpt.save(tmp_path, 1, tree)
    ckpt.save(tmp_path, 2, jax.tree.map(lambda a: a + 1, tree))
    for f in data_files(tmp_path / "2"):  # overwrite every data file with noise of its size
        f.write_bytes(bytes((7 * i + 3) % 256 for i in range(f.stat().st_size)))
    step_dir = tmp_path / "2"
    # Small files carry a SHA-256 in the commit record: the noise is caught before orbax.
    with pytest.raises(ckpt.CorruptCheckpointError, match=r"state/d/\S+ fails its SHA-256"):
        ckpt.restore(tmp_path, tree, step=2)
    write_record(epath.Path(step_dir), 2)  # re-committed: orbax's read must fail instead
    with pytest.raises(ckpt.CorruptCheckpointError, match=rf"{step_dir} \(step 2\) cannot be read"):
        ckpt.restore(tmp_path, tree, step=2)
    with pytest.warns(RuntimeWarning, match=rf"{step_dir} \(step 2\) cannot be read"):
        out = ckpt.restore(tmp_path, tree)
    assert out.step == 1
    np.testing.assert_array_equal(out.state["w"], np.arange(12.0).reshape(3, 4))


def test_uncommitted_save_is_ignored_and_all_corrupt_raises(tmp_path):
    tree = three_steps(tmp_path)
    # A save killed before orbax's final rename leaves only a tmp directory.
    (tmp_path / "4.orbax-checkpoint-tmp-1795305159").mkdir()
    assert ckpt.all_steps(tmp_path) == [1, 2, 3] and ckpt.latest_step(tmp_path) == 3
    with pytest.warns(RuntimeWarning, match=r"ignoring .*4.orbax-checkpoint-tmp-1795305159'"):
        assert ckpt.restore(tmp_path, tree).step == 3
    for step in (1, 2, 3):
        for f in data_files(tmp_path / str(step)):
            f.unlink()
    with (
        pytest.warns(RuntimeWarning),
        pytest.raises(
            ckpt.CorruptCheckpointError,
            match=r"no checkpoint in .* restores:\n.*step 3.*\n.*step 2",
        ),
    ):
        ckpt.restore(tmp_path, tree)


# --------------------------------------------------------------------------- snapshots


def test_named_snapshots_survive_rolling_retention(tmp_path, trained):
    init = fresh_state()
    ckpt.save_snapshot(tmp_path, "init", 0, init.params, metadata={"what": "theta_0"})
    ckpt.save_snapshot(tmp_path, "rewind_7", 7, trained)
    for step in range(8, 12):
        ckpt.save(tmp_path, step, trained, keep=1)
    assert ckpt.all_steps(tmp_path) == [11]
    assert ckpt.snapshot_names(tmp_path) == ["init", "rewind_7"]

    theta0 = ckpt.restore_snapshot(tmp_path, "init", trained.params)
    assert theta0.step == 0 and theta0.metadata == {"what": "theta_0"}
    assert_bit_equal(theta0.state, init.params)
    rewind = ckpt.restore_snapshot(tmp_path, "rewind_7", init)
    assert rewind.step == 7
    assert_bit_equal(rewind.state, trained)

    with pytest.raises(ValueError, match="snapshot 'init' already exists"):
        ckpt.save_snapshot(tmp_path, "init", 0, trained.params)
    ckpt.save_snapshot(tmp_path, "init", 3, trained.params, overwrite=True)
    assert ckpt.restore_snapshot(tmp_path, "init", init.params).step == 3
    with pytest.raises(
        ValueError, match=r"no snapshot 'best' .* snapshots: \['init', 'rewind_7'\]"
    ):
        ckpt.restore_snapshot(tmp_path, "best", init)
    with pytest.raises(ValueError, match="snapshot name must match"):
        ckpt.save_snapshot(tmp_path, "../escape", 0, init.params)
