"""What ``arq worker.settings`` loads. Every public name in this module is an arq ``Worker`` argument
(a test holds it to that); helpers live in ``worker.setup``."""

from worker import connect as _connect
from worker import setup as _setup

_setup.tune_cli_process()  # arq's CLI runs its Worker on uvloop, the loaded code frozen out of the GC
_connect.install()  # arq's Worker and `arq --check` connect through shared.redis (Sentinel, TLS, retries)
_config = _setup.settings()

functions = _setup.functions(_config)
redis_settings = _setup.redis_settings(_config)
queue_name = _config.queue_name
max_jobs = _config.worker_concurrency
job_timeout = _config.job_timeout_seconds
poll_delay = _config.poll_delay_seconds
max_tries = _config.max_pickups
keep_result = _config.result_ttl_seconds
job_completion_wait = _config.worker_grace_seconds
health_check_interval = _setup.HEALTH_CHECK_INTERVAL_SECONDS
health_check_key = _setup.health_check_key(_config)
allow_abort_jobs = True
retry_jobs = True
job_serializer = _setup.dumps
job_deserializer = _setup.loads
on_startup = _setup.on_startup
on_shutdown = _setup.on_shutdown
