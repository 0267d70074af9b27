#!/usr/bin/env bash
# The whole test suite: unit, integration (a real sshd on loopback, started by the tests), and
# the end-to-end run on the emulated aarch64 board (tests/emulated/board.sh) when this machine
# can host it (root on Debian). EDGEQ_TEST_BOARD=0 leaves the board out; =1 insists on it.
set -euo pipefail
cd "$(dirname "$0")/.."

board=tests/emulated/board.sh
want_board=${EDGEQ_TEST_BOARD:-auto}
board_started=0

cleanup() {
    if [ "$board_started" = 1 ]; then
        bash "$board" down || echo "warning: board.sh down failed; run it by hand" >&2
    fi
}
trap cleanup EXIT

if [ "$want_board" != 0 ] && [ -f "$board" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        board_started=1
        bash "$board" up
        export EDGEQ_BOARD_READY=1
    elif [ "$want_board" = 1 ]; then
        echo "error: the emulated board needs root on a Debian machine" >&2
        exit 2
    else
        echo "note: not root on Debian: the emulated-board tests will be skipped" >&2
    fi
fi

python -m pytest -q "$@"
