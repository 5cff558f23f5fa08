#!/usr/bin/env bash
# Runs each C test program given as an argument, shows its output, and
# ends with the sum of their "N passed, M failed" lines. A program that
# crashes, times out or prints no summary counts as one failed test.
set -u

timeout_seconds=${C_TEST_TIMEOUT:-300}
# LAUNCHER runs each program under something, e.g. valgrind (make check-leaks).
read -r -a launcher <<< "${LAUNCHER:-}"
passed=0
failed=0
broken=()

for program in "$@"; do
    echo "== $program"
    log=$(mktemp)
    timeout --signal=KILL "$timeout_seconds" "${launcher[@]}" "$program" 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}
    summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
    rm -f "$log"
    if [ -z "$summary" ]; then
        echo "!! $program ended (status $status) without a summary line"
        failed=$((failed + 1))
        broken+=("$program")
        continue
    fi
    p=${summary%% passed*}
    f=${summary#*, }
    f=${f%% failed}
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "!! $program exited with status $status"
        failed=$((failed + 1))
        broken+=("$program")
    elif [ "$f" -ne 0 ]; then
        broken+=("$program")
    fi
done

echo
if [ ${#broken[@]} -ne 0 ]; then
    echo "failing programs: ${broken[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
