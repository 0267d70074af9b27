#!/usr/bin/env bash
# deploy.sh: provision a device (Raspberry Pi / ARM board / this machine) for the edgeq agent.
#
# `edgeq deploy` pushes this script with the agent code and runs it; it also works by hand
# for people who provision boards themselves (see --help). It
#   - detects the architecture (uname -m), python3 (>= 3.9) and glibc,
#   - uses only a directory that is new, empty, or edgeq's (marked `.edgeq-store`, or laid
#     out by an earlier edgeq), owned by this user, mode 0700 (edgeq.device.install claim),
#   - reuses the venv under $EDGEQ_HOME/venv when its runtime imports, else builds a new one
#     in $EDGEQ_HOME/.venv.new and swaps it in only once its runtime imports (the previous
#     venv stays usable until then; a venv without edgeq's `.edgeq-venv` marker is never
#     replaced), or records an existing interpreter with --python; the runtime is the one
#     that fits (ai-edge-litert where a wheel exists, else tflite-runtime 2.14 with numpy<2),
#     with numpy and psutil, from the package index or offline from --wheels DIR,
#   - with --release ID, takes the agent code from agent-releases/ID and points the agent
#     symlink at it only once all of the above worked (a failed run leaves the previous one),
#   - (re)starts the agent daemon only when its code, interpreter or unit changed, after
#     waiting (at most --wait-idle-s) for a running measurement to finish: a systemd user
#     unit where `systemctl --user` works, a pidfile daemon otherwise,
#   - prints one machine-readable last line: EDGEQ_DEPLOY {json}.
# Running it twice with the same runtime reinstalls and restarts nothing.
set -euo pipefail

PROG=deploy.sh
usage() {
  cat <<'EOF'
usage: bash deploy.sh [--home DIR] [--runtime auto|litert|tflite-runtime] [--wheels DIR]
                      [--python PATH] [--release ID] [--wait-idle-s N] [--no-daemon]

Provision this machine for the edgeq on-device agent.

  --home DIR        the edgeq directory (default $EDGEQ_HOME or ~/.edgeq): new, empty, or
                    edgeq's; the agent code must be in DIR/agent/edgeq/device
  --release ID      take the agent code from DIR/agent-releases/ID and switch DIR/agent to
                    it once everything else worked (edgeq deploy passes this)
  --wait-idle-s N   before restarting the daemon, wait at most N s (default 900) for a
                    running measurement to finish
  --runtime R       auto (default: ai-edge-litert where a wheel exists, else tflite-runtime),
                    litert, or tflite-runtime (2.14, Python <= 3.11, numpy<2)
  --wheels DIR      install offline from the wheels in DIR (pip --no-index --find-links DIR)
  --python PATH     use this interpreter (it must already have a runtime, numpy and psutil)
                    instead of a venv; recorded as DIR/bin/python
  --no-daemon       install everything but leave the daemon stopped
  -h, --help        this help

The last line of output is `EDGEQ_DEPLOY {json}` with arch, python, glibc, runtime,
runtime_version, venv (created|reused|external) and daemon state.
EOF
}

die() { echo "error: $1" >&2; [ -n "${2:-}" ] && echo "hint: $2" >&2; exit 1; }
log() { echo "[$PROG] $*" >&2; }

HOME_DIR="${EDGEQ_HOME:-$HOME/.edgeq}"
RUNTIME=auto
WHEELS=""
PYTHON_GIVEN=""
RELEASE=""
WAIT_IDLE_S=900
START_DAEMON=1
while [ $# -gt 0 ]; do
  case "$1" in
    --home) [ $# -ge 2 ] || die "--home needs a directory" "see --help"; HOME_DIR="$2"; shift 2 ;;
    --runtime) [ $# -ge 2 ] || die "--runtime needs a value" "see --help"; RUNTIME="$2"; shift 2 ;;
    --wheels) [ $# -ge 2 ] || die "--wheels needs a directory" "see --help"; WHEELS="$2"; shift 2 ;;
    --python) [ $# -ge 2 ] || die "--python needs a path" "see --help"; PYTHON_GIVEN="$2"; shift 2 ;;
    --release) [ $# -ge 2 ] || die "--release needs an id" "see --help"; RELEASE="$2"; shift 2 ;;
    --wait-idle-s) [ $# -ge 2 ] || die "--wait-idle-s needs seconds" "see --help"; WAIT_IDLE_S="$2"; shift 2 ;;
    --no-daemon) START_DAEMON=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1" "see bash deploy.sh --help" ;;
  esac
