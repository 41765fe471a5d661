"""The process torchrun starts `clip.devices` times: `python -m tasks.clip.worker LAUNCH_DIR MLFLOW_RUN_ID`.

The fine-tune stage writes its settings into LAUNCH_DIR and launches torchrun; each process joins
the process group, runs the same `run_training` as a single-device run, and rank 0 writes the
result back. A user error (bad data, a model that will not load) is written as one sentence for
the stage to raise, instead of a traceback from every rank. On a cluster, start this module with
your scheduler's torchrun flags on every node, LAUNCH_DIR on a shared filesystem.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path

from tasks.clip.distributed import init_distributed, shutdown
from tasks.clip.finetune import run_training
from tasks.clip.launcher import RESULT_FILE, SETTINGS_FILE
from tasks.platform.errors import UserError
from tasks.platform.settings import Settings


def main(argv: list[str]) -> int:
    launch, run_id = Path(argv[0]), argv[1]
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"[rank {rank}] %(asctime)s %(levelname)s %(name)s: %(message)s")
    context = None
    try:
        settings = Settings.model_validate_json((launch / SETTINGS_FILE).read_text(encoding="utf-8"))
        context = init_distributed(settings.clip.device)
        result = run_training(settings, run_id, context)
        if context.is_main:
            (launch / RESULT_FILE).write_text(json.dumps(asdict(result)), encoding="utf-8")
        return 0
    except UserError as error:
        report = {"type": type(error).__name__, "message": str(error)}
        (launch / f"error-rank{rank}.json").write_text(json.dumps(report), encoding="utf-8")
        return 2
    finally:
        if context is not None:
            shutdown(context)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
