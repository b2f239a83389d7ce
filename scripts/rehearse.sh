#!/usr/bin/env bash
# runway's main job on a fresh machine: build runway, then rehearse the fixture
# Spring Boot project's build (cache restore, gradle stand-in, zip in before_deploy,
# the S3 and CodeDeploy deploys as a dry run, the mail it would send).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v zip >/dev/null 2>&1 || need+=(zip)
command -v javac >/dev/null 2>&1 || need+=(openjdk-17-jdk-headless)
command -v git >/dev/null 2>&1 || need+=(git)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]} (apt-get)"
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi

# cargo shows each crate it compiles: the first build takes minutes, and says so.
echo "==> building runway (release; the first build compiles about 400 crates: minutes)"
cargo build --release
echo "==> rehearsing fixtures/springboot-webservice"
exec ./target/release/runway run fixtures/springboot-webservice --branch master --show-mail "$@"
