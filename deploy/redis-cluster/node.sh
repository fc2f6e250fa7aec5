#!/bin/sh
# A node of the compose profile `cluster` (a 3-primary, 3-replica Redis Cluster), and the one-shot that joins them.
#
#   sh node.sh serve [redis-server options...]   start a cluster-enabled node: Relay's ACL user as k8s/base/redis.sh
#                                                 gives it, plus an admin user for replication and forming the cluster
#   sh node.sh check WORD...                     exit 0 if an authenticated PING to 127.0.0.1:${REDIS_PORT:-6379}
#                                                 answers one of WORD (the health checks)
#   sh node.sh create REPLICAS HOST:PORT...      join the nodes with `redis-cli --cluster create` unless the first
#                                                 one already belongs to a formed cluster (safe to run on every
#                                                 `up`), then wait until every node says cluster_state:ok
#
# Two secrets, both from the environment, never from the repository or a command line (redis-server reads the ACL
# from stdin, redis-cli reads passwords from REDISCLI_AUTH):
#   RELAY_REDIS_URL             redis://<user>:<password>@host:port/0, the URL Relay connects with; its user may
#                               run every command but the @dangerous ones, exactly as on the single Redis
#   REDIS_CLUSTER_ADMIN_PASSWORD  the `relay-admin` user's: replicas replicate with it (PSYNC and REPLCONF are
#                               @dangerous, so Relay's user cannot) and `create` forms the cluster with it
#                               (CLUSTER ADDSLOTS, MEET, REPLICATE are @dangerous too)
# Each node announces REDIS_CLUSTER_ANNOUNCE_HOSTNAME (its compose service name) and prefers hostnames as
# endpoints, so the topology clients read (CLUSTER SLOTS) names hosts every container on the network resolves.
# POSIX sh only: it runs under the official image's busybox ash and under dash.
set -eu

ADMIN=relay-admin

fail() {
    echo "relay redis cluster: $*" >&2
    exit 64
}

valid_password() {  # name value
    [ -n "$2" ] || fail "$1 is not set: put it in .env or the environment, e.g. $1=\$(openssl rand -hex 32)"
    case $2 in
        *[!A-Za-z0-9._~-]*) fail "$1 may hold only letters, digits and . _ ~ - (openssl rand -hex 32)" ;;
    esac
    [ "${#2}" -ge 16 ] || fail "$1 is shorter than 16 characters (openssl rand -hex 32)"
}

url=${RELAY_REDIS_URL:-}
case $url in
    redis://*@* | rediss://*@*) ;;
    *) fail "RELAY_REDIS_URL must carry credentials (redis://relay:<password>@redis-node-1:6379/0): set
