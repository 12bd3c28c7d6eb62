#!/usr/bin/env bash
# Checks dist/imgd.service with `systemd-analyze verify`.
#
# The unit names /usr/local/bin/imgd, which a build machine does not have, so the check runs on
# a copy whose ExecStart=/ExecStartPre= point at the built binary (target/release/imgd, built
# here if missing; IMGD_BIN=/path overrides). Any diagnostic about the unit fails the check,
# including those that leave systemd-analyze's exit status at 0 (unknown keys, unparsable
# values). Diagnostics about other units or the host (no systemd running, a broken unit
# elsewhere on the system) are shown but do not fail it.
#
# Usage: scripts/verify-unit.sh [UNIT]   (default: dist/imgd.service)
# Runs from any directory, as root or not; needs systemd-analyze (Debian: the `systemd` package).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
unit="${1:-$root/dist/imgd.service}"

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "verify-unit: systemd-analyze not found (apt-get install systemd)" >&2
    exit 2
fi

bin="${IMGD_BIN:-}"
if [[ -z "$bin" ]]; then
    target_dir="${CARGO_TARGET_DIR:-$root/target}"
    bin="$target_dir/release/imgd"
    if [[ ! -x "$bin" ]]; then
        echo "verify-unit: building $bin" >&2
        (cd "$root" && cargo build --release -p imgd)
    fi
fi
if [[ ! -x "$bin" ]]; then
    echo "verify-unit: $bin is not an executable" >&2
    exit 2
fi
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
copy="$tmp/imgd.service"
# Only the Exec*= lines are rewritten; the rest of the unit is checked as shipped.
sed -E "s#^(Exec[A-Za-z]*=[-@:+!]*)/usr/local/bin/imgd( |\$)#\1$bin\2#" "$unit" >"$copy"
if grep -qE '^Exec[A-Za-z]*=.*/usr/local/bin/imgd' "$copy"; then
    echo "verify-unit: an Exec line was not rewritten:" >&2
    grep -nE '^Exec' "$copy" >&2
    exit 1
fi

status=0
output="$(systemd-analyze verify "$copy" 2>&1)" || status=$?

findings=()
while IFS= read -r line; do
    [[ -z "$line" ]] && continue
    if [[ "$line" == *"$copy"* || "$line" == *imgd.service* ]]; then
        findings+=("${line//$copy/dist/imgd.service}")
    else
        echo "verify-unit: (environment) $line" >&2
    fi
done <<<"$output"

if ((${#findings[@]} > 0)); then
    echo "verify-unit: dist/imgd.service has problems:" >&2
    printf '  %s\n' "${findings[@]}" >&2
    exit 1
fi
if ((status != 0)); then
    echo "verify-unit: systemd-analyze exited with $status without naming the unit;" \
        "treating it as an environment problem" >&2
fi
echo "verify-unit: dist/imgd.service OK (systemd $(systemd-analyze --version | awk 'NR==1 {print $2}'))"
