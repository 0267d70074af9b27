#!/usr/bin/env bash
# An emulated Raspberry Pi for edgeq: an arm64 Debian bookworm root filesystem run through
# QEMU user-mode emulation (binfmt_misc, F flag), with its own sshd inside the chroot, in a
# network namespace with its own address. The host reaches it like a board on the LAN:
#
#   bash tests/emulated/board.sh up       # build (first time, ~4 min) or unpack (seconds), start
#   ssh -F /var/tmp/edgeq-board/state/ssh_config edgeq-board uname -m     # -> aarch64
#   bash tests/emulated/board.sh status
#   bash tests/emulated/board.sh down     # stop sshd (pidfile), unmount, remove netns + board
#
# Several boards at once: each `up` with its own EDGEQ_BOARD_WORK, _NETNS, _VETH, _HOST_IP,
# _IP, _ALIAS and _CPU (its own network namespace, root filesystem unpacked from the one cached
# tarball, keys and sshd). The default board is the "Pi 4" (cortex-a72); tests/emulated/pi3.env
# describes a second, "Pi 3" (cortex-a53):
#   env $(grep -v '^#' tests/emulated/pi3.env) bash tests/emulated/board.sh up
#
# Needs root (mmdebstrap --mode=root, mount, ip netns). Everything it creates lives outside the
# clone: the root filesystem cache in $EDGEQ_BOARD_CACHE (default /var/cache/edgeq-board), the
# running board and its throwaway keys in $EDGEQ_BOARD_WORK (default /var/tmp/edgeq-board).
# The board's Python environment is NOT made here: `edgeq deploy` makes it, as on a real Pi.
# The board has no route to the internet (only the veth link to the host).
set -euo pipefail

# ---------------------------------------------------------------------------------------------
# Settings (environment overrides for the rare clash)
# ---------------------------------------------------------------------------------------------
CACHE_DIR=${EDGEQ_BOARD_CACHE:-/var/cache/edgeq-board}
WORK_DIR=${EDGEQ_BOARD_WORK:-/var/tmp/edgeq-board}
ROOT=$WORK_DIR/root
STATE=$WORK_DIR/state
NETNS=${EDGEQ_BOARD_NETNS:-edgeq-board}
VETH_HOST=${EDGEQ_BOARD_VETH:-edgeqb-h0}
VETH_BOARD=edgeqb-b0
HOST_IP=${EDGEQ_BOARD_HOST_IP:-10.201.0.1}
BOARD_IP=${EDGEQ_BOARD_IP:-10.201.0.2}
PREFIX_LEN=30
ALIAS=${EDGEQ_BOARD_ALIAS:-edgeq-board}   # the Host alias in its ssh_config, and its hostname
BOARD_USER=pi
QEMU_CPU_MODEL=${EDGEQ_BOARD_CPU:-cortex-a72}   # Pi 4; cortex-a76 for a Pi 5
SSH_WAIT_S=${EDGEQ_BOARD_SSH_WAIT_S:-90}

# The recipe of the root filesystem; its hash names the cached tarball.
SUITE=bookworm   # Python 3.11, like Raspberry Pi OS bookworm; LiteRT and tflite-runtime both install
ARCH=arm64
VARIANT=minbase
PACKAGES=python3,python3-venv,python3-pip,openssh-server,openssh-sftp-server,ca-certificates,procps,iproute2,libstdc++6
RECIPE_VERSION=1 # bump when the customize hooks below change
# Run inside the finished tree by mmdebstrap: the board's user, no baked host keys.
CUSTOMIZE_HOOKS=(
  'chroot "$1" useradd --create-home --shell /bin/bash --uid 1000 pi'
  'chroot "$1" usermod --password "*" pi'
  'rm -f "$1"/etc/ssh/ssh_host_*'
)

# QEMU: Debian trixie's qemu-user (10.x, static) works with /proc, /sys and /dev mounted.
# Debian 12's qemu 7.2 segfaults in the TFLite interpreter when /sys is mounted too, so with
# that fallback only /proc is mounted.
QEMU_SUITE=trixie
QEMU_DIR=$CACHE_DIR/qemu

log() { printf '[board] %s\n' "$*" >&2; }
die() { printf '[board] error: %s\n' "$1" >&2; [[ -n ${2:-} ]] && printf '[board] hint: %s\n' "$2" >&2; exit 1; }

