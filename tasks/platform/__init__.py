"""What every domain stands on: typed settings, user errors, MLflow tracking and registry, the run
lock and retries, the DVC commit, atomic outputs and the run summary."""
