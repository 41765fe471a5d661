"""Multi-process training on CPU (gloo): the all-gather loss and gradient caching compute what one pass computes.

2 processes that each take half of a global batch must give the same loss and the same
gradients, after DDP's averaging, as 1 process on the whole batch; so must 1 process that
embeds the batch in chunks (gradient caching). A loss that only saw the local half, or a
gather that dropped the gradient of the other ranks' loss terms, fails these by far more than
the tolerance.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_clip import CPU, _clip_settings, _pairs, one_torch_thread  # noqa: F401  (fixture reused)

from tasks.clip.data import Tokens
from tasks.clip.distributed import DistContext
from tasks.clip.loop import backward_step, global_mean, rank_share, training_engine
from tasks.clip.model import ClipBundle, initial_bundle, load_saved_clip, save_bundle

GLOBAL_BATCH = 8
CFG = _clip_settings(batch_size=GLOBAL_BATCH, seed=3)


def _batch(bundle: ClipBundle, index: np.ndarray) -> dict[str, torch.Tensor]:
    pairs = _pairs(GLOBAL_BATCH, seed=5)
    # captions of different lengths, so ranks pad their halves to different widths
    captions = [caption + " and more" * (i % 3) for i, caption in enumerate(pairs.captions)]
    return {"images": torch.from_numpy(pairs.images[index]), **Tokens.encode(bundle, captions).batch(index)}


def _loss_and_grads(bundle: ClipBundle, context: DistContext, chunks: int) -> tuple[float, dict[str, torch.Tensor]]:
    engine = training_engine(bundle, CFG, context)
    index = rank_share([np.arange(GLOBAL_BATCH)], context)[0]
    loss = global_mean(backward_step(engine, _batch(bundle, index), chunks, context), context)
    grads = {name: parameter.grad.clone() for name, parameter in bundle.model.named_parameters() if parameter.grad is not None}
    return loss.item(), grads


def _rank_main(rank: int, world_size: int, folder: str, chunks: int) -> None:
    """One spawned process: join a gloo group through a file, take this rank's half, save loss and gradients."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world_size)
    try:
        bundle = load_saved_clip(Path(folder) / "clip", "cpu")
        loss, grads = _loss_and_grads(bundle, DistContext(rank, world_size, CPU), chunks)
        if rank == 0:
            torch.save(grads, Path(folder) / "grads.pt")
            (Path(folder) / "loss.json").write_text(json.dumps(loss))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def saved_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ddp")
    save_bundle(initial_bundle(CFG, _pairs(GLOBAL_BATCH, seed=5).captions, None, CPU), folder / "clip")
    return folder


@pytest.fixture(scope="module")
def one_process(saved_clip: Path) -> tuple[float, dict[str, torch.Tensor]]:
    torch.set_num_threads(1)
    return _loss_and_grads(load_saved_clip(saved_clip / "clip", "cpu"), DistContext(0, 1, CPU), chunks=1)


