"""Resumable training: a run stopped at any step, or during a save, ends exactly where an uninterrupted one does."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from test_clip import CPU, _clip_settings, _pairs, one_torch_thread  # noqa: F401  (fixture reused)

from tasks.clip import checkpoints as checkpoints_module
from tasks.clip.checkpoints import LATEST, Checkpointer
from tasks.clip.loop import train
from tasks.clip.model import initial_bundle

CFG = _clip_settings(epochs=3, batch_size=8, learning_rate=2e-3, warmup_fraction=0.2, weight_decay=0.01, seed=0)
TRAIN, VAL = _pairs(40, seed=0), _pairs(16, seed=1)  # 5 batches per epoch, 15 steps


class Killed(BaseException):
    """Stands in for SIGKILL inside one process: nothing after the raise runs."""


def run(folder: Path, every_steps: int = 1, kill_after_saves: int | None = None):
    bundle = initial_bundle(CFG, TRAIN.captions, None, CPU)
    checkpointer = Checkpointer(folder, "fingerprint", every_steps)
    if kill_after_saves is not None:
        save, saves = checkpointer.save, []

        def save_then_die(*args, **kwargs) -> None:
            save(*args, **kwargs)
            saves.append(1)
            if len(saves) == kill_after_saves:
                raise Killed

        checkpointer.save = save_then_die  # type: ignore[method-assign]
    history, best = train(bundle, TRAIN, VAL, CFG, checkpointer)
    return history, best, {name: tensor.clone() for name, tensor in bundle.model.state_dict().items()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory):
    torch.set_num_threads(1)
    return run(tmp_path_factory.mktemp("straight"))


def assert_same_run(resumed, reference) -> None:
    history, best, weights = resumed
    ref_history, ref_best, ref_weights = reference
    assert best == ref_best
    for got, want in zip(history, ref_history, strict=True):
        assert got.epoch == want.epoch
        assert got.train_loss == pytest.approx(want.train_loss, abs=1e-6)
        assert got.val_loss == pytest.approx(want.val_loss, abs=1e-6)
    for name, tensor in ref_weights.items():
        assert torch.allclose(weights[name], tensor, atol=1e-6), name


@pytest.mark.parametrize("kill_after_saves", [2, 5, 7, 11])  # mid-epoch steps and epoch ends alike
def test_a_run_killed_after_any_checkpoint_resumes_to_the_same_result(tmp_path: Path, uninterrupted, kill_after_saves: int) -> None:
    with pytest.raises(Killed):
        run(tmp_path, kill_after_saves=kill_after_saves)
    state = Checkpointer(tmp_path, "fingerprint").peek()
    assert state is not None and state.global_step > 0
    assert_same_run(run(tmp_path), uninterrupted)


def test_a_kill_during_a_save_leaves_the_previous_checkpoint_usable(tmp_path: Path, uninterrupted, monkeypatch) -> None:
    replace, renames = os.replace, []

    def die_on_the_fourth_rename(source, target) -> None:
        renames.append(target)
        if len(renames) == 4:
            raise Killed  # the temporary file is written, the rename never happens
        replace(source, target)

    monkeypatch.setattr(checkpoints_module.os, "replace", die_on_the_fourth_rename)
    with pytest.raises(Killed):
        run(tmp_path)
    monkeypatch.setattr(checkpoints_module.os, "replace", replace)
    assert (tmp_path / (LATEST + ".tmp")).is_file()
    state = Checkpointer(tmp_path, "fingerprint").peek()
    assert state is not None and state.global_step == 3  # the saves after steps 1-3 landed, the one after step 4 did not
    assert_same_run(run(tmp_path), uninterrupted)


def test_a_checkpoint_of_other_params_is_set_aside_not_resumed(tmp_path: Path, uninterrupted) -> None:
    with pytest.raises(Killed):
        run(tmp_path, kill_after_saves=3)
    foreign = Checkpointer(tmp_path, "other-fingerprint")
    assert foreign.peek() is None
    bundle = initial_bundle(CFG, TRAIN.captions, None, CPU)
    history, _ = train(bundle, TRAIN, VAL, CFG, foreign)
    assert len(history) == CFG.epochs
    assert (tmp_path.with_name(tmp_path.name + ".previous") / LATEST).is_file()


def test_an_unreadable_checkpoint_starts_a_fresh_run(tmp_path: Path, uninterrupted) -> None:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / LATEST).write_bytes(b"\x00" * 100)
    assert_same_run(run(tmp_path), uninterrupted)


def test_checkpoints_are_safetensors_with_json_metadata_only(tmp_path: Path) -> None:
    with pytest.raises(Killed):
        run(tmp_path, kill_after_saves=2)
    with safe_open(str(tmp_path / LATEST), framework="pt") as handle:
        metadata = handle.metadata()
        keys = set(handle.keys())
    assert metadata["format"].startswith("bookcover-train-state")
    assert {"rng.torch"} <= keys and any(k.startswith("optimizer.") for k in keys) and any(k.startswith("model.") for k in keys)


def test_no_module_pickles_torch_objects() -> None:
    """Only the towers' published ImageNet state dict is read with torch.load, and only as plain tensors."""
    source = "\n".join(path.read_text() for path in Path(checkpoints_module.__file__).parent.glob("*.py"))
    assert not re.search(r"torch\.save\(|pickle\.(dump|load)", source)
    loads = re.findall(r"torch\.load\([^\n]*", source)
    assert loads and all("weights_only=True" in call for call in loads), loads
