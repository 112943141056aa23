#!/usr/bin/env bash
# Check the light install (requirements.txt, what Streamlit Community Cloud installs): in a
# fresh venv without torch or diffusers the app starts, renders every page and generates
# through the remote backend. The remote side is the loopback text-to-image server run by
# the main .venv (it needs the tiny real pipeline, hence torch); only HTTP crosses over.
#
# Usage: scripts/check_light_install.sh   (after `make install`; takes a minute or two)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$(mktemp -d /tmp/sd35-light.XXXXXX)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "light install: creating $work/venv"
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q -r requirements.txt
for module in torch diffusers transformers; do
  if "$work/venv/bin/python" -c "import $module" 2>/dev/null; then
    echo "FAIL: $module is importable in the light install" >&2
    exit 1
  fi
done

# The seed history's PostgreSQL stack (SD_HISTORY_URL) must import without apt packages:
# psycopg's binary wheel carries its own libpq.
"$work/venv/bin/python" -c "import alembic, psycopg, sqlalchemy; print('light install: history drivers', sqlalchemy.__version__, psycopg.__version__, 'libpq', psycopg.pq.version())"

# The server prints its URL on stdout once it listens.
env -u HF_HUB_OFFLINE .venv/bin/python -m testkit.loopback_server >"$work/url" 2>"$work/server.log" &
server_pid=$!
url=""
for _ in $(seq 1 600); do
  url=$(head -n 1 "$work/url" 2>/dev/null || true)
  if [ -n "$url" ]; then break; fi
  if ! kill -0 "$server_pid" 2>/dev/null; then
    cat "$work/server.log" >&2
    echo "FAIL: the loopback server did not start" >&2
    exit 1
  fi
  sleep 0.2
done
if [ -z "$url" ]; then echo "FAIL: no server URL after 120 s" >&2; exit 1; fi

cd "$work"  # run the app from its own copy of nothing: only the checkout's path is added
env -u HF_HUB_OFFLINE -u SD_MODEL -u SD_DEVICE -u SD_DTYPE -u SD_PROVIDER \
  SD_BACKEND=remote SD_REMOTE_URL="$url/" SD_DATA_DIR="$work/data" PYTHONPATH="$root" \
  APP_ROOT="$root" "$work/venv/bin/python" "$root/scripts/light_install_check.py"
