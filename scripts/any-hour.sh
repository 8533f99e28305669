#!/usr/bin/env bash
# The suite must pass at any hour: runs the unit tests and the Redis limiter, holdout and
# AUTH integration tests with the test process's clock set inside the default quiet hours
# (22:00-08:00 UTC), with libfaketime. Only the Python processes are faked: the local
# Kafka and Redis keep the machine's clock (load/services.py strips libfaketime's
# variables from what it starts). Called by scripts/test.sh; needs the services up.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v faketime >/dev/null || { echo "faketime is needed (apt-get install faketime)" >&2; exit 1; }
say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

quiet_hours_tests=(
  tests/unit models load -m "not slow"
  tests/integration/test_limiter_redis.py
)
late_evening_tests=(
  tests/integration/test_holdout.py
  "tests/integration/test_security.py::test_redis_clients_work_with_the_password_and_say_why_they_fail_without"
)
# Yesterday's times, so that every faked timestamp lies in the past at whatever hour CI runs.
# An offset from the real clock, not a start time ("@..."): libfaketime starts a start-time
# clock anew in every process, so a worker started two minutes into the run would lag the
# test process by two minutes and see its events arrive from the future.
for at in "yesterday 23:30" "yesterday 07:59"; do
  offset_s=$(( $(date -u -d "$at" +%s) - $(date -u +%s) ))
  extra=()
  [[ $at == *23:30 ]] && extra=("${late_evening_tests[@]}")
  say "pytest with the clock at $(date -u -d "$at" '+%Y-%m-%d %H:%M') UTC (inside the default quiet hours)"
  TZ=UTC faketime -f "${offset_s}s" pytest -q "${quiet_hours_tests[@]}" "${extra[@]}"
done
