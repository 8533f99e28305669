#!/usr/bin/env bash
# Command 1: install what is needed, then run the main job (see README):
# a local Kafka broker (KRaft) and Redis, one worker, a realistic event stream, a live
# summary, then a clean shutdown. Arguments go to `nudgestream demo` (try --help).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
exec nudgestream demo "$@"
