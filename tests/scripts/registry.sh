#!/usr/bin/env bash
# Loopback registries for tests and benchmarks: Debian's docker-registry (distribution v2) on
# 127.0.0.1 with filesystem storage inside DIR.
#
#   registry.sh start DIR plain|tls|token [PORT]   prints the address (127.0.0.1:PORT)
#   registry.sh stop DIR                            stops what `start DIR` started, removes nothing
#
# plain: no auth, plain HTTP.
# tls:   htpasswd auth (user kiln, password kiln-pass) behind TLS; the CA is DIR/ca.crt and also
#        DIR/certs.d/127.0.0.1:PORT/ca.crt (pass DIR/certs.d as a cert dir).
# token: token auth (plain HTTP) with DIR/token-server.py signing RS256 JWTs like Docker Hub's
#        auth service: kiln/kiln-pass get what they ask for, anonymous callers get pull only.
#        Every token request is logged to DIR/token.log.
# Each instance lives only in DIR, so parallel tests with their own DIRs never collide.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
USER_NAME=kiln
USER_PASS=kiln-pass

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() { # port
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "registry.sh: nothing listens on 127.0.0.1:$1 after 10 s; see $dir/*.log" >&2
  return 1
}

make_tls() { # dir port
  local d=$1 port=$2
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=kiln test CA" \
    -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' >"$d/server.ext"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -days 2 -extfile "$d/server.ext" -out "$d/server.crt" 2>/dev/null
  mkdir -p "$d/certs.d/127.0.0.1:$port"
  cp "$d/ca.crt" "$d/certs.d/127.0.0.1:$port/ca.crt"
  htpasswd -Bbn "$USER_NAME" "$USER_PASS" >"$d/htpasswd" 2>/dev/null
}

start() {
  dir=$1 kind=$2 port=${3:-$(free_port)}
  mkdir -p "$dir/data"
  dir=$(cd "$dir" && pwd)
  local tls="" auth=""
  case $kind in
    plain) ;;
    tls)
      make_tls "$dir" "$port"
      tls="  tls:
    certificate: $dir/server.crt
    key: $dir/server.key"
      auth="auth:
  htpasswd:
    realm: kiln-test
    path: $dir/htpasswd"
      ;;
    token)
      local tport
      tport=$(free_port)
      openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=kiln test token signer" \
        -keyout "$dir/token.key" -out "$dir/token.crt" 2>/dev/null
      cp "$here/token-server.py" "$dir/token-server.py"
      python3 "$dir/token-server.py" "$tport" "$dir" "$USER_NAME" "$USER_PASS" \
        >"$dir/token-server.log" 2>&1 &
      echo $! >"$dir/token-server.pid"
      wait_port "$tport"
      auth="auth:
  token:
    realm: http://127.0.0.1:$tport/token
    service: kiln-test-registry
    issuer: kiln-test-issuer
    rootcertbundle: $dir/token.crt"
      ;;
    *) echo "registry.sh: unknown kind $kind (plain, tls or token)" >&2; exit 2 ;;
  esac
  cat >"$dir/config.yml" <<YAML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
  secret: $(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
$tls
$auth
YAML
  docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
  echo $! >"$dir/registry.pid"
  wait_port "$port"
  echo "127.0.0.1:$port"
}

stop() {
  local dir=$1
  for f in registry token-server; do
    if [[ -f "$dir/$f.pid" ]]; then
      local pid
      pid=$(cat "$dir/$f.pid")
      kill "$pid" 2>/dev/null || true
      # Wait (up to 5 s) so the caller can delete DIR without racing the process's last writes.
      for _ in $(seq 1 50); do
        [[ -e /proc/$pid && $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || break
        sleep 0.1
      done
      rm -f "$dir/$f.pid"
    fi
  done
}

case ${1:-} in
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  *) echo "usage: registry.sh start DIR plain|tls|token [PORT] | stop DIR" >&2; exit 2 ;;
esac
