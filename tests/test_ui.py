"""`make ui` as a user meets it: the three servers come up on 127.0.0.1 on the ports asked for (the
UI calls its API there), a pipeline run triggered through the Prefect API runs in the deployments'
process, leaves its artifacts and a clean `dvc status`, a run from the shell shows up in the same
server, and `make ui-stop` stops exactly those processes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from conftest import CHROMEDRIVER, CHROMIUM, headless_chromium, screenshot_dir
from test_pipeline_e2e import write_tiny_project

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ui(action: str, project: Path, *ports: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.ui", action, *ports], cwd=project, capture_output=True, text=True,
                          timeout=300, env=env)


def without_the_venv_on_path() -> dict[str, str]:
    """What a user's shell (or a service manager) may hand `make ui`: a PATH without .venv/bin, no servers chosen."""
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)
    env = {**os.environ, "PATH": path}
    for chosen in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "BOOKCOVERS_USE_UI_SERVERS"):
        env.pop(chosen, None)
    return env


def git_and_dvc_repository(project: Path, env: dict[str, str]) -> str:
    dvc = str(Path(sys.executable).parent / "dvc")
    for command in (["git", "init", "-q"], [dvc, "init", "-q"]):
        subprocess.run(command, cwd=project, env=env, check=True, capture_output=True)
    return dvc


def listening_on_loopback_only(port: int) -> bool:
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:] + Path("/proc/net/tcp6").read_text().splitlines()[1:]
    local = [row.split()[1] for row in rows if row.split()[3] == "0A"]  # LISTEN
    ours = [address for address in local if int(address.rsplit(":", 1)[1], 16) == port]
    return bool(ours) and all(address.startswith(("0100007F:", "00000000000000000000000001000000:")) for address in ours)


