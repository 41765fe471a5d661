"""The pipeline's work, as plain Python wrapped in Prefect tasks; testable without a server."""
