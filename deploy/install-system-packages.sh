#!/usr/bin/env bash
# Debian packages the distributed mode (`make up`) and its tests need, and the browser
# (Chromium and its WebDriver) the browser tests drive.
#
# Idempotent: installs only what is missing, and only when run as root on Debian.
# Otherwise it lists what is missing and exits 0, leaving the tests to decide (they
# skip locally and fail in CI). The stack runs its own private server instances, so
# nothing installed here may keep a system-wide service running or holding a port.
set -euo pipefail

missing=()

have_postgres_server() {
    local bin
    for bin in /usr/lib/postgresql/*/bin; do
        [[ -x "$bin/initdb" && -x "$bin/postgres" ]] && return 0
    done
    return 1
}

[[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]] || missing+=(rabbitmq-server)
have_postgres_server || missing+=(postgresql)
[[ -x /usr/sbin/nginx ]] || command -v nginx >/dev/null 2>&1 || missing+=(nginx)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v softhsm2-util >/dev/null 2>&1 || missing+=(softhsm2)
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
[[ -x /usr/bin/chromedriver ]] || missing+=(chromium-driver)
[[ -d /usr/share/fonts/truetype/dejavu ]] || missing+=(fonts-dejavu-core)

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "system packages: all present (rabbitmq-server, postgresql, nginx, openssl, softhsm2," \
         "chromium, chromium-driver, fonts)"
    exit 0
fi

if [[ $(id -u) -ne 0 || ! -f /etc/debian_version ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "system packages missing: ${missing[*]}"
    echo "  install them as root on Debian: sudo make system-packages"
    echo "  (the distributed-mode and browser tests skip without them, and fail when CI=true)"
    exit 0
fi

# Keep package scripts from starting the system services: a policy-rc.d answering 101
# makes invoke-rc.d refuse. Ours is removed again; an existing one is left alone.
policy=/usr/sbin/policy-rc.d
created_policy=no
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    created_policy=yes
fi
cleanup() { [[ $created_policy == yes ]] && rm -f "$policy"; return 0; }
trap cleanup EXIT

echo "system packages: installing ${missing[*]}"
# A mirror can fail for a moment on a fresh machine: try a few times before giving up.
for attempt in 1 2 3; do
    if apt-get update && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y --no-install-recommends "${missing[@]}"; then
        break
    fi
    [[ $attempt -eq 3 ]] && { echo "system packages: apt-get failed" >&2; exit 1; }
    sleep $((attempt * 10))
done

# Belt and braces for init systems that ignore policy-rc.d: stop whatever the packages
# just installed may have started, quietly when it is not running.
for pkg in "${missing[@]}"; do
    case $pkg in
        rabbitmq-server)
            service rabbitmq-server stop >/dev/null 2>&1 || true
            pkill -u rabbitmq -x beam.smp >/dev/null 2>&1 || true
            ;;
        nginx)
            service nginx stop >/dev/null 2>&1 || true
            ;;
        postgresql)
            if command -v pg_lsclusters >/dev/null 2>&1; then
                pg_lsclusters -h 2>/dev/null | while read -r version cluster _; do
                    pg_ctlcluster "$version" "$cluster" stop >/dev/null 2>&1 || true
                done
            fi
            service postgresql stop >/dev/null 2>&1 || true
            ;;
    esac
done
echo "system packages: done (no system service left running)"
