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

# Pools of named queues (issue #21): a worker serves the queues RELAY_QUEUES lists, and the API labels its
# gauges by queue, e.g. relay_queue_active{queue="gpu"}, written so as prometheus_client writes it.
QUEUES_VARIABLE = "RELAY_QUEUES"
QUEUE_LABELLED_GAUGE = QUEUE_DEPTH_GAUGE + '{{queue="{queue}"}}'

# Variables the deploy files set for a server feature on its way, with the issue that adds its Settings
# field: test_consistency lets them through only while Settings lacks that field, and checks them like any
# other once it has it (then this entry can go).
PENDING_SETTINGS = {QUEUES_VARIABLE: "#21"}
