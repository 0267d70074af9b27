#!/usr/bin/env bash
# deploy.sh: provision a device (Raspberry Pi / ARM board / this machine) for the edgeq agent.
#
# `edgeq deploy` pushes this script with the agent code and runs it; it also works by hand
# for people who provision boards themselves (see --help). It
#   - detects the architecture (uname -m), python3 (>= 3.9) and glibc,
#   - creates or reuses a virtual environment under $EDGEQ_HOME/venv (or records an existing
#     interpreter with --python), and installs the TFLite runtime that fits (ai-edge-litert
#     where a wheel exists, else tflite-runtime 2.14 with numpy<2), numpy and psutil, from
#     the package index or offline from --wheels DIR,
#   - installs and (re)starts the agent daemon: a systemd user unit where `systemctl --user`
#     works, a pidfile daemon otherwise,
#   - prints one machine-readable last line: EDGEQ_DEPLOY {json}.
# Running it twice with the same runtime reinstalls nothing.
set -euo pipefail

PROG=deploy.sh
usage() {
  cat <<'EOF'
usage: bash deploy.sh [--home DIR] [--runtime auto|litert|tflite-runtime] [--wheels DIR]
                      [--python PATH] [--no-daemon]

Provision this machine for the edgeq on-device agent.

  --home DIR        the edgeq directory (default $EDGEQ_HOME or ~/.edgeq); the agent code
                    must be in DIR/agent/edgeq/device (edgeq deploy puts it there)
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
START_DAEMON=1
while [ $# -gt 0 ]; do
  case "$1" in
    --home) [ $# -ge 2 ] || die "--home needs a directory" "see --help"; HOME_DIR="$2"; shift 2 ;;
    --runtime) [ $# -ge 2 ] || die "--runtime needs a value" "see --help"; RUNTIME="$2"; shift 2 ;;
    --wheels) [ $# -ge 2 ] || die "--wheels needs a directory" "see --help"; WHEELS="$2"; shift 2 ;;
    --python) [ $# -ge 2 ] || die "--python needs a path" "see --help"; PYTHON_GIVEN="$2"; shift 2 ;;
    --no-daemon) START_DAEMON=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1" "see bash deploy.sh --help" ;;
  esac
done
case "$RUNTIME" in auto|litert|tflite-runtime) ;; *)
  die "unknown runtime $RUNTIME" "use auto, litert or tflite-runtime" ;; esac
case "$HOME_DIR" in "~") HOME_DIR="$HOME" ;; "~/"*) HOME_DIR="$HOME/${HOME_DIR#\~/}" ;; esac
mkdir -p "$HOME_DIR" "$HOME_DIR/bin" "$HOME_DIR/logs"
HOME_DIR="$(cd "$HOME_DIR" && pwd -P)"
AGENT="$HOME_DIR/agent"
[ -f "$AGENT/edgeq/device/__main__.py" ] || \
  die "no agent code in $AGENT/edgeq/device" "run edgeq deploy, or copy device/*.py there"
# the host's Python settings must not leak into the device's interpreter
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV 2>/dev/null || true

# ---- what is this machine ----------------------------------------------------------------
ARCH="$(uname -m)"
SYS_PY="$(command -v python3 || true)"
[ -n "$SYS_PY" ] || [ -n "$PYTHON_GIVEN" ] || \
  die "python3 is not installed" "sudo apt install python3 python3-venv"
GLIBC="$(ldd --version 2>/dev/null | head -n1 | grep -oE '[0-9]+\.[0-9]+$' || true)"

# ---- the interpreter ----------------------------------------------------------------------
VENV="$HOME_DIR/venv"
if [ -n "$PYTHON_GIVEN" ]; then
  [ -x "$PYTHON_GIVEN" ] || die "--python $PYTHON_GIVEN is not an executable" "give a python path"
  PY="$PYTHON_GIVEN"
  VENV_STATE=external
