#!/usr/bin/env bash
# The whole test suite: starts the local OCI registries the registry tests use, then runs pytest.
# Arguments are passed to pytest (e.g. `scripts/test.sh -m "not vm"` for the fast tests only).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/registry.sh start
exec python3 -m pytest "$@"
