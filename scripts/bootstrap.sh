# Sourced with what it is for: `run` by scripts/dev (a virtualenv with Relay's runtime dependencies and the
# optional tracing ones, and a redis-server), `dev` by scripts/test, scripts/container-test and .ci/run (also the
# dev extra: pytest, Playwright, schemathesis, ruff, mypy, kubectl, ...; and busybox and redis-sentinel for tests).
# Running Relay needed none of the dev extra, which made scripts/dev's first start a 673 MB install.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mode="${1:-}"
case "$mode" in
  run) spec='.[otel]' ;;
  dev) spec='.[dev]' ;;
  *)
    echo "usage: source scripts/bootstrap.sh run|dev (run: what Relay needs to run; dev: also what tests need)" >&2
    return 2
    ;;
esac
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
dev_stamp=.venv/.relay-installed # the dev extra, which holds everything `run` installs too
run_stamp=.venv/.relay-installed-run
current() { [ -f "$1" ] && [ ! pyproject.toml -nt "$1" ]; }
if ! current "$dev_stamp" && { [ "$mode" = dev ] || ! current "$run_stamp"; }; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e "$spec"
  if [ "$mode" = dev ]; then touch "$dev_stamp"; fi
  touch "$run_stamp"
fi
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ "$mode" = dev ]; then
  # busybox: tests/deploy/test_redis_script.py also runs k8s/base/redis.sh under the official redis image's shell.
  command -v busybox >/dev/null 2>&1 || missing+=(busybox)
  # redis-sentinel: the failover tests run three sentinels (tests/e2e/test_sentinel_failover.py).
  command -v redis-sentinel >/dev/null 2>&1 || missing+=(redis-sentinel)
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  elif ! command -v redis-server >/dev/null 2>&1; then
    echo "redis-server is required: install it (apt-get install redis-server / brew install redis)" >&2
    exit 1
  fi
fi
