#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, then runs
# formatting, lints, unit, integration and corpus tests. `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for tool in git zip unzip zstd tar; do
  command -v "$tool" >/dev/null 2>&1 || need_apt+=("$tool")
done
# The sandbox tests try what a job might: ip (iproute2), pgrep (procps), setsid and
# unshare (util-linux).
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v pgrep >/dev/null 2>&1 || need_apt+=(procps)
command -v unshare >/dev/null 2>&1 || need_apt+=(util-linux)
# A job's disk budget is an ext4 image (mkfs.ext4); the tests look for its loop device.
command -v mkfs.ext4 >/dev/null 2>&1 || need_apt+=(e2fsprogs)
command -v losetup >/dev/null 2>&1 || need_apt+=(mount)
# A job's `services: [postgresql]` starts the machine's PostgreSQL inside its sandbox.
[ -x /etc/init.d/postgresql ] || need_apt+=(postgresql)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# An addons.apt test serves a package it builds (dpkg-deb) and indexes (dpkg-scanpackages).
command -v dpkg-scanpackages >/dev/null 2>&1 || need_apt+=(dpkg-dev)
command -v gpg >/dev/null 2>&1 || need_apt+=(gnupg)
# The CodeDeploy rehearsal test runs the fixture's nginx switch inside the copy, with
# sudo as ec2-user has it on EC2.
command -v nginx >/dev/null 2>&1 || need_apt+=(nginx)
command -v sudo >/dev/null 2>&1 || need_apt+=(sudo)
command -v javac >/dev/null 2>&1 || need_apt+=(openjdk-17-jdk-headless)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> installing ${need_apt[*]} (apt-get)"
  # Packages install without starting their services on the host (policy-rc.d).
  guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    guard=/usr/sbin/policy-rc.d
  fi
  apt-get update -qq && apt-get install -y -qq "${need_apt[@]}" >/dev/null
  [ -z "$guard" ] || rm -f "$guard"
fi

# Python test servers (moto for S3 + CodeDeploy), pinned, in a venv of their own.
if [ ! -x target/pyenv/bin/python ] || ! cmp -s tests/servers/requirements.txt target/pyenv/requirements.txt; then
  echo "==> installing test servers into target/pyenv ($(grep -v '^#' tests/servers/requirements.txt | xargs))"
  mkdir -p target
  python3 -m venv target/pyenv
  target/pyenv/bin/pip install --quiet --disable-pip-version-check -r tests/servers/requirements.txt
  cp tests/servers/requirements.txt target/pyenv/requirements.txt
fi
export RUNWAY_TEST_PYTHON="$PWD/target/pyenv/bin/python"

# The browser tests drive Debian's chromium with Playwright: playwright-core (no browser
# download of its own) from the npm registry, pinned.
playwright=1.65.1
if ! grep -qs "\"version\": \"$playwright\"" target/browser/node_modules/playwright-core/package.json; then
  echo "==> installing playwright-core@$playwright into target/browser (npm)"
  mkdir -p target/browser
  npm install --prefix target/browser --no-audit --no-fund --silent "playwright-core@$playwright"
fi
export RUNWAY_TEST_PLAYWRIGHT="$PWD/target/browser/node_modules/playwright-core"

# The forge contracts (issue 26): GitHub's OpenAPI description and webhook examples and
# the Prism contract server, pinned in tests/forge/package.json; the statuses call cut
# out of the description (Prism then starts in seconds).
if ! cmp -s tests/forge/package.json target/forge/package.json || [ ! -x target/forge/node_modules/.bin/prism ]; then
  echo "==> installing the forge contracts into target/forge (npm: $(grep -o '"@[^"]*": "[^"]*"' tests/forge/package.json | tr -d '"' | xargs))"
  mkdir -p target/forge
  cp tests/forge/package.json target/forge/package.json
  npm install --prefix target/forge --no-audit --no-fund --silent
fi
node tests/forge/subset.js target/forge/node_modules/@octokit/openapi/generated/api.github.com.deref.json \
  target/forge/github-statuses.json "/repos/{owner}/{repo}/statuses/{sha}"
export RUNWAY_TEST_FORGE="$PWD/target/forge"

# Sign-in (issue 27): a real OpenID provider, npm's oidc-provider (OpenID Certified),
# pinned in tests/auth/package.json; tests/auth/provider.mjs configures it.
if ! cmp -s tests/auth/package.json target/auth/package.json || [ ! -f target/auth/node_modules/oidc-provider/package.json ]; then
  echo "==> installing the OpenID provider into target/auth (npm: $(grep -o '"oidc-provider": "[^"]*"' tests/auth/package.json | tr -d '"'))"
  mkdir -p target/auth
  cp tests/auth/package.json target/auth/package.json
  npm install --prefix target/auth --no-audit --no-fund --silent
fi
export RUNWAY_TEST_OIDC="$PWD/target/auth"

if [ ! -d ../shared/corpus/travis-yml/configs ] && [ -z "${RUNWAY_CORPUS:-}" ]; then
  echo "error: the corpus is missing: ../shared/corpus/travis-yml/configs (or set RUNWAY_CORPUS)" >&2
  exit 2
fi

# One build from scratch: incremental state would only add disk (it was 3 GB).
export CARGO_INCREMENTAL=0
# A full run from a fresh clone peaks at about 3.5 GB of disk (README, "Tests"); say so
# up front rather than fail midway with "No space left on device".
mkdir -p target
free_mb=$(df -Pm target | awk 'NR==2 {print $4}')
if [ "${free_mb:-0}" -lt 4000 ]; then
  echo "warning: only ${free_mb} MB free for target/; the build and tests need about 3,500 MB" >&2
fi

echo "==> cargo fmt --check"
cargo fmt --check
# Long steps say what they do as they go (cargo's own progress lines, one per crate).
echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
mkdir -p target
echo "==> cargo test --no-run (building the tests)"
cargo test --no-run
echo "==> cargo test"
set +e
cargo test --quiet --no-fail-fast -- --nocapture 2>&1 | tee target/test-output.txt
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
  echo "==> tests failed; the full output is in target/test-output.txt" >&2
  grep -E -A30 '^---- ' target/test-output.txt | head -200 >&2 || true
  exit "$status"
fi
echo "==> runway run . (runway's own .travis.yml, rehearsed by runway)"
if ./target/debug/runway run . --cache-dir "${TMPDIR:-/tmp}/runway-self-cache" > target/self-run.txt 2>&1; then
  tail -n 3 target/self-run.txt
  echo "self-run: 1 passed, 0 failed"
else
  tail -n 60 target/self-run.txt >&2
  echo "runway run . failed; the log is in target/self-run.txt" >&2
  exit 1
fi
passed=$(grep -Eo '[0-9]+ passed' target/test-output.txt | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' target/test-output.txt | awk '{s+=$1} END {print s+0}')
echo "$passed passed, $failed failed"
