# Shared helpers for the project's scripts: installing Debian packages and starting the
# services the tests and the demo need. Sourced, not run.

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# ensure_packages PKG...: installs the Debian packages that are missing.
ensure_packages() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ensure_dockerd: starts dockerd when no engine answers on the default socket.
ensure_dockerd() {
    if docker info >/dev/null 2>&1; then return 0; fi
    log "starting dockerd (log: /var/log/leakmon-dockerd.log)"
    as_root sh -c 'setsid nohup dockerd >/var/log/leakmon-dockerd.log 2>&1 </dev/null &'
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    tail -20 /var/log/leakmon-dockerd.log >&2 || true
    die "dockerd did not come up; the end-to-end tests need a real engine"
}

# ensure_binfmt: the kernel runs ARM binaries through qemu-user (binfmt_misc), so the local
# engine runs the arm64 and armv7 images (tests/images.rs). Registers Debian's qemu-user-static
# handlers (with the F flag: usable inside containers) unless they are.
ensure_binfmt() {
    ensure_packages qemu-user-static
    local d=/proc/sys/fs/binfmt_misc
    if [ ! -e "$d/register" ]; then
        as_root mount -t binfmt_misc binfmt_misc "$d" ||
            die "cannot mount binfmt_misc: the ARM images cannot run on this engine"
    fi
    for a in aarch64 arm; do
        [ -e "$d/qemu-$a" ] && continue
        [ -f "/usr/lib/binfmt.d/qemu-$a.conf" ] || die "qemu-user-static has no /usr/lib/binfmt.d/qemu-$a.conf"
        as_root sh -c "cat /usr/lib/binfmt.d/qemu-$a.conf > $d/register" ||
            die "cannot register qemu-$a with binfmt_misc"
    done
}

# Home Assistant, for its own checks of the discovery messages (tests/ha/check_discovery.py):
# the last release that runs on Python 3.11 (this machine's), pinned, in target/ha-venv.
HA_VERSION=2024.3.3
ensure_ha_venv() {
    local venv=target/ha-venv
    if [ -x "$venv/bin/python" ] &&
        "$venv/bin/python" -c "import homeassistant.const as c, sys; sys.exit(c.__version__ != '$HA_VERSION')" 2>/dev/null; then
        return 0
    fi
    log "installing Home Assistant $HA_VERSION from PyPI into $venv (for its discovery checks)"
    rm -rf "$venv"
    python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt install python3-venv)"
    "$venv/bin/pip" install -q --disable-pip-version-check "homeassistant==$HA_VERSION" ||
        die "pip could not install homeassistant==$HA_VERSION: the Home Assistant checks need it"
}

# ensure_mosquitto PORT: starts a mosquitto on 127.0.0.1:PORT unless something listens there.
ensure_mosquitto() {
    local port=$1
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    log "starting mosquitto on 127.0.0.1:$port"
    local conf
    conf=$(mktemp /tmp/leakmon-mosquitto-XXXX.conf)
    printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" >"$conf"
    setsid nohup mosquitto -c "$conf" >/tmp/leakmon-mosquitto.log 2>&1 </dev/null &
    for _ in $(seq 1 40); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.25
    done
    die "mosquitto did not start on port $port (see /tmp/leakmon-mosquitto.log)"
}

# ensure_target TRIPLE: adds the Rust target with rustup unless installed; fails if it cannot.
ensure_target() {
    rustup target list --installed 2>/dev/null | grep -qx "$1" && return 0
    log "installing the Rust target $1"
    rustup target add "$1"
}

# free_port: a TCP port on 127.0.0.1 nobody listens on now.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# ensure_test_image: the containers' image of the benchmarks and tests (busybox on scratch,
# built locally: no registry needed); prints its name.
ensure_test_image() {
    local image=leakmon-test/busybox:latest dir
    if ! docker image inspect "$image" >/dev/null 2>&1; then
        dir=$(mktemp -d)
        cp "$(command -v busybox)" "$dir/busybox"
        printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox","--install","-s","/bin"]\nCMD ["/bin/sh"]\n' >"$dir/Dockerfile"
        DOCKER_BUILDKIT=0 docker build -q -t "$image" "$dir" >/dev/null
        rm -rf "$dir"
    fi
    echo "$image"
}

# project_version: the workspace's version, as the packages and images are tagged.
project_version() {
    cargo metadata --no-deps --format-version 1 --locked |
        sed -n 's/.*"name":"leakmon-agent","version":"\([^"]*\)".*/\1/p'
}
