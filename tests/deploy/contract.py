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

# Pools of named queues (issue #21): a worker serves the queues RELAY_QUEUES lists, and the API writes each
# named queue's work under a gauge of its own name, labelled by queue, e.g. relay_named_queue_active{queue="gpu"}
# (the unlabelled QUEUE_DEPTH_GAUGE stays the whole deployment's).
QUEUES_VARIABLE = "RELAY_QUEUES"
NAMED_QUEUE_GAUGE = "relay_named_queue_active"
QUEUE_LABELLED_GAUGE = NAMED_QUEUE_GAUGE + '{{queue="{queue}"}}'
