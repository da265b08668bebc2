#!/usr/bin/env bash
# Local OCI registries for the registry tests and bench/bench_images.py (Debian's `docker-registry`):
#   127.0.0.1:5000   anonymous
#   127.0.0.1:5001   htpasswd basic auth (user boxlite, password boxlite-secret)
#   127.0.0.1:5002   bearer-token auth: tokens signed by $STATE/token/key.pem, realm http://127.0.0.1:5003/token
#                    (the token service itself is a small Python server the tests start: tests/registry/)
# State (configs, storage, logs, pids, the token key) lives under $BOXLITE_REGISTRY_DIR (default
# /tmp/boxlite-registry). `start` installs the Debian packages it needs when missing, is idempotent and waits
# until every registry answers /v2/. Usage: scripts/registry.sh start|stop|status
set -euo pipefail

STATE=${BOXLITE_REGISTRY_DIR:-/tmp/boxlite-registry}
USER_NAME=boxlite
USER_PASSWORD=boxlite-secret
TOKEN_REALM=http://127.0.0.1:5003/token
TOKEN_SERVICE=boxlite-registry-test
TOKEN_ISSUER=boxlite-token-test

install_packages() {
    local packages=(docker-registry skopeo apache2-utils umoci openssl) missing=() p
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "registry: installing Debian packages: ${missing[*]}"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -q
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
}

write_config() {  # NAME PORT AUTH-YAML
    local dir="$STATE/$1"
    mkdir -p "$dir/storage"
    cat > "$dir/config.yml" <<EOF
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$2
  headers:
    X-Content-Type-Options: [nosniff]
$3
EOF
}

answers() {  # PORT: true once http://127.0.0.1:PORT/v2/ gives any HTTP answer
    python3 - "$1" <<'EOF'
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/v2/", timeout=2)
except urllib.error.HTTPError:
    pass  # 401 from the registries with auth is an answer
except OSError:
    sys.exit(1)
EOF
}

running() {  # NAME
    local pidfile="$STATE/$1/pid"
    [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

start_one() {  # NAME PORT
    local dir="$STATE/$1"
    if running "$1" && answers "$2"; then
        echo "registry: $1 already running on 127.0.0.1:$2"
        return
    fi
    if answers "$2"; then
        echo "registry: something else answers on 127.0.0.1:$2; not starting $1" >&2
        return 1
    fi
    setsid /usr/bin/docker-registry serve "$dir/config.yml" >>"$dir/log" 2>&1 < /dev/null &
    echo $! > "$dir/pid"
    local i
    for i in $(seq 1 100); do
        if answers "$2"; then
            echo "registry: $1 listening on 127.0.0.1:$2 (storage $dir/storage)"
            return
        fi
        if ! running "$1"; then
            echo "registry: $1 exited; its log:" >&2
            tail -20 "$dir/log" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "registry: $1 did not answer on 127.0.0.1:$2 within 10 s" >&2
    return 1
}

start() {
    install_packages
    mkdir -p "$STATE"
    write_config anonymous 5000 ""

    mkdir -p "$STATE/basic"
    htpasswd -Bbn "$USER_NAME" "$USER_PASSWORD" > "$STATE/basic/htpasswd"
    write_config basic 5001 "auth:
  htpasswd:
    realm: boxlite-basic
    path: $STATE/basic/htpasswd"

    mkdir -p "$STATE/token"
    if [ ! -s "$STATE/token/cert.pem" ]; then
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=$TOKEN_ISSUER" \
            -keyout "$STATE/token/key.pem" -out "$STATE/token/cert.pem" 2>/dev/null
    fi
    write_config token 5002 "auth:
  token:
    realm: $TOKEN_REALM
    service: $TOKEN_SERVICE
    issuer: $TOKEN_ISSUER
    rootcertbundle: $STATE/token/cert.pem"

    start_one anonymous 5000
    start_one basic 5001
    start_one token 5002
}

stop() {
    local name pid
    for name in anonymous basic token; do
        if running "$name"; then
            pid=$(cat "$STATE/$name/pid")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
            echo "registry: stopped $name"
        fi
        rm -f "$STATE/$name/pid"
    done
}

status() {
    local name port rc=0
    for pair in anonymous:5000 basic:5001 token:5002; do
        name=${pair%%:*}; port=${pair##*:}
        if running "$name" && answers "$port"; then echo "$name: up on 127.0.0.1:$port"; else echo "$name: down"; rc=1; fi
    done
    return $rc
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
