#!/usr/bin/env bash
# The whole test suite: unit, integration (a real sshd on loopback, started by the tests), and
# the emulated aarch64 boards (tests/emulated/board.sh) when this machine can host them (root on
# Debian): two at once, the default "pi4" (cortex-a72) and "pi3" (cortex-a53, the environment
# in tests/emulated/pi3.env), each its own network namespace and root filesystem unpacked from
# the one cached tarball; both are taken down on exit, however the run ends.
# EDGEQ_TEST_BOARD=0 leaves the boards out; =1 insists on them.
set -euo pipefail
cd "$(dirname "$0")/.."

board=tests/emulated/board.sh
pi3_env=tests/emulated/pi3.env
want_board=${EDGEQ_TEST_BOARD:-auto}
board_started=0

# board.sh with the second board's environment (KEY=VALUE lines, comments skipped)
pi3() { env $(grep -v '^#' "$pi3_env") bash "$board" "$@"; }

cleanup() {
    if [ "$board_started" = 1 ]; then
        pi3 down || echo "warning: board.sh down (pi3) failed; run it by hand" >&2
        bash "$board" down || echo "warning: board.sh down failed; run it by hand" >&2
    fi
}
trap cleanup EXIT

if [ "$want_board" != 0 ] && [ -f "$board" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        board_started=1
        # one after the other: the first builds or checks the cache, qemu and binfmt once
        bash "$board" up
        pi3 up
        export EDGEQ_BOARD_READY=1
    elif [ "$want_board" = 1 ]; then
        echo "error: the emulated board needs root on a Debian machine" >&2
        exit 2
    else
        echo "note: not root on Debian: the emulated-board tests will be skipped" >&2
    fi
fi

python -m pytest -q "$@"
