# Shared by the check scripts (ops-checks.sh, deploy-checks.sh): run named
# checks, count them, and end with the `N passed, N failed` line CI reads.
# The sourcing script sets WORK (a scratch directory) and started_at.

passed=0
failed=0
failures=()

# check NAME COMMAND...: runs COMMAND, quiet on success, its output on failure.
check() {
    local name="$1"
    shift
    local log="$WORK/check.log"
    if "$@" >"$log" 2>&1; then
        passed=$((passed + 1))
        echo "ok      $name"
    else
        failed=$((failed + 1))
        failures+=("$name")
        echo "FAILED  $name"
        sed 's/^/        /' "$log"
    fi
}

# summary LABEL: prints the totals and exits non-zero if any check failed.
summary() {
    echo "$1: $passed passed, $failed failed ($((SECONDS - started_at)) s)"
    if [ "$failed" -gt 0 ]; then
        printf '  failed: %s\n' "${failures[@]}"
        exit 1
    fi
}