done
case "$RUNTIME" in auto|litert|tflite-runtime) ;; *)
  die "unknown runtime $RUNTIME" "use auto, litert or tflite-runtime" ;; esac
case "$WAIT_IDLE_S" in ''|*[!0-9]*) die "--wait-idle-s $WAIT_IDLE_S is not a whole number" "see --help" ;; esac
case "$RELEASE" in */*|.*) die "--release $RELEASE is not a release id" "see --help" ;; esac
case "$HOME_DIR" in "~") HOME_DIR="$HOME" ;; "~/"*) HOME_DIR="$HOME/${HOME_DIR#\~/}" ;; esac
[ -d "$HOME_DIR" ] || die "$HOME_DIR does not exist" "run edgeq deploy, which creates it"
HOME_DIR="$(cd "$HOME_DIR" && pwd -P)"
AGENT="$HOME_DIR/agent"
AGENT_SRC="$AGENT"
[ -z "$RELEASE" ] || AGENT_SRC="$HOME_DIR/agent-releases/$RELEASE"
[ -f "$AGENT_SRC/edgeq/device/__main__.py" ] || \
  die "no agent code in $AGENT_SRC/edgeq/device" "run edgeq deploy, or copy device/*.py there"
# the host's Python settings must not leak into the device's interpreter
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV 2>/dev/null || true

# ---- what is this machine ----------------------------------------------------------------
ARCH="$(uname -m)"
SYS_PY="$(command -v python3 || true)"
[ -n "$SYS_PY" ] || [ -n "$PYTHON_GIVEN" ] || \
  die "python3 is not installed" "sudo apt install python3 python3-venv"
GLIBC="$(ldd --version 2>/dev/null | head -n1 | grep -oE '[0-9]+\.[0-9]+$' || true)"
# the store's own code (standard library only) checks and marks the directory
install_op() { env PYTHONPATH="$AGENT_SRC" "${PYTHON_GIVEN:-$SYS_PY}" -m edgeq.device.install --home "$HOME_DIR" "$@"; }
install_op claim >/dev/null || exit 1
mkdir -p "$HOME_DIR/bin" "$HOME_DIR/logs"

# ---- the interpreter ----------------------------------------------------------------------
VENV="$HOME_DIR/venv"
NEW_VENV="$HOME_DIR/.venv.new"
OLD_VENV="$HOME_DIR/.venv.old"
VENV_MARKER=.edgeq-venv
if [ -n "$PYTHON_GIVEN" ]; then
  [ -x "$PYTHON_GIVEN" ] || die "--python $PYTHON_GIVEN is not an executable" "give a python path"
  PY="$PYTHON_GIVEN"
  VENV_STATE=external
else
  "$SYS_PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' || \
    die "python3 is $("$SYS_PY" -V 2>&1); the agent needs Python >= 3.9" \
        "install a newer python3 (Raspberry Pi OS bullseye or later)"
  SYS_VER="$("$SYS_PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  # a new venv, built beside the current one, which stays usable until the swap below
  make_new_venv() {
    "$SYS_PY" -c 'import venv, ensurepip' 2>/dev/null || \
      die "python3 cannot create virtual environments (venv/ensurepip missing)" \
          "sudo apt install python3-venv"
    rm -rf "$NEW_VENV"
    log "creating a new venv (Python $SYS_VER) in $NEW_VENV"
    "$SYS_PY" -m venv "$NEW_VENV" >&2 || die "creating the venv $NEW_VENV failed" "sudo apt install python3-venv"
    printf 'created by edgeq deploy.sh\n' > "$NEW_VENV/$VENV_MARKER"
    VENV_STATE=created
    PY="$NEW_VENV/bin/python"
  }
  # a swap cut short between its two renames: put the previous venv back
  if [ ! -e "$VENV" ] && [ -f "$OLD_VENV/$VENV_MARKER" ]; then mv "$OLD_VENV" "$VENV"; fi
  if [ -e "$VENV" ] && [ ! -f "$VENV/$VENV_MARKER" ]; then
    die "$VENV was not created by edgeq (no $VENV_MARKER in it); edgeq does not touch it" \
        "move it away, or deploy with --python PATH to use that interpreter"
  fi
  # reuse the venv when it is of the same Python (its runtime is checked below)
  if [ -x "$VENV/bin/python" ] && \
     [ "$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$SYS_VER" ]; then
    VENV_STATE=reused
    PY="$VENV/bin/python"
  else
    make_new_venv
  fi
fi
PYVER="$("$PY" -c 'import platform; print(platform.python_version())')"
if [ -z "$GLIBC" ]; then
  GLIBC="$("$PY" -c 'import platform; print(platform.libc_ver()[1])' || true)"
fi

# which runtime the interpreter can import now ("name version"), with numpy and psutil
runtime_now() {
  "$PY" - "$1" <<'EOF' 2>/dev/null || true
import sys
from importlib import import_module, metadata
want = sys.argv[1]
cands = {"litert": [("ai-edge-litert", "ai_edge_litert.interpreter")],
         "tflite-runtime": [("tflite-runtime", "tflite_runtime.interpreter")]}
order = cands.get(want) or cands["litert"] + cands["tflite-runtime"]
import numpy, psutil  # noqa: F401  (both are needed by the agent)
for dist, mod in order:
    try:
        import_module(mod)
        print(dist, metadata.version(dist))
        break
    except Exception:
        continue
EOF
}

# ---- the runtime --------------------------------------------------------------------------
HAVE=""
[ "$VENV_STATE" = created ] || HAVE="$(runtime_now "$RUNTIME")"
if [ -n "$HAVE" ]; then
  log "runtime already installed: $HAVE"
elif [ "$VENV_STATE" = external ]; then
  die "$PY has no usable TFLite runtime with numpy and psutil" \
      "pip install ai-edge-litert numpy psutil into it, or deploy without --python"
else
  [ "$VENV_STATE" = created ] || make_new_venv
  PIP=("$PY" -m pip --disable-pip-version-check --no-input)
  if [ -n "$WHEELS" ]; then
    # offline: only the pushed wheels count; no PIP_* settings from the environment
    for v in $(env | sed -n 's/^\(PIP_[A-Za-z0-9_]*\)=.*/\1/p'); do unset "$v"; done
    [ -d "$WHEELS" ] || die "--wheels $WHEELS is not a directory" "push the wheels first"
    PIP+=(install --no-index --find-links "$WHEELS")
  else
    PIP+=(install)
  fi
  try_install() {
    log "installing $*"
    "${PIP[@]}" "$@" >&2
  }
  PYMINOR="$("$PY" -c 'import sys; print(sys.version_info[1])')"
  case "$RUNTIME" in
    litert) try_install ai-edge-litert numpy psutil || \
        die "installing ai-edge-litert failed" "no wheel for $ARCH/Python $PYVER? try --runtime tflite-runtime" ;;
    tflite-runtime)
      [ "$PYMINOR" -le 11 ] || die "tflite-runtime has no wheels for Python $PYVER" "use --runtime litert"
      try_install "tflite-runtime==2.14.0" "numpy<2" psutil || \
        die "installing tflite-runtime failed" "check the wheels / index, or try --runtime litert" ;;
    auto)
      if ! try_install ai-edge-litert numpy psutil; then
        log "no ai-edge-litert for $ARCH/Python $PYVER; trying tflite-runtime 2.14 with numpy<2"
        [ "$PYMINOR" -le 11 ] || die "no runtime wheels for Python $PYVER on $ARCH" \
          "use a board with Python <= 3.11, or one where ai-edge-litert has wheels"
        try_install "tflite-runtime==2.14.0" "numpy<2" psutil || \
          die "installing a TFLite runtime failed" "check the wheels / index (pip's output is above)"
      fi ;;
  esac
  HAVE="$(runtime_now "$RUNTIME")"
  [ -n "$HAVE" ] || die "the runtime was installed but does not import" \
    "run $PY -c 'import ai_edge_litert.interpreter' to see why"
  # complete: swap it in (two renames; an interruption between them is undone next run)
  rm -rf "$OLD_VENV"
  if [ -e "$VENV" ]; then mv "$VENV" "$OLD_VENV"; fi
  mv "$NEW_VENV" "$VENV"
  rm -rf "$OLD_VENV"
  PY="$VENV/bin/python"
  log "the new venv is in place: $HAVE"
