"""What the application promises the deploy files (the brief's contract), stated once for every test."""

from __future__ import annotations

API_COMMAND = ["sanic", "api.app:create_app", "--factory", "--single-process", "--host", "0.0.0.0", "--port", "8000"]
WORKER_COMMAND = ["arq", "worker.settings"]
WORKER_CHECK = ["arq", "--check", "worker.settings"]
PORT = 8000
READY_PATH = "/health/ready"
LIVE_PATH = "/health/live"
METRICS_PATH = "/metrics"
QUEUE_DEPTH_GAUGE = "relay_queue_active"
