#!/usr/bin/env bash
# schemathesis against the hub at $SWITCH_TEST_URL (as scripts/with-hub.sh
# starts it), with an admin + publish token signed by its secret.
set -euo pipefail
cd "$(dirname "$0")/../.."
token="$(target/debug/switch-server --print-dev-token)"
exec .venv-schema/bin/st --config-file tests/schema/schemathesis.toml run \
  "$SWITCH_TEST_URL/openapi.json" \
  --header "Authorization: Bearer $token" \
  --seed 20261206 \
  --max-examples 50 \
  --no-color
