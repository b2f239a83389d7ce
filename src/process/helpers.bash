# runway's job shell prelude: the runner's own plumbing and Travis's helpers.
# Sourced once per job, before any user command. Travis's helpers are shell
# functions, so, as on Travis, they are not visible inside scripts run as child
# processes.

# Runs one command (its text, as runway sent it down the command pipe) the way
# travis_cmd did (eval in this shell), then reports: a sync marker on stdout (all output
# delivered), the exit status on fd 3.
__runway_run() {
  eval "$1" 3>&- 4<&-
  local __runway_rc=$?
  printf '\036RUNWAY-SYNC-%s\036' "$__RUNWAY_NONCE"
  printf '%s\n' "$__runway_rc" >&3
}

# travis_retry CMD...: up to 3 tries, 1 s apart; returns the last exit code.
travis_retry() {
  local result=0
  local count=1
  while [ $count -le 3 ]; do
    [ $result -ne 0 ] && {
      echo -e "\n${ANSI_RED:-}The command \"$*\" failed. Retrying, $count of 3.${ANSI_RESET:-}\n" >&2
    }
    "$@" && { result=0 && break; } || result=$?
    count=$((count + 1))
    sleep 1
  done
  [ $count -gt 3 ] && {
    echo -e "\n${ANSI_RED:-}The command \"$*\" failed 3 times.${ANSI_RESET:-}\n" >&2
  }
  return $result
}

# travis_wait [MINUTES] CMD...: runs CMD with its output in a log file, printing
# "Still running" every minute so the no-output timer does not fire; kills it
# after MINUTES (default 20); prints the log and returns CMD's exit code.
travis_wait() {
  local timeout=20
  if [[ "$1" =~ ^[0-9]+$ ]]; then
    timeout=$1
    shift
  fi
  local cmd=("$@")
  local log_file="travis_wait_$$.log"
  "${cmd[@]}" &>"$log_file" &
  local cmd_pid=$!
  (
    local i=0
    while [ $i -lt "$timeout" ]; do
      i=$((i + 1))
      sleep 60
      echo -e "Still running ($i of $timeout): ${cmd[*]}"
    done
    echo -e "\n${ANSI_RED:-}Timeout (${timeout} minutes) reached. Terminating \"${cmd[*]}\"${ANSI_RESET:-}\n"
    kill -9 $cmd_pid 2>/dev/null
  ) &
  local jigger_pid=$!
  local result
  wait $cmd_pid 2>/dev/null
  result=$?
  kill $jigger_pid 2>/dev/null
  wait $jigger_pid 2>/dev/null
  if [ $result -eq 0 ]; then
    echo -e "\n${ANSI_GREEN:-}The command ${cmd[*]} exited with $result.${ANSI_RESET:-}"
  else
    echo -e "\n${ANSI_RED:-}The command ${cmd[*]} exited with $result.${ANSI_RESET:-}"
  fi
  echo -e "\n${ANSI_GREEN:-}Log:${ANSI_RESET:-}\n"
  cat "$log_file"
  rm -f "$log_file"
  return $result
}

# travis_terminate N: stop the job now with exit status N.
travis_terminate() {
  pkill -9 -P $$ &>/dev/null || true
  exit "${1:-1}"
}

# Folds and timers that user scripts sometimes print themselves.
travis_fold() {
  printf 'travis_fold:%s:%s\r\n' "$1" "$2"
}

# runway_apt_install PKG...: addons.apt.packages, inside the job's sandbox; the
# package lists are refreshed once when the first try does not find a package.
runway_apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"; }
}

# runway_apt_source N LINE [KEY_URL]: an addons.apt.sources entry given as a `deb`
# line, inside the job's sandbox: its signing key, the line, then the package lists.
runway_apt_source() {
  if [ -n "${3:-}" ]; then
    curl -fsSL "$3" | gpg --dearmor > "/etc/apt/trusted.gpg.d/runway-$1.gpg" || return 1
  fi
  echo "$2" > "/etc/apt/sources.list.d/runway-$1.list" && apt-get update -qq
}

# runway_postgresql_trust: local connections trusted, as Travis's PostgreSQL service
# had it (`psql -U postgres` with no password), in the job's copy of the machine only.
runway_postgresql_trust() {
  local hba
  for hba in /etc/postgresql/*/main/pg_hba.conf; do
    [ -f "$hba" ] || continue
    { printf 'local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n'; cat "$hba"; } > "$hba.runway" && mv "$hba.runway" "$hba"
  done
}

# runway_service_start NAME PACKAGE SCRIPT...: `services:` as Travis's
# `sudo service NAME start`, by the first init script installed; else says which
# package provides it.
runway_service_start() {
  local name=$1 package=$2 script
  shift 2
  for script in "$@"; do
    if [ -x "/etc/init.d/$script" ]; then
      [ "$script" = postgresql ] && runway_postgresql_trust
      service "$script" start
      return
    fi
  done
  echo "runway: service $name is not installed here: apt-get install $package (or addons.apt.packages: [$package])"
  return 1
}