fi
RT_NAME="${HAVE%% *}"
RT_VERSION="${HAVE#* }"

# $HOME_DIR/bin/python, the one interpreter the host's agent commands use, is written only
# once the runtime imports (a failed run leaves the previous one). A tiny exec wrapper, not
# a symlink: a venv's python started through a symlink elsewhere would not find
# the venv (pyvenv.cfg is looked up next to the path it was started as).
# The wrapper carries a marker line; a bin/python without it (and not an earlier edgeq's
# two-line wrapper) is someone else's and is never overwritten.
WRAPPER_MARK="# edgeq deploy.sh: the device's interpreter"
ours_wrapper() {
  [ ! -e "$1" ] && [ ! -L "$1" ] && return 0
  [ -f "$1" ] && [ ! -L "$1" ] || return 1
  grep -qxF "$WRAPPER_MARK" "$1" && return 0
  [ "$(wc -l < "$1")" -eq 2 ] && [ "$(head -n1 "$1")" = '#!/bin/sh' ] && \
    sed -n 2p "$1" | grep -q "^exec '.*' \"\\\$@\"\$"
}
ours_wrapper "$HOME_DIR/bin/python" || \
  die "$HOME_DIR/bin/python was not written by edgeq; edgeq does not overwrite it" \
      "move it away, or choose another --device-dir"
