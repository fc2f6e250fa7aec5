#!/bin/sh
# Relay's Redis, password-protected: the one script compose and Kubernetes both run in the Redis container.
#
#   sh redis.sh serve [redis-server options...]   start Redis with an ACL user for Relay, the default user off
#   sh redis.sh check WORD...                     exit 0 if an authenticated PING to 127.0.0.1:${REDIS_PORT:-6379}
#                                                 answers one of WORD (the health checks and probes)
#
# The credentials come from RELAY_REDIS_URL (redis://<user>:<password>@host:port/db), the same URL the API and
# workers connect with, so there is one secret and nothing to keep in sync. The password never reaches a
# command line: redis-server reads the ACL from stdin (a here-document), redis-cli reads it from REDISCLI_AUTH.
# POSIX sh only: it runs under the official image's busybox ash and under dash.
set -eu

fail() {
    echo "relay redis: $*" >&2
    exit 64
}

url=${RELAY_REDIS_URL:-}
case $url in
    redis://*@* | rediss://*@*) ;;
    *) fail "RELAY_REDIS_URL must carry credentials (redis://relay:<password>@host:6379/0). With compose, set
RELAY_REDIS_PASSWORD (in .env or the environment); on Kubernetes, put RELAY_REDIS_URL in the relay-secrets Secret." ;;
esac
credentials=${url#*://}
credentials=${credentials%%@*}
user=${credentials%%:*}
password=${credentials#*:}
[ "$password" != "$credentials" ] || password=""

# The URL is used as it is by Relay (no percent-decoding), so only URL-safe characters keep it valid.
case $user in
    "" | default | *[!A-Za-z0-9_-]*) fail "the user in RELAY_REDIS_URL must be a name such as 'relay' (not 'default')" ;;
esac
if [ -z "$password" ]; then
    fail "RELAY_REDIS_URL has no password. With compose, set RELAY_REDIS_PASSWORD (in .env or the environment),
e.g. RELAY_REDIS_PASSWORD=\$(openssl rand -hex 32); on Kubernetes, put the URL in the relay-secrets Secret."
fi
case $password in
    *[!A-Za-z0-9._~-]*) fail "the Redis password may hold only letters, digits and . _ ~ - (openssl rand -hex 32)" ;;
esac
[ "${#password}" -ge 16 ] || fail "the Redis password is shorter than 16 characters (openssl rand -hex 32)"

mode=${1:-}
if [ $# -gt 0 ]; then shift; fi
case $mode in
    serve)
        # Nobody can log in as the default user (off, no password), so an unauthenticated connection can run
        # nothing but AUTH. Its permissions stay whole on purpose: Redis replays the AOF as the default user and
        # re-checks ACLs at each EXEC, so a default user without commands would silently drop every MULTI/EXEC
        # (arq's enqueue and pickup) on restart. Relay's user may run every command except the @dangerous ones
        # (FLUSHALL, KEYS, CONFIG, SHUTDOWN, MONITOR, ...) on every key and channel; INFO is given back because
        # arq's worker logs server info when it starts. protected-mode no: other containers must reach Redis;
        # the password is what guards it.
        exec redis-server - "$@" <<EOF
protected-mode no
user default off resetpass ~* &* +@all
user $user on >$password ~* &* +@all -@dangerous +info
EOF
        ;;
    check)
        [ $# -gt 0 ] || fail "check needs the accepted replies, e.g. check PONG"
        # Over loopback: in Kubernetes the Service has no endpoint for a pod that is not ready yet.
        reply=$(REDISCLI_AUTH=$password redis-cli --user "$user" -h 127.0.0.1 -p "${REDIS_PORT:-6379}" ping 2>&1) || true
        for accepted in "$@"; do
            case $reply in "$accepted"*) exit 0 ;; esac
        done
        echo "relay redis: PING answered: $reply" >&2
        exit 1
        ;;
    *) fail "usage: redis.sh serve [redis-server options...] | redis.sh check WORD..." ;;
esac
