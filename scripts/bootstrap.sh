# Sourced by scripts/dev and scripts/test: a virtualenv with Relay and its dev tools, and a redis-server.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.relay-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[dev]'
  touch "$stamp"
fi
# busybox: tests/deploy/test_redis_script.py also runs k8s/base/redis.sh under the official redis image's shell.
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v busybox >/dev/null 2>&1 || missing+=(busybox)
# redis-sentinel: the failover tests run three sentinels (tests/e2e/test_sentinel_failover.py).
command -v redis-sentinel >/dev/null 2>&1 || missing+=(redis-sentinel)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  elif ! command -v redis-server >/dev/null 2>&1; then
    echo "redis-server is required: install it (apt-get install redis-server / brew install redis)" >&2
    exit 1
  fi
fi
