#!/bin/sh
# statsd-env.sh: entrypoint wrapper that gives a Mesos task its own Corral StatsD port.
#
#   statsd-env.sh COMMAND [ARG...]
#
# Asks the Corral on this agent for the container's port
# (PUT $CORRAL_API/v0/statsd/containers/<container id>), exports STATSD_UDP_HOST and
# STATSD_UDP_PORT as dcos-metrics' Mesos module did, and execs COMMAND. Everything the
# application sends there is attributed to its container, with no tag or client change.
#
# Environment:
#   CORRAL_API           Corral's API; default http://$HOST:9000 (HOST is the agent, set by
#                        Marathon), else http://127.0.0.1:9000.
#   MESOS_CONTAINER_ID   The container id, when the launcher provides it. Otherwise it is found
#                        in /proc/self/cgroup (.../mesos/<id>), in the sandbox path
#                        (MESOS_SANDBOX or MESOS_DIRECTORY: .../runs/<id>), or in
#                        MESOS_CONTAINER_NAME (Docker containerizer: mesos-<id>); failing those,
#                        MESOS_EXECUTOR_ID or MESOS_TASK_ID is used, which the agent does not
#                        report as a container (see README.md).
#   CORRAL_STATSD_ENV_ATTEMPTS
#                        How many times to try the PUT, a second more apart each time;
#                        default 5.
#   CORRAL_STATSD_ENV_REQUIRED=1
#                        Exit with status 1 when no port can be had, instead of starting
#                        COMMAND without the variables (or with the ones already set).
#
# Needs curl in the container. The port is released by Corral once the agent stops reporting
# the container (statsd.expiry); a launcher that sees the exit can DELETE it at once.
set -u

log() {
    echo "statsd-env: $*" >&2
}

if [ "$#" -eq 0 ]; then
    log "usage: statsd-env.sh COMMAND [ARG...]"
    exit 2
fi

api=${CORRAL_API:-http://${HOST:-127.0.0.1}:9000}
api=${api%/}

# The last "/mesos/<id>" of the container's cgroup path (nested containers have several;
# cgroup v2 puts the processes in a "leaf" child).
cgroup_container_id() {
    [ -r /proc/self/cgroup ] || return 1
    sed -n -e 's|/leaf$||' -e 's|.*/mesos/\([^/][^/]*\)$|\1|p' /proc/self/cgroup | head -n 1
}

# The last component of a sandbox path .../runs/<id> (nested: .../runs/<id>/containers/<id>).
sandbox_container_id() {
    case "$1" in
        */runs/?*) ;;
        *) return 1 ;;
    esac
    dir=$1
    while [ "${dir%/}" != "$dir" ]; do
        dir=${dir%/}
    done
    printf '%s\n' "${dir##*/}"
}

container_id=${MESOS_CONTAINER_ID:-}
source=MESOS_CONTAINER_ID
if [ -z "$container_id" ]; then
    container_id=$(cgroup_container_id 2>/dev/null || true)
    source=/proc/self/cgroup
fi
if [ -z "$container_id" ]; then
    for dir in "${MESOS_SANDBOX:-}" "${MESOS_DIRECTORY:-}"; do
        [ -n "$dir" ] || continue
        container_id=$(sandbox_container_id "$dir" || true)
        source="sandbox path $dir"
        [ -z "$container_id" ] || break
    done
fi
if [ -z "$container_id" ] && [ -n "${MESOS_CONTAINER_NAME:-}" ]; then
    container_id=${MESOS_CONTAINER_NAME#mesos-}
    source=MESOS_CONTAINER_NAME
fi
if [ -z "$container_id" ]; then
    for var in MESOS_EXECUTOR_ID MESOS_TASK_ID; do
        eval "container_id=\${$var:-}"
        source=$var
        if [ -n "$container_id" ]; then
            log "no container id found; using $var=$container_id, which the agent does not report as a container"
            break
        fi
    done
fi

# fail MESSAGE COMMAND [ARG...]
fail() {
    log "$1"
    shift
    if [ "${CORRAL_STATSD_ENV_REQUIRED:-0}" = 1 ]; then
        exit 1
    fi
    if [ -n "${STATSD_UDP_HOST:-}" ] && [ -n "${STATSD_UDP_PORT:-}" ]; then
        log "keeping STATSD_UDP_HOST=$STATSD_UDP_HOST STATSD_UDP_PORT=$STATSD_UDP_PORT"
    else
        log "starting $1 without STATSD_UDP_HOST/STATSD_UDP_PORT"
    fi
    exec "$@"
}

if [ -z "$container_id" ]; then
    fail "no container id (set MESOS_CONTAINER_ID)" "$@"
fi
case "$container_id" in
    *[!A-Za-z0-9._:-]*)
        fail "container id from $source has unexpected characters: $container_id" "$@"
        ;;
esac
if ! command -v curl >/dev/null 2>&1; then
    fail "curl is not installed" "$@"
fi

url="$api/v0/statsd/containers/$container_id"
attempts=${CORRAL_STATSD_ENV_ATTEMPTS:-5}
case "$attempts" in
    '' | *[!0-9]*) attempts=5 ;;
esac
body=
attempt=1
while [ "$attempt" -le "$attempts" ]; do
    if body=$(curl -fsS --max-time 5 -X PUT "$url" 2>/dev/null); then
        break
    fi
    body=
    [ "$attempt" -lt "$attempts" ] && sleep "$attempt"
    attempt=$((attempt + 1))
done
if [ -z "$body" ]; then
    fail "PUT $url failed ($attempts attempts)" "$@"
fi

body=$(printf '%s' "$body" | tr -d '\n\r')
host=$(printf '%s' "$body" | sed -n 's/.*"statsd_host"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p')
port=$(printf '%s' "$body" | sed -n 's/.*"statsd_port"[[:space:]]*:[[:space:]]*\([0-9][0-9]*\).*/\1/p')
if [ -z "$host" ] || [ -z "$port" ]; then
    fail "unexpected answer from PUT $url: $body" "$@"
fi

STATSD_UDP_HOST=$host
STATSD_UDP_PORT=$port
export STATSD_UDP_HOST STATSD_UDP_PORT
log "container $container_id ($source): STATSD_UDP_HOST=$host STATSD_UDP_PORT=$port"
exec "$@"
