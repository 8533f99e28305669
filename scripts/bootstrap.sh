#!/usr/bin/env bash
# Installs what nudgestream needs on a Debian/Ubuntu machine, idempotently:
#   system: Java 17 (runs Kafka), Maven (fetches Kafka's jars once), redis-server,
#           and with --test also prometheus (promtool and a real Prometheus for tests)
#           faketime (the suite's any-hour check) and chromium (the worker page's
#           headless-browser test);
#   Python: a virtualenv in .venv with nudgestream installed (editable), plus test extras.
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run again (it skips what is done).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WANT_TEST=0
[[ "${1:-}" == "--test" ]] && WANT_TEST=1

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

need_apt=()
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || [[ -f "${NUDGESTREAM_CACHE_DIR:-$HOME/.cache/nudgestream}/kafka-3.9.1/libs/kafka_2.13-3.9.1.jar" ]] || need_apt+=(maven)
command -v redis-server >/dev/null 2>&1 || [[ -x /usr/bin/redis-server ]] || need_apt+=(redis-server)
if [[ $WANT_TEST == 1 ]]; then
  command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
  command -v faketime >/dev/null 2>&1 || need_apt+=(faketime)
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
fi
if ((${#need_apt[@]})); then
  say "installing system packages: ${need_apt[*]}"
  SUDO=""
  [[ $(id -u) == 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # Debian starts packaged services on install; nudgestream runs its own on other ports.
  $SUDO systemctl disable --now redis-server prometheus >/dev/null 2>&1 || true
fi

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "nudgestream needs Python >= 3.11 (found: $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if [[ ! -x .venv/bin/python ]]; then
  say "creating the virtualenv .venv"
  "$PYTHON" -m venv .venv
fi
extras="rocksdb"
[[ $WANT_TEST == 1 ]] && extras="rocksdb,test"
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)-$extras"
if [[ ! -f "$stamp" ]]; then
  say "installing nudgestream and its Python dependencies into .venv ($extras)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$extras]"
  touch "$stamp"
fi
if [[ $WANT_TEST == 1 ]]; then
  # Deployment tests render and validate with the real tools: kustomize, and compose-go's
  # reference loader (the library `docker compose` itself uses), both built from Go modules.
  if [[ ! -x .venv/bin/kustomize || ! -x .venv/bin/compose-spec ]]; then
    command -v go >/dev/null 2>&1 || { echo "Go is needed once to build kustomize and compose-spec (apt-get install golang)" >&2; exit 1; }
    say "building kustomize and compose-spec from Go modules"
    GOBIN="$ROOT/.venv/bin" go install sigs.k8s.io/kustomize/kustomize/v5@v5.7.1
    tmp_bin="$(mktemp -d)"
    GOBIN="$tmp_bin" go install github.com/compose-spec/compose-go/v2/cmd@v2.16.2
    install -m 0755 "$tmp_bin/cmd" .venv/bin/compose-spec
    rm -rf "$tmp_bin"
  fi
fi

export PATH="$ROOT/.venv/bin:$PATH"
