# Shared by the scripts in this folder: paths and the cargo target directory.
# shellcheck shell=bash
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
SWITCHBOARD_BIN="$CARGO_TARGET_DIR/release/switchboard"
export SWITCHBOARD_BIN

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# The local PostgreSQL and Redis the tests use; started if they are installed but not running.
ensure_services() {
  export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
  export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
  if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
    if command -v pg_ctlcluster >/dev/null 2>&1; then
      say "starting PostgreSQL"
      for v in /etc/postgresql/*; do
        pg_ctlcluster --skip-systemctl-redirect "$(basename "$v")" main start || true
      done
      for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
    fi
  fi
  if command -v redis-cli >/dev/null 2>&1 && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    if command -v redis-server >/dev/null 2>&1; then
      say "starting Redis"
      redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null || true
      for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.2; done
    fi
  fi
}

# The Python venv for tests that drive Switchboard with official client libraries: one venv with the
# pinned requirements of every folder under tests/python that has tests.
ensure_venv() {
  local venv="${SWITCHBOARD_VENV:-$ROOT/.venv}"
  local files=()
  while IFS= read -r f; do
    if find "$(dirname "$f")" -maxdepth 1 -name 'test_*.py' | grep -q .; then files+=("$f"); fi
  done < <(find "$ROOT/tests/python" -name requirements.txt 2>/dev/null | sort)
  [ ${#files[@]} -gt 0 ] || return 0
  local stamp="$venv/.requirements.sha256"
  local want
  want="$(cat "${files[@]}" | sort -u | sha256sum | cut -d' ' -f1)"
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "creating the Python test environment in $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    # One pin per package across the folders: the same line may appear in several files.
    cat "${files[@]}" | grep -v '^\s*#' | sort -u > "$venv/requirements.txt"
    grep -qi '^pytest==' "$venv/requirements.txt" || echo 'pytest==9.2.0' >> "$venv/requirements.txt"
    "$venv/bin/pip" install -q -r "$venv/requirements.txt"
    echo "$want" > "$stamp"
  fi
  export SWITCHBOARD_VENV="$venv"
}

# The browser tests in tests/browser: Debian's Chromium, Node.js and the pinned playwright-core
# (which never downloads a browser of its own). Installs what is missing with apt-get and npm.
# Returns non-zero, after saying so loudly, only when Chromium is missing and apt-get is not there
# to install it.
ensure_browser() {
  export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
  export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
  local need=()
  [ -x "$CHROMIUM" ] || need+=(chromium)
  command -v node >/dev/null 2>&1 || need+=(nodejs)
  command -v npm >/dev/null 2>&1 || need+=(npm)
  if [ ${#need[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
      printf '\n\033[1;31m!!! SKIPPING THE BROWSER TESTS: %s missing and apt-get is not available to install them !!!\033[0m\n\n' \
        "${need[*]}" >&2
      return 1
    fi
    local sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo)
    say "installing ${need[*]} (Debian packages) for the browser tests"
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q "${need[@]}" >/dev/null ||
      { "${sudo[@]}" apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q "${need[@]}" >/dev/null; }
  fi
  local dir="$ROOT/tests/browser"
  local stamp="$dir/node_modules/.package-lock.sha256"
  local want
  want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing the browser test dependencies (npm ci in tests/browser)"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" > "$stamp"
  fi
}
