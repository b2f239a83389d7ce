#!/usr/bin/env bash
# runway's main job on a fresh machine: build runway, then rehearse the fixture
# Spring Boot project's build (cache restore, gradle stand-in, zip in before_deploy,
# the S3 and CodeDeploy deploys as a dry run, the bundle deployed on a throwaway copy of
# this machine as the CodeDeploy agent would, the mail it would send).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v zip >/dev/null 2>&1 || need+=(zip)
command -v javac >/dev/null 2>&1 || need+=(openjdk-17-jdk-headless)
command -v git >/dev/null 2>&1 || need+=(git)
# The CodeDeploy side of the rehearsal: nginx in front of the app, curl, sudo.
command -v nginx >/dev/null 2>&1 || need+=(nginx)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v sudo >/dev/null 2>&1 || need+=(sudo)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]} (apt-get)"
  # Installed without starting their services on this machine (policy-rc.d).
  guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    guard=/usr/sbin/policy-rc.d
  fi
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
  [ -z "$guard" ] || rm -f "$guard"
fi

# cargo shows each crate it compiles: the first build takes minutes, and says so.
echo "==> building runway (release; the first build compiles about 400 crates: minutes)"
cargo build --release
echo "==> rehearsing fixtures/springboot-webservice"
exec ./target/release/runway run fixtures/springboot-webservice --branch master --rehearse-deploy --show-mail "$@"
