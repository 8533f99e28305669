#!/usr/bin/env bash
# Command 2: install test dependencies, start the local Kafka (KRaft) broker and Redis,
# check style and types, and run the whole test suite (unit + integration, real services).
# Extra arguments go to pytest (e.g. scripts/test.sh -k ingest).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh" --test
say "starting the local Kafka broker and Redis (nudgestream services up)"
nudgestream services up
say "ruff (lint) and mypy (types)"
ruff check .
mypy
say "pytest: unit and integration tests"
exec pytest "$@"
