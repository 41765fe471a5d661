"""`make ui` / `make ui-stop`: the Prefect server, the process serving the deployments, and the
MLflow server, in the background on 127.0.0.1, with PID files and logs under `.ui/`.

`stop` stops exactly the processes this started (their PID files, checked against the command
they run), each with its whole process group, so nothing is left listening.

While they are up, `bookcovers run`, `bookcovers stage` and `python -m flows.<stage>` send their runs
to them (`.ui/servers.json` says where), so the UIs show every run; an explicit PREFECT_API_URL or
MLFLOW_TRACKING_URI wins, and BOOKCOVERS_USE_UI_SERVERS=0 keeps runs on a temporary server and mlflow.db.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from flows.servers import OPT_OUT, SERVERS_FILE, UI_DIR, answers_health


@dataclass(frozen=True)
class Service:
    name: str
    command: list[str]
    health_url: str
    env: dict[str, str]
    expected: int | None = None  # for the deployments: ready once the server lists this many


def reachable_host(host: str) -> str:
    """The address a browser (and a client) uses for a server bound to `host`: a wildcard is no address."""
    return socket.getfqdn() if host in ("0.0.0.0", "::", "") else host


def services(host: str, prefect_port: int, mlflow_port: int) -> list[Service]:
    bin_dir = Path(sys.executable).parent
    prefect_api = f"http://{reachable_host(host)}:{prefect_port}/api"
    tracking = f"http://{reachable_host(host)}:{mlflow_port}"
    prefect_home = {"PREFECT_HOME": str((UI_DIR / "prefect-home").resolve())}
    # The UI's page calls the API at PREFECT_UI_API_URL, which otherwise stays at :4200 whatever --port says.
    prefect_server = {**prefect_home, "PREFECT_UI_API_URL": prefect_api, "PREFECT_SERVER_API_PORT": str(prefect_port)}
    # A run started from the UI calls `dvc` (and the stages' torchrun) from this venv, whatever PATH make was given.
    venv_path = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    return [
        Service("prefect", [str(bin_dir / "prefect"), "server", "start", "--host", host, "--port", str(prefect_port)],
                f"{prefect_api}/health", prefect_server),
        Service("mlflow", [str(bin_dir / "mlflow"), "server", "--host", host, "--port", str(mlflow_port),
                           "--backend-store-uri", "sqlite:///mlflow.db", "--workers", "1"], f"{tracking}/health", {}),
        Service("deployments", [sys.executable, "-m", "flows.deployments"], f"{prefect_api}/deployments/count",
                {**prefect_home, **venv_path, "PREFECT_API_URL": prefect_api, "MLFLOW_TRACKING_URI": tracking},
                expected=len(deployment_names())),
    ]


def pid_file(name: str) -> Path:
    return UI_DIR / f"{name}.pid"


def running_pid(name: str) -> int | None:
    """The PID in the service's PID file, if that process is alive and still runs our command."""
    path = pid_file(name)
    if not path.is_file():
        return None
    pid = int(path.read_text().split()[0])
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return None
    return pid if path.read_text().split(maxsplit=1)[1].strip().split()[0] in cmdline else None


def deployment_names() -> list[str]:
    from flows.pipeline import STAGES

    return ["book-covers-pipeline", *(stage.name for _, stage in STAGES)]


def answers(service: Service) -> bool:
    """The server answers its health URL; the deployments' process has registered all of them."""
    if service.expected is None:
        return answers_health(service.health_url)
    try:
        request = urllib.request.Request(service.health_url, data=b"{}", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=2) as response:
            return int(response.read()) >= service.expected
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_ready(service: Service, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if answers(service):
            return True
        time.sleep(0.5)
    return False


def start(host: str, prefect_port: int, mlflow_port: int, wait_seconds: float) -> None:
    UI_DIR.mkdir(exist_ok=True)
    for service in services(host, prefect_port, mlflow_port):
        if running_pid(service.name):
            print(f"{service.name}: already running (pid {running_pid(service.name)})")
            continue
        with open(UI_DIR / f"{service.name}.log", "ab") as log:
            process = subprocess.Popen(service.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                       env={**os.environ, **service.env})
        pid_file(service.name).write_text(f"{process.pid} {service.command[0]}\n")
        if not wait_ready(service, wait_seconds):
            raise SystemExit(f"error: {service.name} was not ready ({service.health_url}) within {wait_seconds:.0f} s; "
                             f"see {UI_DIR / (service.name + '.log')}, then `make ui-stop`")
        print(f"{service.name}: pid {process.pid}, ready")
    address = reachable_host(host)
    SERVERS_FILE.write_text(json.dumps({"prefect_api": f"http://{address}:{prefect_port}/api",
                                        "mlflow": f"http://{address}:{mlflow_port}"}))
    print(f"Prefect UI http://{address}:{prefect_port}   MLflow UI http://{address}:{mlflow_port}   logs {UI_DIR}/")
    print(f"runs started here (bookcovers run, make run, python -m flows.<stage>) now go to these servers; "
          f"{OPT_OUT}=0 keeps a run on a temporary server and mlflow.db")


def stop(grace_seconds: float = 10.0) -> None:
    SERVERS_FILE.unlink(missing_ok=True)
    for name in ("deployments", "mlflow", "prefect"):
        pid = running_pid(name)
        if pid is None:
            pid_file(name).unlink(missing_ok=True)
            continue
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists() and not _is_zombie(pid):
            time.sleep(0.2)
        _signal_group(pid, signal.SIGKILL)
        pid_file(name).unlink(missing_ok=True)
        print(f"{name}: stopped (pid {pid})")


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # the service and its workers (MLflow's gunicorn/uvicorn, Prefect's runs)
    except (ProcessLookupError, PermissionError):
        pass


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `bookcovers ui` and `python -m flows.ui`: one definition for both."""
    parser.add_argument("action", choices=["start", "stop"], help="start the servers in the background, or stop them")
    parser.add_argument("--host", default="127.0.0.1", help="address the servers bind (default: this machine only)")
    parser.add_argument("--prefect-port", type=int, default=4200, help="the Prefect UI and API port (default 4200)")
    parser.add_argument("--mlflow-port", type=int, default=5000, help="the MLflow UI and tracking port (default 5000)")
    parser.add_argument("--wait", type=float, default=90.0, help="seconds to wait for each server to answer")


def run(args: argparse.Namespace) -> None:
    if args.action == "start":
        start(args.host, args.prefect_port, args.mlflow_port, args.wait)
    else:
        stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.ui", description=" ".join(__doc__.split("\n\n")[0].split()))
    add_arguments(parser)
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