def _assert_same(got: tuple[float, dict[str, torch.Tensor]], want: tuple[float, dict[str, torch.Tensor]]) -> None:
    loss, grads = got
    want_loss, want_grads = want
    assert loss == pytest.approx(want_loss, abs=1e-5)
    assert grads.keys() == want_grads.keys() and "logit_scale" in grads
    for name, grad in want_grads.items():
        torch.testing.assert_close(grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_the_reference_gradients_are_not_trivial(one_process) -> None:
    loss, grads = one_process
    assert loss > 0.1
    assert all(grad.abs().max() > 0 for name, grad in grads.items() if "projection" in name or name == "logit_scale")


@pytest.mark.parametrize("chunks", [1, 2])
def test_two_gloo_processes_give_the_one_process_loss_and_gradients(saved_clip: Path, one_process, chunks: int) -> None:
    folder = saved_clip / f"world2-chunks{chunks}"
    (folder / "clip").parent.mkdir(parents=True, exist_ok=True)
    os.symlink(saved_clip / "clip", folder / "clip")
    mp.spawn(_rank_main, args=(2, str(folder), chunks), nprocs=2, join=True)
    got = (json.loads((folder / "loss.json").read_text()), torch.load(folder / "grads.pt"))
    _assert_same(got, one_process)


@pytest.mark.parametrize("chunks", [2, 4])
def test_gradient_caching_gives_the_whole_batch_loss_and_gradients(saved_clip: Path, one_process, chunks: int) -> None:
    got = _loss_and_grads(load_saved_clip(saved_clip / "clip", "cpu"), DistContext(0, 1, CPU), chunks)
    _assert_same(got, one_process)


def test_a_local_only_loss_would_fail_the_comparison(saved_clip: Path, one_process) -> None:
    """The tolerance is tight enough to catch the classic bug: each half scored only against itself."""
    bundle = load_saved_clip(saved_clip / "clip", "cpu")
    engine = training_engine(bundle, CFG, DistContext(0, 1, CPU))
    halves = [np.arange(GLOBAL_BATCH)[: GLOBAL_BATCH // 2], np.arange(GLOBAL_BATCH)[GLOBAL_BATCH // 2:]]
    losses = [backward_step(engine, _batch(bundle, half), 1, DistContext(0, 1, CPU)).item() / 2 for half in halves]
    assert abs(sum(losses) - one_process[0]) > 1e-3


@pytest.mark.slow
def test_the_stage_launches_torchrun_and_two_processes_train_what_one_does_and_resume_in_one(tiny_settings, tiny_data, project_dir: Path) -> None:
    """`clip.devices=2` on CPU: the Prefect stage starts torchrun (gloo), rank 0 reports, logs and registers."""
    from conftest import tiny_overrides
    from test_faults import Stage, finished, labeled_covers

    from tasks.platform.settings import load_settings

    overrides = [*tiny_overrides(tiny_data), "clip.epochs=3", "clip.batch_size=16", "clip.num_threads=1"]
    settings = load_settings(project_dir / "params.yaml", overrides)
    labeled_covers(settings)
    single = [f"paths.{key}={project_dir / 'single' / key}" for key in ("clip_dir", "clip_checkpoints", "metrics_dir", "plots_dir")]
    single_env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{project_dir / 'single.db'}"}
    finished(Stage("flows.finetune_clip", [*overrides, *single], project_dir, single_env))
    output = finished(Stage("flows.finetune_clip", [*overrides, "clip.devices=2"], project_dir))

    assert "torch.distributed.run --standalone --nproc_per_node=2" in output
    two = json.loads((settings.paths.metrics_dir / "clip_train.json").read_text())
    one = json.loads((project_dir / "single" / "metrics_dir" / "clip_train.json").read_text())
    assert two["processes"] == 2 and one["processes"] == 1 and two["registered_version"] == "1"
    assert two["best_epoch"] == one["best_epoch"]
    for got, want in zip(two["history"], one["history"], strict=True):
        assert got["val_loss"] == pytest.approx(want["val_loss"], abs=1e-3)
        assert got["train_loss"] == pytest.approx(want["train_loss"], abs=1e-3)
    assert (settings.paths.clip_checkpoints / "latest.safetensors").is_file()
    assert (settings.paths.clip_dir / "model.safetensors").is_file()

    # Devices only change speed: the finished 2-process run resumes in 1 process, to the same model and version.
    rerun = finished(Stage("flows.finetune_clip", [*overrides, "clip.devices=1"], project_dir))
    assert "resuming from" in rerun and "torch.distributed.run" not in rerun
    resumed = json.loads((settings.paths.metrics_dir / "clip_train.json").read_text())
    assert resumed["registered_version"] == "1" and resumed["history"] == two["history"]


@pytest.mark.slow
def test_compile_and_activation_checkpointing_keep_the_loss_and_gradients(saved_clip: Path, one_process) -> None:
    """torch.compile (inductor, on CPU here) + recomputed activations + gradient caching: same numbers, layers run twice."""
    bundle = load_saved_clip(saved_clip / "clip", "cpu")
    bundle.model.train()
    cfg = CFG.model_copy(update={"compile": True, "gradient_checkpointing": True})
    engine = training_engine(bundle, cfg, DistContext(0, 1, CPU))
    loss = backward_step(engine, _batch(bundle, np.arange(GLOBAL_BATCH)), 2, DistContext(0, 1, CPU))
    grads = {name: parameter.grad.clone() for name, parameter in bundle.model.named_parameters() if parameter.grad is not None}
    _assert_same((loss.item(), grads), one_process)
    assert hasattr(engine, "_orig_mod"), "the engine was not compiled"


@pytest.mark.parametrize("checkpointing, layer_runs", [(False, 1), (True, 2)])
def test_activation_checkpointing_recomputes_each_layer_in_the_backward(saved_clip: Path, one_process, checkpointing: bool,
                                                                        layer_runs: int) -> None:
    bundle = load_saved_clip(saved_clip / "clip", "cpu")
    bundle.model.train()
    engine = training_engine(bundle, CFG.model_copy(update={"gradient_checkpointing": checkpointing}), DistContext(0, 1, CPU))
    runs: list[int] = []
    mlp = bundle.model.vision_model.encoder.layers[0].mlp  # called inside the checkpointed layer forward
    forward = mlp.forward

    def counted(*args, **kwargs):  # not a forward hook: the recompute does not fire hooks
        runs.append(1)
        return forward(*args, **kwargs)

    mlp.forward = counted
    loss = backward_step(engine, _batch(bundle, np.arange(GLOBAL_BATCH)), 1, DistContext(0, 1, CPU))
    assert len(runs) == layer_runs
    assert loss.item() == pytest.approx(one_process[0], abs=1e-5)


def test_torchrun_is_standalone_unless_a_rendezvous_is_given(tmp_path: Path) -> None:
    from tasks.clip.launcher import torchrun_command

    single = torchrun_command(_clip_settings(devices=4), tmp_path, "run-1")
    assert single[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    assert single[-4:] == ["-m", "tasks.clip.worker", str(tmp_path), "run-1"]
    cluster = torchrun_command(_clip_settings(devices=8, torchrun_args=["--nnodes=2", "--rdzv_endpoint=head:29500"]), tmp_path, "r")
    assert "--standalone" not in cluster and "--nnodes=2" in cluster and "--rdzv_endpoint=head:29500" in cluster


def test_batch_size_must_split_evenly_over_devices_and_chunks() -> None:
    with pytest.raises(ValueError, match="multiple of devices x accumulation_steps"):
        _clip_settings(batch_size=10, devices=4)
    assert _clip_settings(batch_size=16, devices=2, accumulation_steps=4).batch_size == 16


def test_a_worker_writes_its_user_error_down_for_the_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rank that meets bad data reports one sentence and its class, not a traceback from every rank."""
    from tasks.clip import worker as clip_worker
    from tasks.clip.launcher import REPORTABLE_ERRORS, SETTINGS_FILE
    from tasks.platform.errors import InputFileError
    from tasks.platform.settings import Settings

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    settings = Settings.model_validate({"paths": {"cover_shards": str(tmp_path / "no-shards")}, "clip": {"device": "cpu"}})
    (tmp_path / SETTINGS_FILE).write_text(settings.model_dump_json(by_alias=True))
    assert clip_worker.main([str(tmp_path), "run-1"]) == 2
    report = json.loads((tmp_path / "error-rank0.json").read_text())
    assert REPORTABLE_ERRORS[report["type"]] is InputFileError and "no-shards" in report["message"]


def test_rank_shares_are_equal_contiguous_slices() -> None:
    batch = np.arange(7)  # a data set smaller than the batch: one short batch that does not split in two
    shares = [rank_share([batch], DistContext(rank, 2, CPU))[0].tolist() for rank in (0, 1)]
    assert shares == [[0, 1, 2], [3, 4, 5]]
    assert rank_share([np.arange(8)], DistContext(0, 1, CPU))[0].tolist() == list(range(8))


def test_validation_in_chunks_scores_the_whole_batch(saved_clip: Path) -> None:
    from tasks.clip.loop import mean_loss

    bundle, pairs = load_saved_clip(saved_clip / "clip", "cpu"), _pairs(20, seed=9)
    whole = mean_loss(bundle, pairs, 8)
    assert mean_loss(bundle, pairs, 8, chunks=4) == pytest.approx(whole, abs=1e-5)
    assert mean_loss(bundle, pairs, 4) != pytest.approx(whole, abs=1e-3)  # the batch size matters: the comparison is not vacuous
