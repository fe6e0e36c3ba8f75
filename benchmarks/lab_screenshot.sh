#!/usr/bin/env bash
# Open a notebook in JupyterLab (the `lab` extra) in headless Chromium (Debian's `chromium` package) and save a
# screenshot of what a reader sees: the done-when check of issue 21 (recorded notebook 07 with its figures inline).
#   bash benchmarks/lab_screenshot.sh benchmarks/results/real/07_results.ipynb OUT.png [HEIGHT]
# The page is rendered at 1400 px wide and HEIGHT px tall (default 9000: JupyterLab scrolls inside its own panel, so a
# tall window is what shows a long notebook whole). The server runs on a free local port with a throw-away token.
set -euo pipefail
notebook=${1:?notebook path, relative to the project root}
out=${2:?output PNG}
height=${3:-9000}
root=$(cd "$(dirname "$0")/.." && pwd)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
token=$(python3 -c 'import secrets; print(secrets.token_hex(8))')
"$root/.venv/bin/jupyter-lab" --no-browser --port "$port" --IdentityProvider.token="$token" \
    --ServerApp.root_dir="$root" --allow-root > "${out%.png}.server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null' EXIT
for _ in $(seq 60); do curl -sf "http://127.0.0.1:$port/api?token=$token" > /dev/null && break; sleep 1; done
chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,"$height" \
    --virtual-time-budget=40000 --screenshot="$out" "http://127.0.0.1:$port/lab/tree/$notebook?token=$token" \
    2> "${out%.png}.chromium.log"
rm -f "${out%.png}.server.log" "${out%.png}.chromium.log"
echo "$out"
