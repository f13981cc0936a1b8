#!/usr/bin/env bash
# The long variant of the fault suite: many more crash cycles per test (EFA_SOAK=1).
# Tests run one at a time so that timing windows are not distorted by each other.
# Extra arguments go to the test binary, e.g. a test name filter.
# Replay a run's random choices with EFA_TEST_SEED=<seed printed by the test>.
set -euo pipefail
cd "$(dirname "$0")/../.."
EFA_SOAK=1 exec cargo test -p efa-tests --test fault -- --nocapture --test-threads=1 "$@"