PYQ="'${PY//\'/\'\\\'\'}'"
printf '#!/bin/sh\n%s\nexec %s "$@"\n' "$WRAPPER_MARK" "$PYQ" > "$HOME_DIR/bin/.python.$$"
chmod 755 "$HOME_DIR/bin/.python.$$"
mv -f "$HOME_DIR/bin/.python.$$" "$HOME_DIR/bin/python"

# ---- the agent imports with this interpreter; then (and only then) it becomes current -------
agent_new() { env PYTHONPATH="$AGENT_SRC" "$HOME_DIR/bin/python" -m edgeq.device --home "$HOME_DIR" "$@"; }
agent_new --version >/dev/null || die "the agent does not start with $PY" "deploy again (edgeq deploy)"
if [ -n "$RELEASE" ]; then
  install_op link "$RELEASE" >/dev/null || die "switching $AGENT to release $RELEASE failed" \
    "deploy again (edgeq deploy)"
fi
agent() { env PYTHONPATH="$AGENT" "$HOME_DIR/bin/python" -m edgeq.device --home "$HOME_DIR" "$@"; }
RELEASE_NOW="$(basename "$(readlink "$AGENT" 2>/dev/null || echo "$AGENT")")"

# ---- the daemon ---------------------------------------------------------------------------
# The daemon is restarted only when its code, its interpreter or its unit changed: a deploy
# of other models leaves it (and any measurement it is running) alone. Before a restart,
# wait (at most --wait-idle-s) until no client is in the middle of a measurement run.
daemon_query() {  # daemon_query same|busy|pid: ask the running daemon's status
  agent status --json 2>/dev/null | "$HOME_DIR/bin/python" -c '
import json, sys
what, release, python = sys.argv[1:4]
try:
    d = json.loads(sys.stdin.read())
except ValueError:
    sys.exit(1)
if what == "same":
    sys.exit(0 if d.get("agent_release") == release and d.get("python_executable") == python
             else 1)
if what == "busy":
    sys.exit(0 if d.get("busy") or d.get("active_runs") else 1)
print(d.get("pid"))' "$1" "$RELEASE_NOW" "$PY" 2>/dev/null
}
wait_idle() {
  daemon_query busy || return 0
  log "a measurement is running on this device; waiting up to $WAIT_IDLE_S s for it to finish before restarting the daemon"
  waited=0
  while daemon_query busy; do
    if [ "$waited" -ge "$WAIT_IDLE_S" ]; then
      log "still measuring after $WAIT_IDLE_S s; restarting the daemon anyway (that run fails)"
      return 0
    fi
    sleep 1
    waited=$((waited + 1))
  done
  log "the measurement finished after ${waited} s; restarting the daemon"
}
KEEP=0
if [ "$START_DAEMON" = 1 ] && [ "$VENV_STATE" != created ] && daemon_query same; then KEEP=1; fi
DAEMON=stopped
UNIT=""
if command -v systemctl >/dev/null 2>&1 && systemctl --user show-environment >/dev/null 2>&1; then
  if [ "$HOME_DIR" = "$HOME/.edgeq" ]; then UNIT=edgeq-agent.service
  else UNIT="edgeq-agent-$(printf '%s' "$HOME_DIR" | sha256sum | cut -c1-8).service"; fi