RELAY_REDIS_PASSWORD (in .env or the environment)" ;;
esac
credentials=${url#*://}
credentials=${credentials%%@*}
user=${credentials%%:*}
password=${credentials#*:}
[ "$password" != "$credentials" ] || password=""
case $user in
    "" | default | "$ADMIN" | *[!A-Za-z0-9_-]*) fail "the user in RELAY_REDIS_URL must be a name such as 'relay'" ;;
esac
valid_password RELAY_REDIS_PASSWORD "$password"
admin_password=${REDIS_CLUSTER_ADMIN_PASSWORD:-}
valid_password REDIS_CLUSTER_ADMIN_PASSWORD "$admin_password"
[ "$admin_password" != "$password" ] || fail "REDIS_CLUSTER_ADMIN_PASSWORD must differ from RELAY_REDIS_PASSWORD"
port=${REDIS_PORT:-6379}

# A command to the node at host:port as the admin, its reply without CRs ("" when the node does not answer).
admin_cli() {  # host:port command...  (POSIX sh has no locals: the name is kept apart from the callers')
    cli_node=$1
    shift
    REDISCLI_AUTH=$admin_password redis-cli --user "$ADMIN" -h "${cli_node%:*}" -p "${cli_node##*:}" "$@" 2>/dev/null \
        | tr -d '\r'
}

# How many nodes host:port lists at one of the addresses (" ip:port ip:port ...") with its link up.
connected_at() {  # host:port addresses
    admin_cli "$1" cluster nodes | awk -v current="$2 " '
        $8 == "connected" && index(current, " " substr($2, 1, index($2, "@") - 1) " ") { n++ }
        END { print n + 0 }'
}

# One field of CLUSTER INFO from host:port.
cluster_field() {  # host:port field
    admin_cli "$1" cluster info | sed -n "s/^$2://p"
}

mode=${1:-}
if [ $# -gt 0 ]; then shift; fi
case $mode in
    serve)
        host=${REDIS_CLUSTER_ANNOUNCE_HOSTNAME:-}
        [ -n "$host" ] || fail "REDIS_CLUSTER_ANNOUNCE_HOSTNAME must name this node as clients reach it (redis-node-1)"
        # The ACL as in k8s/base/redis.sh (see there why the default user keeps its permissions while off), plus
        # the admin. nodes.conf sits next to the AOF on the node's volume, so a restarted node keeps its identity
        # and slots. The bus is port + 10000 (16379), reachable on the compose network only.
        exec redis-server - --port "$port" --cluster-enabled yes --cluster-config-file nodes.conf \
            --cluster-announce-hostname "$host" --cluster-preferred-endpoint-type hostname "$@" <<EOF
protected-mode no
user default off resetpass ~* &* +@all
user $user on >$password ~* &* +@all -@dangerous +info
user $ADMIN on >$admin_password ~* &* +@all
masteruser $ADMIN
masterauth $admin_password
EOF
        ;;
    check)
        [ $# -gt 0 ] || fail "check needs the accepted replies, e.g. check PONG"
        reply=$(REDISCLI_AUTH=$password redis-cli --user "$user" -h 127.0.0.1 -p "$port" ping 2>&1) || true
        for accepted in "$@"; do
            case $reply in "$accepted"*) exit 0 ;; esac
        done
        echo "relay redis cluster: PING answered: $reply" >&2
        exit 1
        ;;
    create)
        [ $# -ge 2 ] || fail "usage: node.sh create REPLICAS HOST:PORT..."
        replicas=$1
        shift
        first=$1
        count=$#
        # CLUSTER MEET takes addresses, not names: resolve each node's service name on the compose network.
        # One word per node: host:port:address:bus-port (the bus port as the node itself reports it).
        nodes=""
        addresses=""
        for node in "$@"; do
            address=$(getent hosts "${node%:*}" | awk '{ print $1; exit }')
            [ -n "$address" ] || fail "cannot resolve ${node%:*}"
            bus=$(admin_cli "$node" config get cluster-port | sed -n 2p)
            [ "${bus:-0}" != 0 ] || bus=$((${node##*:} + 10000))
            nodes="$nodes $node:$address:$bus"
            addresses="$addresses $address:${node##*:}"
        done
        known=$(cluster_field "$first" cluster_known_nodes)
        [ -n "$known" ] || fail "$first does not answer CLUSTER INFO as $ADMIN"
        if [ "$known" -gt 1 ]; then
            echo "relay redis cluster: $first already knows $known nodes; not creating the cluster again"
            # Re-introduce every node to every other at its current address. Each node's nodes.conf names its
            # peers by IP, and containers recreated by `down` + `up` may come back on other IPs: a MEET naming
            # a node a node already knows only updates that node's address (nothing, if it is the same).
            for node in $nodes; do
                for target in $nodes; do
                    [ "$node" != "$target" ] || continue
                    # shellcheck disable=SC2046 # split into: host port address bus
                    set -- $(echo "$target" | tr ':' ' ')
                    reply=$(admin_cli "${node%:*:*}" cluster meet "$3" "$2" "$4")
                    [ "$reply" = OK ] || fail "${node%:*:*} answered CLUSTER MEET $3 $2 $4 with: $reply"
                done
            done
            # Until every node lists every other at its current address with its link up (until then a node just
            # restarted may still say cluster_state:ok from its nodes.conf, before it finds its peers gone).
            for node in $nodes; do
                tries=0
                until [ "$(connected_at "${node%:*:*}" "$addresses")" -eq "$count" ]; do
                    tries=$((tries + 1))
                    [ "$tries" -le 60 ] || fail "${node%:*:*} does not see every node at its address within 60 s"
                    sleep 1
                done
            done
            # shellcheck disable=SC2046 # back to one host:port per node, for the waits below
            set -- $(for node in $nodes; do echo "${node%:*:*}"; done)
        else
            # shellcheck disable=SC2086 # one word per node
            REDISCLI_AUTH=$admin_password redis-cli --user "$ADMIN" --cluster create $addresses \
                --cluster-replicas "$replicas" --cluster-yes
        fi
        # Slots are assigned at once; each node reports ok only once gossip has spread the layout. Bounded.
        for node in "$@"; do
            tries=0
            until [ "$(cluster_field "$node" cluster_state)" = ok ]; do
                tries=$((tries + 1))
                [ "$tries" -le 60 ] || fail "$node did not report cluster_state:ok within 60 s"
                sleep 1
            done
        done
        # And every replica is attached (the first node's view): a primary without one has no failover.
        expected=$((count * replicas / (replicas + 1)))
        tries=0
        until [ "$(admin_cli "$first" cluster nodes | grep -c ' slave ')" -ge "$expected" ]; do
            tries=$((tries + 1))
            [ "$tries" -le 60 ] || fail "$first does not see $expected replicas within 60 s"
            sleep 1
        done
        echo "relay redis cluster: all $count nodes report cluster_state:ok, $expected of them replicas"
        ;;
    *) fail "usage: node.sh serve [redis-server options...] | node.sh check WORD... | node.sh create REPLICAS HOST:PORT..." ;;
esac
