#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need
# (ffmpeg/ffprobe, chromium, nginx, openssl from Debian when missing, the browser
# tests' npm packages with `npm ci`), then checks formatting, lints and runs every
# unit and integration test. CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || need_apt+=(ffmpeg)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || need_apt+=(nginx)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# tests/browser.rs drives Debian's chromium through playwright-core (pinned in
# tests/browser/package-lock.json; it never downloads a browser)
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

cargo fmt --all -- --check
cargo clippy --all-targets --release -- -D warnings
cargo test --release -- --test-threads="${LIVEGATE_TEST_THREADS:-2}"