else
  "$SYS_PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' || \
    die "python3 is $("$SYS_PY" -V 2>&1); the agent needs Python >= 3.9" \
        "install a newer python3 (Raspberry Pi OS bullseye or later)"
  SYS_VER="$("$SYS_PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  # reuse a venv of the same Python whose pip works (an interrupted creation is redone)
  if [ -x "$VENV/bin/python" ] && \
     [ "$("$VENV/bin/python" -c 'import sys, pip; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$SYS_VER" ]; then
    VENV_STATE=reused
  else
    "$SYS_PY" -c 'import venv, ensurepip' 2>/dev/null || \
      die "python3 cannot create virtual environments (venv/ensurepip missing)" \
          "sudo apt install python3-venv"
    log "creating $VENV (Python $SYS_VER)"
    rm -rf "$VENV"
    "$SYS_PY" -m venv "$VENV" >&2 || die "creating the venv $VENV failed" "sudo apt install python3-venv"
    VENV_STATE=created
  fi
  PY="$VENV/bin/python"
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
HAVE="$(runtime_now "$RUNTIME")"
if [ -n "$HAVE" ]; then
  log "runtime already installed: $HAVE"
elif [ "$VENV_STATE" = external ]; then
  die "$PY has no usable TFLite runtime with numpy and psutil" \
      "pip install ai-edge-litert numpy psutil into it, or deploy without --python"
else
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
fi
RT_NAME="${HAVE%% *}"
RT_VERSION="${HAVE#* }"

# $HOME_DIR/bin/python, the one interpreter the host's agent commands use, is written only
# once the runtime imports (a failed run leaves the previous one). A tiny exec wrapper, not
# a symlink: a venv's python started through a symlink elsewhere would not find
# the venv (pyvenv.cfg is looked up next to the path it was started as).
PYQ="'${PY//\'/\'\\\'\'}'"
printf '#!/bin/sh\nexec %s "$@"\n' "$PYQ" > "$HOME_DIR/bin/.python.$$"
chmod 755 "$HOME_DIR/bin/.python.$$"
mv -f "$HOME_DIR/bin/.python.$$" "$HOME_DIR/bin/python"

# ---- the agent imports with this interpreter ------------------------------------------------
agent() { env PYTHONPATH="$AGENT" "$HOME_DIR/bin/python" -m edgeq.device --home "$HOME_DIR" "$@"; }
agent --version >/dev/null || die "the agent does not start with $PY" "deploy again (edgeq deploy)"

# ---- the daemon ---------------------------------------------------------------------------
DAEMON=stopped
UNIT=""
if command -v systemctl >/dev/null 2>&1 && systemctl --user show-environment >/dev/null 2>&1; then
  if [ "$HOME_DIR" = "$HOME/.edgeq" ]; then UNIT=edgeq-agent.service
  else UNIT="edgeq-agent-$(printf '%s' "$HOME_DIR" | sha256sum | cut -c1-8).service"; fi
fi
if [ -n "$UNIT" ]; then
  UNIT_DIR="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"
  mkdir -p "$UNIT_DIR"
  # the template names %h/.edgeq; this deployment's paths replace it
  sed -e "s#%h/.edgeq/venv/bin/python#$HOME_DIR/bin/python#g" -e "s#%h/.edgeq#$HOME_DIR#g" \
    "$AGENT/edgeq/device/edgeq-agent.service" > "$UNIT_DIR/.$UNIT.tmp"
  mv -f "$UNIT_DIR/.$UNIT.tmp" "$UNIT_DIR/$UNIT"
  systemctl --user daemon-reload
  agent stop >/dev/null 2>&1 || true   # a pidfile daemon from an earlier deploy
  if [ "$START_DAEMON" = 1 ]; then
    systemctl --user enable "$UNIT" >/dev/null 2>&1 || true
    command -v loginctl >/dev/null 2>&1 && loginctl enable-linger "$(id -un)" 2>/dev/null || true
    if systemctl --user restart "$UNIT"; then DAEMON="running (systemd $UNIT)"
    else DAEMON="failed (systemd $UNIT)"; fi
  else
    systemctl --user stop "$UNIT" >/dev/null 2>&1 || true
  fi
else
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
case "$DAEMON" in running*)
  ok=0
  for _ in $(seq 1 50); do
    if agent status >/dev/null 2>&1; then ok=1; break; fi
    sleep 0.2
  done
  [ $ok = 1 ] || DAEMON="not answering; see $HOME_DIR/logs/agent.log" ;;
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