now_s() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now_s)" 'BEGIN { printf "%.1f", b - a }'; }

require_root() {
  [[ $(id -u) -eq 0 ]] || die "board.sh must run as root (mmdebstrap, mount, ip netns)" "rerun with sudo"
}

recipe_hash() {
  {
    printf 'suite=%s arch=%s variant=%s packages=%s version=%s\n' \
      "$SUITE" "$ARCH" "$VARIANT" "$PACKAGES" "$RECIPE_VERSION"
    printf '%s\n' "${CUSTOMIZE_HOOKS[@]}"
  } | sha256sum | cut -c1-16
}

# The Debian mirror, read from the machine's own apt sources (never written into the repo).
debian_mirror() {
  local uri
  # indextargets lists only downloaded indexes: a machine that never ran apt-get update has none.
  if [[ -z $(apt-get indextargets 'Identifier: Packages' 2>/dev/null) ]]; then
    log "apt has no package lists yet: apt-get update"
    apt-get update -qq >&2
  fi
  uri=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Identifier: Packages' 2>/dev/null \
        | awk -v s="$SUITE" '$2 == s { print $1; exit }')
  if [[ -z $uri ]]; then
    uri=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Identifier: Packages' 2>/dev/null \
          | awk '$1 ~ /\/debian\/?$/ { print $1; exit }')
  fi
  [[ -n $uri ]] || die "no Debian mirror found in this machine's apt sources" \
    "configure a Debian mirror in /etc/apt/sources.list(.d) and run apt-get update"
  printf '%s\n' "${uri%/}"
}

# The apt lines for the board: the suite and its -updates/-security from the machine's sources.
board_apt_lines() {
  local mirror
  mirror=$(debian_mirror)
  printf 'deb %s %s main\n' "$mirror" "$SUITE"
  apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Identifier: Packages' 2>/dev/null \
    | awk -v s="$SUITE" '$2 == s"-updates" || $2 == s"-security" { sub(/\/$/, "", $1); print "deb " $1 " " $2 " main" }' \
    | sort -u
}

