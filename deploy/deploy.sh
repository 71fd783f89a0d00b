#!/usr/bin/env bash
# deploy/deploy.sh HOST [--dry-run]
#
# Builds the release binary here, copies it with the template, units and example config to
# HOST:/opt/twilight/releases/<time>-<commit>, runs the accounts migrations with the new binary,
# points /opt/twilight/current at it, restarts twilight@serve, twilight@scheduler and
# twilight-provisioner, and checks /healthz; when the check fails, /opt/twilight/current goes back
# to the release before and the services are restarted on it. --dry-run prints every step and runs
# none.
#
# HOST is an ssh destination (user@host) whose login may run `sudo -n`. A first deploy also creates
# the `twilight` system user, /var/lib/twilight (0700), /etc/twilight/twilight.toml from the example
# (edit it, then deploy again) and an empty /etc/twilight/env (0600, for TWILIGHT_* secrets such as
# TWILIGHT_ACCOUNTS_URL with its password). Migrations only ever add, so the release before runs on
# the migrated database after a rollback.
set -euo pipefail

usage() {
  echo "usage: deploy/deploy.sh HOST [--dry-run]" >&2
  exit 2
}

host=""
dry_run=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=1 ;;
    -h | --help) usage ;;
    -*)
      echo "deploy.sh: unknown option $arg" >&2
      usage
      ;;
    *)
      [ -z "$host" ] || usage
      host=$arg
      ;;
  esac
done
[ -n "$host" ] || usage

cd "$(dirname "$0")/.."
. scripts/env.sh

root=/opt/twilight
release="$(date -u +%Y%m%dT%H%M%SZ)-$(git rev-parse --short=10 HEAD)"
dir="$root/releases/$release"
stage="$CARGO_TARGET_DIR/deploy-stage"
services="twilight@serve.service twilight@scheduler.service twilight-provisioner.service"
keep_releases=5
step_number=0

# Says what the next step does, then runs it (in a dry run, only shows it).
step() {
  local what=$1
  shift
  step_number=$((step_number + 1))
  printf '==> %d. %s\n    %s\n' "$step_number" "$what" "${*/#on_host/ssh $host sudo:}"
  [ "$dry_run" -eq 1 ] || "$@"
}

# One line of sh run as root on the host.
on_host() {
  # The command is built here on purpose, quoted for the remote shell.
  # shellcheck disable=SC2029
  ssh "$host" "sudo -n sh -euc $(printf '%q' "$1")"
}

step "build the release binary" \
  cargo build --release --locked -p twilight

step "stage the binary, the profile template, the units, the Caddyfile and the example config in $stage" \
  sh -euc "rm -rf '$stage' && mkdir -p '$stage' && cp '$CARGO_TARGET_DIR/release/twilight' README.md '$stage/' && cp -R template '$stage/template' && cp deploy/systemd/*.service deploy/systemd/*.timer deploy/Caddyfile deploy/twilight.example.toml '$stage/'"

step "first deploy only: the twilight user, its state directory, the config and an empty secrets file" \
  on_host "id -u twilight >/dev/null 2>&1 || useradd --system --home-dir /var/lib/twilight --shell /usr/sbin/nologin twilight; install -d -m 0755 $root $root/releases; install -d -m 0700 -o twilight -g twilight /var/lib/twilight; install -d -m 0750 -g twilight /etc/twilight; [ -e /etc/twilight/env ] || install -m 0600 /dev/null /etc/twilight/env"

step "copy the release to $host:$dir" \
  sh -euc "tar -C '$stage' -czf - . | ssh '$host' \"sudo -n sh -euc 'mkdir -p $dir && tar -C $dir -xzf - && chown -R root:root $dir'\""

step "install the config if there is none, and the units; reload systemd" \
  on_host "[ -e /etc/twilight/twilight.toml ] || install -m 0640 -g twilight $dir/twilight.example.toml /etc/twilight/twilight.toml; install -m 0644 $dir/twilight@.service $dir/twilight-provisioner.service $dir/twilight-replica-fetch.service $dir/twilight-replica-fetch.timer /etc/systemd/system/; systemctl daemon-reload"

step "run the accounts migrations with the new binary, as twilight, with the services' environment" \
  on_host "systemd-run --wait --pipe --collect --quiet -p User=twilight -p EnvironmentFile=/etc/twilight/env -E TWILIGHT_CONFIG=/etc/twilight/twilight.toml $dir/twilight migrate"

step "remember the running release, point $root/current at the new one (an atomic rename)" \
  on_host "readlink $root/current > $root/previous 2>/dev/null || : > $root/previous; ln -sfn $dir $root/current.next && mv -T $root/current.next $root/current"

step "restart the services on it" \
  on_host "systemctl enable --quiet $services && systemctl restart $services"

health_check="for i in \$(seq 30); do curl -fsS --max-time 2 http://127.0.0.1:8080/healthz >/dev/null && exit 0; sleep 1; done; exit 1"
rollback="previous=\$(cat $root/previous); [ -n \"\$previous\" ] || { echo 'no release to roll back to' >&2; exit 1; }; ln -sfn \"\$previous\" $root/current.next && mv -T $root/current.next $root/current && systemctl restart $services"
if ! step "check /healthz for up to 30 s" on_host "$health_check"; then
  echo "deploy.sh: $release is not healthy; rolling back" >&2
  step "roll back: $root/current to the release before, restart" on_host "$rollback"
  exit 1
fi
if [ "$dry_run" -eq 1 ]; then
  printf '    (when the check fails: %s)\n' "$rollback"
fi

step "keep the newest $keep_releases releases" \
  on_host "cd $root/releases && ls -1 | sort -r | tail -n +$((keep_releases + 1)) | xargs -r rm -rf"

echo "deployed $release to $host"
