"""Multi-device training: the stage launches `clip.devices` processes with torchrun, each running
`tasks.clip.worker`, and reads back what rank 0 reported (or the user error a rank wrote down)."""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from tasks.clip.model import ClipLoadError, pick_device
from tasks.platform.errors import DataQualityError, InputFileError, ModelLoadError, UserError
from tasks.platform.settings import ClipSettings, Settings

log = logging.getLogger(__name__)

SETTINGS_FILE, RESULT_FILE = "settings.json", "result.json"


class TrainingLaunchError(UserError, RuntimeError):
    """The torchrun processes failed; their own output says why."""


# The user errors a torchrun process writes down for the stage to raise again, by class name.
REPORTABLE_ERRORS: dict[str, type[UserError]] = {error.__name__: error for error in (
    DataQualityError, InputFileError, ModelLoadError, ClipLoadError, TrainingLaunchError)}


@dataclass
class TrainingResult:
    """What the training processes hand back to the stage (as JSON when they ran under torchrun)."""

    history: list[dict[str, float]]
    best_epoch: int
    initial_val_loss: float
    train_pairs: int
    val_pairs: int
    device: str
    world_size: int
    resumed_from_step: int


def launch_dir(settings: Settings) -> Path:
    """Where the stage and its torchrun processes exchange settings, the small tokenizer and the result."""
    return settings.paths.clip_checkpoints.with_name(settings.paths.clip_checkpoints.name + ".launch")


def single_node(cfg: ClipSettings) -> bool:
    """No rendezvous in clip.torchrun_args: all processes on this machine."""
    return not any(argument.startswith(("--nnodes", "--rdzv")) for argument in cfg.torchrun_args)


def check_devices(cfg: ClipSettings) -> None:
    """One process per GPU: more processes than this machine has GPUs is a param to fix, not a crash in every rank."""
    on_gpu = pick_device(cfg.device).type == "cuda"
    if on_gpu and single_node(cfg) and cfg.devices > torch.cuda.device_count():
        raise ClipLoadError(f"clip.devices={cfg.devices} but this machine has {torch.cuda.device_count()} GPU(s); "
                            "lower clip.devices")


def torchrun_command(cfg: ClipSettings, launch: Path, run_id: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *(["--standalone"] if single_node(cfg) else []),
            f"--nproc_per_node={cfg.devices}", *cfg.torchrun_args, "-m", "tasks.clip.worker", str(launch), run_id]


def launch_torchrun(settings: Settings, run_id: str) -> TrainingResult:
    """Run training in `clip.devices` processes (DDP) and read back what rank 0 reported."""
    launch = launch_dir(settings)
    shutil.rmtree(launch, ignore_errors=True)
    launch.mkdir(parents=True)
    (launch / SETTINGS_FILE).write_text(settings.model_dump_json(by_alias=True), encoding="utf-8")
    command = torchrun_command(settings.clip, launch, run_id)
    log.info("launching %d training processes: %s", settings.clip.devices, shlex.join(command))
    returncode = subprocess.run(command, check=False).returncode
    errors = sorted(launch.glob("error-rank*.json"))
    if errors:
        reported = json.loads(errors[0].read_text(encoding="utf-8"))
        raise REPORTABLE_ERRORS.get(reported["type"], TrainingLaunchError)(reported["message"])
    if returncode != 0 or not (launch / RESULT_FILE).is_file():
        raise TrainingLaunchError(f"torchrun exited with status {returncode}; the training processes' output is above. "
                                  "Checkpoints are kept: rerun the stage to resume")
    return TrainingResult(**json.loads((launch / RESULT_FILE).read_text(encoding="utf-8")))
