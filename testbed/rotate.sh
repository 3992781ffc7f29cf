#!/usr/bin/env bash
# Rotating outages: of N paths, all but one are blackholed; every PERIOD
# seconds the working path changes. Runs for DURATION seconds, then restores
# every path. Prints "<unix time ms> path <k> up" at each change.
#
# usage: testbed/rotate.sh PREFIX PATHS PERIOD DURATION
set -euo pipefail

prefix=${1:?PREFIX}
paths=${2:?number of paths}
period=${3:?seconds between rotations}
duration=${4:?total seconds}
here=$(dirname "$0")

restore_all() {
    for p in $(seq 1 "$paths"); do "$here/fault.sh" "$prefix" "$p" restore || true; done
}
trap restore_all EXIT

end=$(($(date +%s) + duration))
up=1
while [ "$(date +%s)" -lt "$end" ]; do
    for p in $(seq 1 "$paths"); do
        "$here/fault.sh" "$prefix" "$p" restore
        if [ "$p" -ne "$up" ]; then "$here/fault.sh" "$prefix" "$p" blackhole; fi
    done
    echo "$(date +%s%3N) path $up up"
    sleep "$period"
    up=$((up % paths + 1))
done