fi
if [ -n "$UNIT" ]; then
  UNIT_DIR="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"
  mkdir -p "$UNIT_DIR"
  # the template names %h/.edgeq; the store's code writes this directory's paths, escaped
  install_op unit "$AGENT/edgeq/device/edgeq-agent.service" "$UNIT_DIR/.$UNIT.new" >/dev/null \
    || die "writing the systemd unit $UNIT failed" "check $UNIT_DIR"
  if cmp -s "$UNIT_DIR/.$UNIT.new" "$UNIT_DIR/$UNIT"; then rm -f "$UNIT_DIR/.$UNIT.new"
  else
    mv -f "$UNIT_DIR/.$UNIT.new" "$UNIT_DIR/$UNIT"
    systemctl --user daemon-reload
    KEEP=0
  fi
  if [ "$START_DAEMON" = 1 ]; then
    systemctl --user enable "$UNIT" >/dev/null 2>&1 || true
    command -v loginctl >/dev/null 2>&1 && loginctl enable-linger "$(id -un)" 2>/dev/null || true
  fi
  if [ "$KEEP" = 1 ] && systemctl --user is-active --quiet "$UNIT"; then
    DAEMON="running (systemd $UNIT, pid $(daemon_query pid); unchanged, not restarted)"
  else
    wait_idle
    agent stop >/dev/null 2>&1 || true   # a pidfile daemon from an earlier deploy
    if [ "$START_DAEMON" = 1 ]; then
      if systemctl --user restart "$UNIT"; then DAEMON="running (systemd $UNIT)"
      else DAEMON="failed (systemd $UNIT)"; fi
    else
      systemctl --user stop "$UNIT" >/dev/null 2>&1 || true
    fi
  fi
elif [ "$KEEP" = 1 ]; then
  DAEMON="running (pid $(daemon_query pid); unchanged, not restarted)"
else
  wait_idle
  set +e
  agent stop >/dev/null 2>&1
  rc=$?
  set -e
  [ $rc -eq 0 ] || [ $rc -eq 3 ] || log "stopping the old daemon exited $rc"
  if [ "$START_DAEMON" = 1 ]; then
    if agent serve --detach >&2; then
      DAEMON="running (pid $(cat "$HOME_DIR/agent.pid" 2>/dev/null || echo '?'))"
    else
      DAEMON="failed; see $HOME_DIR/logs/agent.log"
    fi
  fi
fi
answers() {  # the daemon answers its status within ~10 s
  for _ in $(seq 1 50); do
    if agent status >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  return 1
}
case "$DAEMON" in
  running*) answers || DAEMON="not answering; see $HOME_DIR/logs/agent.log" ;;
esac
case "$START_DAEMON:$UNIT:$DAEMON" in 1:?*:failed*|1:?*:not\ answering*)
  # the unit did not give an answering daemon (e.g. a kernel without the namespaces its
  # sandboxing needs): run the same daemon with a pidfile instead, and disable the unit so
  # that nothing (a reboot, bench-remote's restart) starts it again
  log "the systemd unit $UNIT gave no answering daemon (journalctl --user -u $UNIT);" \
      "running it with a pidfile instead"
  systemctl --user stop "$UNIT" >/dev/null 2>&1 || true
  systemctl --user disable "$UNIT" >/dev/null 2>&1 || true
  if agent serve --detach >&2 && answers; then
    DAEMON="running (pid $(cat "$HOME_DIR/agent.pid" 2>/dev/null || echo '?'); systemd unit $UNIT failed, disabled)"
  else
    DAEMON="failed; see $HOME_DIR/logs/agent.log and journalctl --user -u $UNIT"
  fi ;;
esac

# ---- the machine-readable summary ---------------------------------------------------------
"$HOME_DIR/bin/python" - "$ARCH" "$PYVER" "$GLIBC" "$RT_NAME" "$RT_VERSION" "$VENV_STATE" \
  "$DAEMON" "$HOME_DIR" "$UNIT" "$PY" <<'EOF'
import json, sys
keys = ["arch", "python", "glibc", "runtime", "runtime_version", "venv", "daemon", "home",
        "unit", "python_path"]
doc = dict(zip(keys, sys.argv[1:]))
doc["unit"] = doc["unit"] or None
print("EDGEQ_DEPLOY " + json.dumps(doc, sort_keys=True))
EOF
