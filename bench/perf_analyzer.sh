#!/usr/bin/env bash
# Drive modelport's Open Inference Protocol v2 endpoint with Triton's perf_analyzer (binary tensors, HTTP).
#
#   bench/perf_analyzer.sh [URL] [MODEL] [extra perf_analyzer flags...]
#   e.g. bench/perf_analyzer.sh                          # starts its own demo server, sales_forecast, c=1..64
#        bench/perf_analyzer.sh 127.0.0.1:8000 fraud_detector --concurrency-range 8 -b 16
#
# perf_analyzer ships inside the tritonclient 2.50.0 manylinux wheel (later wheels need glibc 2.38 or carry no
# binary). On a noisy shared machine stability is loosened (-s 50). That wheel pins numpy<2, so it is installed with --no-deps into its own directory ($TOOLS), never into the
# project's environment. The binary needs libb64 (apt-get install -y libb64-0d) and libcudart.so.12 (from the
# nvidia-cuda-runtime-cu12 wheel); no GPU is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
TOOLS=${TOOLS:-/tmp/modelport-bench-tools}
if [ ! -x "$TOOLS/bin/perf_analyzer" ]; then
  "$PY" -m pip install --quiet --no-deps --target "$TOOLS" "tritonclient==2.50.0" "nvidia-cuda-runtime-cu12>=12,<13"
fi
if ! ldconfig -p | grep -q libb64; then
  echo "perf_analyzer needs libb64: apt-get install -y libb64-0d" >&2
  exit 2
fi
export LD_LIBRARY_PATH="$TOOLS/nvidia/cuda_runtime/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
URL=${1:-}
MODEL=${2:-sales_forecast}
shift $(( $# > 2 ? 2 : $# ))
SERVER_PID=""
if [ -z "$URL" ]; then
  STATE=$(mktemp -d /tmp/modelport-pa-XXXX)
  .venv/bin/modelport demo --no-serve --state-dir "$STATE" --log-level WARNING > /dev/null
  PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  MODELPORT_LOG_LEVEL=WARNING .venv/bin/modelport serve "models:/$MODEL@champion" --state-dir "$STATE" \
    --port "$PORT" > "$STATE/server.log" 2>&1 &
  SERVER_PID=$!
  trap 'kill $SERVER_PID 2>/dev/null || true' EXIT
  URL=127.0.0.1:$PORT
  for _ in $(seq 300); do
    curl -sf "http://$URL/v2/health/ready" > /dev/null && break
    sleep 0.2
  done
fi
ARGS=("$@")
[ ${#ARGS[@]} -eq 0 ] && ARGS=(--concurrency-range 1:64:4 -b 1)
"$TOOLS/bin/perf_analyzer" -m "$MODEL" -u "$URL" -i http --measurement-interval 3000 --percentile 99 --stability-percentage 50 --max-trials 6 "${ARGS[@]}"