# ---------------------------------------------------------------------------------------------
# Host packages, QEMU, binfmt
# ---------------------------------------------------------------------------------------------
ensure_host_packages() {
  local missing=()
  command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
  command -v arch-test >/dev/null || missing+=(arch-test)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v ssh >/dev/null || missing+=(openssh-client)
  command -v ssh-keygen >/dev/null || missing+=(openssh-client)
  command -v zstd >/dev/null || missing+=(zstd)
  command -v unshare >/dev/null || missing+=(util-linux)
  if ((${#missing[@]})); then
    log "installing host packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# Prints the path of a static qemu-aarch64; sets QEMU_MAJOR.
ensure_qemu() {
  local bin
  bin=$(ls -1 "$QEMU_DIR"/*/qemu-aarch64 2>/dev/null | sort -V | tail -n1 || true)
  if [[ -z $bin ]]; then
    bin=$(fetch_trixie_qemu) || bin=""
  fi
  if [[ -z $bin ]]; then
    log "could not fetch $QEMU_SUITE's qemu-user; falling back to this machine's qemu-user-static (7.2: /proc only)"
    if ! command -v qemu-aarch64-static >/dev/null; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-user-static >/dev/null
    fi
    bin=$(command -v qemu-aarch64-static)
  fi
  printf '%s\n' "$bin"
}

# Downloads Debian trixie's qemu-user with a private apt configuration (the machine's apt
# sources stay as they are) and unpacks its static qemu-aarch64 into the cache.
fetch_trixie_qemu() {
  local mirror tmp opts deb version
  mirror=$(debian_mirror)
  tmp=$(mktemp -d)
  mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
  printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n' \
    "$mirror" "$QEMU_SUITE" >"$tmp/sources.list"
  opts=(-o "Dir::Etc::SourceList=$tmp/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
        -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache" -o "Dir::State::status=/dev/null"
        -o "APT::Get::List-Cleanup=0" -o "APT::Sandbox::User=root")
  log "fetching qemu-user from Debian $QEMU_SUITE (private apt config, sources unchanged)"
  if ! apt-get "${opts[@]}" update -qq >&2 \
     || ! (cd "$tmp" && apt-get "${opts[@]}" download qemu-user >&2); then
    rm -rf "$tmp"; return 1
  fi
  deb=$(ls -1 "$tmp"/qemu-user_*.deb | head -n1)
  version=$(dpkg-deb -f "$deb" Version | tr ':~+' '___')
  dpkg-deb -x "$deb" "$tmp/x"
  mkdir -p "$QEMU_DIR/$version"
  install -m 0755 "$tmp/x/usr/bin/qemu-aarch64" "$QEMU_DIR/$version/qemu-aarch64.partial"
  mv -f "$QEMU_DIR/$version/qemu-aarch64.partial" "$QEMU_DIR/$version/qemu-aarch64"
  rm -rf "$tmp"
  printf '%s\n' "$QEMU_DIR/$version/qemu-aarch64"
}

qemu_major() { "$1" --version | awk 'NR == 1 { split($3, v, "."); print v[1] }'; }

# Registers qemu-aarch64 with binfmt_misc, F flag (the kernel opens the interpreter now, so it
# works inside the chroot without a copy of qemu there).
ensure_binfmt() {
  local qemu=$1 major=$2 entry=/proc/sys/fs/binfmt_misc/qemu-aarch64 flags
  if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  fi
  if [[ -e $entry ]]; then
    if grep -qx enabled "$entry" && grep -q "^interpreter $qemu\$" "$entry" \
       && grep -q '^flags: .*F' "$entry"; then
      return 0
    fi
    log "replacing the existing qemu-aarch64 binfmt entry ($(awk '/^interpreter/ { print $2 }' "$entry"))"
    echo -1 >"$entry"
  fi
  flags=F
  ((major >= 8)) && flags=OPF   # as Debian registers it: open-binary, preserve argv[0], fix binary
  printf ':qemu-aarch64:M::\\x7f\\x45\\x4c\\x46\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00:\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:%s:%s' \
    "$qemu" "$flags" >/proc/sys/fs/binfmt_misc/register
  log "registered qemu-aarch64 (qemu $major, flags $flags) with binfmt_misc"
}

# ---------------------------------------------------------------------------------------------
# Root filesystem
# ---------------------------------------------------------------------------------------------
rootfs_tarball() { printf '%s/rootfs-%s-%s-%s.tar.zst\n' "$CACHE_DIR" "$SUITE" "$ARCH" "$(recipe_hash)"; }

ensure_rootfs_tarball() {
  local tarball partial t0 hooks=() hook
  tarball=$(rootfs_tarball)
  [[ -s $tarball ]] && { printf '%s\n' "$tarball"; return 0; }
  mkdir -p "$CACHE_DIR"
  partial=${tarball%.tar.zst}.partial.tar.zst
  rm -f "$partial"
  for hook in "${CUSTOMIZE_HOOKS[@]}"; do hooks+=(--customize-hook="$hook"); done
  t0=$(now_s)
  log "building the $SUITE $ARCH root filesystem with mmdebstrap (about 4 minutes, once)"
  # mmdebstrap runs apt on the host; the sources are the machine's own mirror.
  env -u PIP_FIND_LINKS -u PIP_CERT TMPDIR="${TMPDIR:-/tmp}" \
    mmdebstrap --mode=root --arch="$ARCH" --variant="$VARIANT" --include="$PACKAGES" \
      --quiet "${hooks[@]}" "$SUITE" "$partial" - < <(board_apt_lines) >&2
  mv -f "$partial" "$tarball"
  log "built $(basename "$tarball") ($(du -h "$tarball" | cut -f1)) in $(since "$t0") s"
  printf '%s\n' "$tarball"
}

unpack_rootfs() {
  local tarball=$1 t0
  t0=$(now_s)
  remove_root
  mkdir -p "$ROOT"
  tar --zstd -xpf "$tarball" -C "$ROOT" --numeric-owner
  printf '%s\n' "$(basename "$tarball")" >"$WORK_DIR/rootfs.id"
  log "unpacked the board's root filesystem into $ROOT in $(since "$t0") s"
}

# ---------------------------------------------------------------------------------------------
# Board configuration, keys, network, sshd
# ---------------------------------------------------------------------------------------------
configure_board() {
  local home=$ROOT/home/$BOARD_USER
  rm -rf "$STATE"
  mkdir -p "$STATE"
  chmod 700 "$STATE"
  # Throwaway keys: the board's host key and the host's client key, made for this `up` only.
  rm -f "$ROOT"/etc/ssh/ssh_host_*
  ssh-keygen -q -t ed25519 -N '' -C "edgeq-board host key" -f "$ROOT/etc/ssh/ssh_host_ed25519_key"
  ssh-keygen -q -t ed25519 -N '' -C "edgeq-board client key" -f "$STATE/id_ed25519"
  printf '%s,%s %s\n' "$ALIAS" "$BOARD_IP" "$(cut -d' ' -f1,2 "$ROOT/etc/ssh/ssh_host_ed25519_key.pub")" \
    >"$STATE/known_hosts"
  install -d -m 700 -o 1000 -g 1000 "$home/.ssh"
  install -m 600 -o 1000 -g 1000 "$STATE/id_ed25519.pub" "$home/.ssh/authorized_keys"
  install -d -m 700 "$ROOT/root/.ssh"
  install -m 600 "$STATE/id_ed25519.pub" "$ROOT/root/.ssh/authorized_keys"

  cat >"$ROOT/etc/ssh/sshd_config.d/edgeq-board.conf" <<EOF
# Written by tests/emulated/board.sh: the emulated board's sshd.
ListenAddress $BOARD_IP
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile /run/sshd.pid
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
# PAM's session modules (loginuid) do not work in a chroot; key login needs no PAM.
UsePAM no
# Every session runs under qemu: a Pi-like CPU, and a mark the agent reads.
SetEnv QEMU_CPU=$QEMU_CPU_MODEL EDGEQ_EMULATED=qemu-aarch64
EOF
  printf '%s\n' "$ALIAS" >"$ROOT/etc/hostname"
  printf '127.0.0.1 localhost\n%s %s\n' "$BOARD_IP" "$ALIAS" >"$ROOT/etc/hosts"
  : >"$ROOT/etc/resolv.conf"   # no DNS, no internet: the board gets its wheels pushed

  cat >"$STATE/ssh_config" <<EOF
# The emulated edgeq board (tests/emulated/board.sh). Use: ssh -F $STATE/ssh_config $ALIAS
Host $ALIAS
  HostName $BOARD_IP
  Port 22
  User $BOARD_USER
  IdentityFile $STATE/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $STATE/known_hosts
  StrictHostKeyChecking yes
  ConnectTimeout 20
  ServerAliveInterval 30
EOF
  chmod 600 "$STATE/ssh_config"
  cat >"$STATE/board.env" <<EOF
EDGEQ_BOARD_SSH_CONFIG=$STATE/ssh_config
EDGEQ_BOARD_HOST=$ALIAS
EDGEQ_BOARD_ADDRESS=$BOARD_IP
EDGEQ_BOARD_USER=$BOARD_USER
EDGEQ_BOARD_ROOT=$ROOT
EDGEQ_BOARD_CPU=$QEMU_CPU_MODEL
EDGEQ_BOARD_IDENTITY=$STATE/id_ed25519
EDGEQ_BOARD_KNOWN_HOSTS=$STATE/known_hosts
EOF
}

setup_network() {
  if ip route get "$BOARD_IP" 2>/dev/null | grep -qv "dev $VETH_HOST"; then
    if ip -o addr show | grep -v " $VETH_HOST " | grep -q " ${BOARD_IP%.*}\."; then
      die "the board's subnet ${BOARD_IP%.*}.0/$PREFIX_LEN is already used on this machine" \
        "set EDGEQ_BOARD_HOST_IP and EDGEQ_BOARD_IP to a free /30 and rerun"
    fi
  fi
  ip netns add "$NETNS"
  ip link add "$VETH_HOST" type veth peer name "$VETH_BOARD" netns "$NETNS"
  ip addr add "$HOST_IP/$PREFIX_LEN" dev "$VETH_HOST"
  ip link set "$VETH_HOST" up
  ip -n "$NETNS" link set lo up
  ip -n "$NETNS" addr add "$BOARD_IP/$PREFIX_LEN" dev "$VETH_BOARD"
  ip -n "$NETNS" link set "$VETH_BOARD" up
  log "network namespace $NETNS: host $HOST_IP <-> board $BOARD_IP (veth $VETH_HOST)"
}

# sshd starts in the board's network namespace, in a private mount + UTS namespace where /proc,
# /sys and a small /dev are mounted into the chroot: when the board's last process ends, the
# kernel drops those mounts, so nothing leaks into the host's mount table.
start_sshd() {
  local mount_sys=$1
  mkdir -p "$ROOT/run/sshd"
  chmod 755 "$ROOT/run/sshd"
  rm -f "$ROOT/run/sshd.pid"
  ip netns exec "$NETNS" unshare --mount --uts --propagation private -- \
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin ROOT="$ROOT" MOUNT_SYS="$mount_sys" \
      QEMU_CPU="$QEMU_CPU_MODEL" EDGEQ_EMULATED=qemu-aarch64 LANG=C.UTF-8 BOARD_NAME="$ALIAS" \
      /bin/sh -eu -c '
        hostname "$BOARD_NAME"
        mount -t proc -o nosuid,nodev,noexec proc "$ROOT/proc"
        if [ "$MOUNT_SYS" = 1 ]; then mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$ROOT/sys"; fi
        mount -t tmpfs -o mode=755,size=1m,nosuid tmpfs "$ROOT/dev"
        for spec in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
          IFS=: read -r name major minor <<EOT
$spec
EOT
          mknod -m 666 "$ROOT/dev/$name" c "$major" "$minor"
        done
        mkdir -p "$ROOT/dev/pts" "$ROOT/dev/shm"
        mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$ROOT/dev/pts"
        ln -s pts/ptmx "$ROOT/dev/ptmx"
        ln -s /proc/self/fd "$ROOT/dev/fd"
        ln -s /proc/self/fd/0 "$ROOT/dev/stdin"
        ln -s /proc/self/fd/1 "$ROOT/dev/stdout"
        ln -s /proc/self/fd/2 "$ROOT/dev/stderr"
        mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$ROOT/dev/shm"
        exec chroot "$ROOT" /usr/sbin/sshd
      '
}

wait_for_ssh() {
  local t0 deadline
  t0=$(now_s)
  deadline=$((SECONDS + SSH_WAIT_S))
  while ((SECONDS < deadline)); do
    if ssh -F "$STATE/ssh_config" -o BatchMode=yes -o ConnectTimeout=5 "$ALIAS" true 2>/dev/null; then
      log "ssh answers after $(since "$t0") s"
      return 0
    fi
    sleep 0.5
  done
  die "the board's sshd did not answer on $BOARD_IP:22 within ${SSH_WAIT_S} s" \
    "see 'bash $0 status'; run 'bash $0 down' and retry"
}

sshd_pid() {
  local pid
  [[ -s $ROOT/run/sshd.pid ]] || return 1
  pid=$(<"$ROOT/run/sshd.pid")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  printf '%s\n' "$pid"
}

is_up() { sshd_pid >/dev/null && ip netns list | grep -qw "$NETNS"; }

print_how_to_reach() {
  cat <<EOF
The emulated board is up (aarch64 under qemu, $QEMU_CPU_MODEL; no internet on the board).
  address      : $BOARD_IP (host side $HOST_IP, netns $NETNS)
  ssh config   : $STATE/ssh_config   (Host alias: $ALIAS, user $BOARD_USER)
  try          : ssh -F $STATE/ssh_config $ALIAS uname -m
  edgeq        : EDGEQ_SSH_CONFIG=$STATE/ssh_config edgeq deploy --host $ALIAS ...
  stop         : bash $0 down
EOF
}

# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------
cmd_up() {
  require_root
  local t0 qemu major tarball mount_sys=1
  t0=$(now_s)
  if is_up; then
    log "already up (sshd pid $(sshd_pid))"
    print_how_to_reach
    return 0
  fi
  # A failed `up` leaves nothing half-started behind.
  trap 'rc=$?; if ((rc)); then log "up failed (exit $rc); cleaning up"; cmd_down >/dev/null 2>&1 || true; fi' EXIT
  cmd_down >/dev/null 2>&1 || true
  mkdir -p "$WORK_DIR" "$CACHE_DIR"
  ensure_host_packages
  qemu=$(ensure_qemu)
  major=$(qemu_major "$qemu")
  ((major >= 8)) || mount_sys=0
  ensure_binfmt "$qemu" "$major"
  tarball=$(ensure_rootfs_tarball)
  unpack_rootfs "$tarball"
  configure_board
  setup_network
  start_sshd "$mount_sys"
  wait_for_ssh
  trap - EXIT
  log "up in $(since "$t0") s (qemu $major: $qemu)"
  print_how_to_reach
}

# Processes whose root directory is the board (sshd, sessions, the edgeq daemon).
board_pids() {
  local p r
  for p in /proc/[0-9]*; do
    r=$(readlink "$p/root" 2>/dev/null) || continue
    [[ $r == "$ROOT" ]] && printf '%s\n' "${p#/proc/}"
  done
  return 0
}

remove_root() {
  if [[ -d $ROOT ]]; then
    if findmnt -rn -o TARGET | grep -q "^$ROOT/"; then
      die "mounts remain under $ROOT; not deleting it" "unmount them (findmnt | grep $ROOT) and rerun"
    fi
    rm -rf --one-file-system "$ROOT"
  fi
}

cmd_down() {
  require_root
  local pid pids i target
  if pid=$(sshd_pid); then
    kill -TERM "$pid" 2>/dev/null || true
    log "stopped sshd (pid $pid)"
  fi
  # Sessions and daemons started on the board go with it.
  for i in 1 2 3 4 5 6 7 8 9 10; do
    pids=$(board_pids)
    [[ -z $pids ]] && break
    if ((i < 8)); then kill -TERM $pids 2>/dev/null || true; else kill -KILL $pids 2>/dev/null || true; fi
    sleep 0.5
  done
  [[ -z $(board_pids) ]] || die "board processes survive: $(board_pids | tr '\n' ' ')" "kill them and rerun down"
  # Mounts made in the host's namespace (older runs, or by hand): deepest first, lazily if busy.
  if [[ -d $ROOT ]]; then
    while read -r target; do
      umount "$target" 2>/dev/null || umount -l "$target"
    done < <(findmnt -rn -o TARGET | grep "^$ROOT/" | sort -r)
  fi
  if ip netns list | grep -qw "$NETNS"; then
    ip netns del "$NETNS"
    log "removed network namespace $NETNS"
  fi
  ip link show "$VETH_HOST" >/dev/null 2>&1 && ip link del "$VETH_HOST"
  remove_root
  rm -rf "$STATE" "$WORK_DIR/rootfs.id"
  log "down"
}

cmd_status() {
  local pid
  if pid=$(sshd_pid); then
    printf 'sshd       : running (pid %s)\n' "$pid"
  else
    printf 'sshd       : not running\n'
  fi
  if ip netns list 2>/dev/null | grep -qw "$NETNS"; then
    printf 'netns      : %s (board %s, host %s)\n' "$NETNS" "$BOARD_IP" "$HOST_IP"
  else
    printf 'netns      : absent\n'
  fi
  printf 'root       : %s (%s)\n' "$ROOT" "$(cat "$WORK_DIR/rootfs.id" 2>/dev/null || echo none)"
  printf 'ssh config : %s\n' "$([[ -f $STATE/ssh_config ]] && echo "$STATE/ssh_config" || echo none)"
  printf 'cache      : %s\n' "$(ls -1 "$CACHE_DIR"/rootfs-*.tar.zst 2>/dev/null | tr '\n' ' ' || true)"
  printf 'binfmt     : %s\n' "$(awk '/^interpreter/ { print $2 }' /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null || echo 'not registered')"
  is_up
}

cmd_ssh() {
  [[ -f $STATE/ssh_config ]] || die "the board is not up" "run: bash $0 up"
  exec ssh -F "$STATE/ssh_config" "$ALIAS" "$@"
}

usage() {
  cat <<EOF
usage: bash $0 up|down|status|ssh [command...]|env
  up      build or unpack the emulated aarch64 board and start its sshd (idempotent)
  down    stop it, unmount, remove the network namespace and the unpacked board (idempotent)
  status  say what is running (exit 0 when the board is up)
  ssh     run a command on the board (or a shell)
  env     print shell variables describing the running board
EOF
}

main() {
  local cmd=${1:-}
  shift || true
  case $cmd in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    ssh) cmd_ssh "$@" ;;
    env) [[ -f $STATE/board.env ]] || die "the board is not up" "run: bash $0 up"; cat "$STATE/board.env" ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
