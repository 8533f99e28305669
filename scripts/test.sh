#!/usr/bin/env bash
# Command 2: install test dependencies, start the local Kafka (KRaft) broker and Redis,
# check style and types, and run the whole test suite (unit + integration, real services),
# then the unit and limiter tests again with the clock inside the quiet hours (faketime).
# Extra arguments go to pytest (e.g. scripts/test.sh -k ingest).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh" --test
say "starting the local Kafka broker and Redis (nudgestream services up)"
nudgestream services up
say "ruff (lint) and mypy (types)"
ruff check .
mypy
say "pytest: unit and integration tests"
pytest "$@"
if (($# == 0)); then
  say "the same limiter and policy tests with the clock inside the quiet hours (scripts/any-hour.sh)"
  bash scripts/any-hour.sh
fi