def test_make_ui_serves_deployments_runs_the_pipeline_from_the_api_and_stops_cleanly(tmp_path: Path) -> None:
    write_tiny_project(tmp_path)  # params.yaml shrunk to the tiny generated data set
    env = without_the_venv_on_path()
    dvc = git_and_dvc_repository(tmp_path, env)
    prefect_port, mlflow_port = free_port(), free_port()  # never the defaults: the UI must follow the chosen port
    ports = ["--prefect-port", str(prefect_port), "--mlflow-port", str(mlflow_port)]
    started = ui("start", tmp_path, *ports, env=env)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        pids = {name: int((tmp_path / ".ui" / f"{name}.pid").read_text().split()[0]) for name in ("prefect", "mlflow", "deployments")}
        assert listening_on_loopback_only(prefect_port) and listening_on_loopback_only(mlflow_port)
        with urllib.request.urlopen(f"http://127.0.0.1:{mlflow_port}/health", timeout=5) as health:
            assert health.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{prefect_port}/ui-settings", timeout=5) as settings:
            assert json.loads(settings.read())["api_url"] == f"http://127.0.0.1:{prefect_port}/api"

        api = {**env, "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api"}
        trigger = subprocess.run([sys.executable, "-c", TRIGGER], cwd=tmp_path, env=api,
                                 capture_output=True, text=True, timeout=900)
        assert trigger.returncode == 0, trigger.stdout[-3000:] + trigger.stderr[-3000:]
        state, classify_state, artifacts, deployments, flow_runs = trigger.stdout.strip().splitlines()[-5:]
        assert state == classify_state == "COMPLETED"
        assert {"pipeline-summary", "quarantine-summary", "classify-listing"} <= set(artifacts.split(","))
        assert {"book-covers-pipeline", "validate-clean", "finetune-clip", "index-covers", "classify-listing"} <= set(deployments.split(","))
        assert len(pd.read_parquet(tmp_path / "data" / "predictions" / "new.genres.parquet")) > 0  # day two: a new listing labeled
        assert (tmp_path / "data" / "processed" / "cover_index" / "index.json").is_file()  # ran in the project folder
        # ...and left DVC's record as `make run` does, though `dvc` was not on the PATH make ui was given.
        status = subprocess.run([dvc, "status"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert "up to date" in status.stdout, status.stdout + status.stderr

        if CHROMIUM and CHROMEDRIVER:  # the UI page itself, as a user opens it, reaches its API on this port
            the_ui_lists_the_deployments(f"http://127.0.0.1:{prefect_port}/deployments", tmp_path)

        # A stage run from the shell while the servers are up goes to them: the UI shows it.
        shell_run = subprocess.run([sys.executable, "-m", "flows.generate"], cwd=tmp_path, env=env, capture_output=True,
                                   text=True, timeout=300)
        assert shell_run.returncode == 0, shell_run.stderr[-3000:]
        assert f"runs go to the project's servers (make ui): Prefect http://127.0.0.1:{prefect_port}/api" in shell_run.stderr
        recount = subprocess.run([sys.executable, "-c", TRIGGER.split("run = ")[0] + COUNT_FLOW_RUNS], cwd=tmp_path, env=api,
                                 capture_output=True, text=True, timeout=120)
        assert int(recount.stdout.split()[-1]) == int(flow_runs) + 1, recount.stdout + recount.stderr
        day_two_runs_from_the_api_leave_their_artifacts(tmp_path, api)
    finally:
        stopped = ui("stop", tmp_path)
    assert stopped.returncode == 0, stopped.stderr
    for name, pid in pids.items():
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z", name
        assert not (tmp_path / ".ui" / f"{name}.pid").exists()
    assert (tmp_path / ".ui" / "prefect.log").is_file()
    assert not (tmp_path / ".ui" / "servers.json").exists()  # later runs use a temporary server again


def day_two_runs_from_the_api_leave_their_artifacts(project: Path, api: dict[str, str]) -> None:
    """`add-covers` and the drift monitor, started from the API as the UI's Run button does; both leave their artifacts."""
    folder = project / "new covers"
    (folder / "img").mkdir(parents=True)
    generated = sorted((project / "data" / "raw" / "generated").rglob("*.jpg"))[:3]
    lines = ["title,author,image"]
    for i, image in enumerate(generated):
        shutil.copy(image, folder / "img" / f"new {i}.jpg")
        lines.append(f"A Walking Guide to Town {i},New Author {i},img/new {i}.jpg")
    (folder / "covers.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    run = subprocess.run([sys.executable, "-c", DAY_TWO], cwd=project, env=api, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    added_state, artifacts = run.stdout.strip().splitlines()[-2:]
    assert added_state == "COMPLETED COMPLETED"
    assert {"add-covers", "drift-report", "drift-report-html"} <= set(artifacts.split(","))
    assert (project / "data" / "monitoring" / "listing-new.genres.drift.html").is_file()
    index = json.loads((project / "data" / "processed" / "cover_index" / "index.json").read_text())
    assert index["batches"] and index["batches"][-1]["covers"] == 3


def the_ui_lists_the_deployments(url: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = headless_chromium()
    try:
        driver.get(url)
        WebDriverWait(driver, 90).until(lambda d: "book-covers-pipeline" in d.find_element(By.TAG_NAME, "body").text)
        assert "Can't connect" not in driver.find_element(By.TAG_NAME, "body").text
        assert driver.save_screenshot(str(screenshot_dir(tmp_path) / "prefect_ui_deployments.png"))
    finally:
        driver.quit()


DAY_TWO = """
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
added = run_deployment("add-covers/add-covers", parameters={"folder": "new covers"}, timeout=500)
monitored = run_deployment("monitor-drift/monitor-drift", parameters={"batch": "data/predictions/new.genres.parquet"}, timeout=300)
with get_client(sync_client=True) as client:
    artifacts = [a.key for a in client.read_artifacts() if a.key]
print(added.state.type.value, monitored.state.type.value)
print(",".join(sorted(set(artifacts))))
"""
COUNT_FLOW_RUNS = """
with get_client(sync_client=True) as client:
    print(client.count_flow_runs())
"""
TRIGGER = """
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
run = run_deployment("book-covers-pipeline/book-covers-pipeline", parameters={"overrides": []}, timeout=840)
import glob
listing = sorted(glob.glob("data/raw/generated/amazon-books/*.csv"))[0]
classified = run_deployment("classify-listing/classify-listing", timeout=300,
                            parameters={"listing": listing, "output": "data/predictions/new.genres.parquet"})
with get_client(sync_client=True) as client:
    artifacts = [a.key for a in client.read_artifacts() if a.key]
    deployments = [d.name for d in client.read_deployments()]
    flow_runs = client.count_flow_runs()
print(run.state.type.value)
print(classified.state.type.value)
print(",".join(sorted(set(artifacts))))
print(",".join(sorted(deployments)))
print(flow_runs)
"""
