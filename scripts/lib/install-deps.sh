#!/usr/bin/env bash
# Installs what the tests need, idempotently:
#   - system packages (Debian/apt): redis-server, dovecot (core, imapd, lmtpd), postfix, swaks
#     with libnet-ssleay-perl (swaks's TLS: a Recommends, which --no-install-recommends skips),
#     python3 with its ssl module, openssl, and nginx-light with libnginx-mod-mail (scripts/bench's
#     peer, which a test starts too). Each is checked by the capability the tests use (swaks
#     --support tls, python3 -c 'import ssl'), not by a binary's presence. Only when something is
#     missing; as root; without starting the packages' own services (a temporary policy-rc.d),
#     and stopping any daemon that the install started anyway.
#   - node_modules: `npm ci` when node_modules is missing or older than package-lock.json.
# Not root and something missing: prints one line saying what to install and exits 1.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

log() { printf 'install-deps: %s\n' "$*"; }

# package -> shell test that is true when it is usable.
declare -a PKGS=(redis-server dovecot-core dovecot-imapd dovecot-lmtpd postfix swaks libnet-ssleay-perl python3 openssl nginx-light libnginx-mod-mail)
check_pkg() {
  case "$1" in
    redis-server) redis-server --version >/dev/null 2>&1 && command -v redis-cli >/dev/null ;;
    dovecot-core) dovecot --version >/dev/null 2>&1 && command -v doveadm >/dev/null ;;
    dovecot-imapd) pkg_installed dovecot-imapd || [[ -x /usr/lib/dovecot/imap ]] ;;
    dovecot-lmtpd) pkg_installed dovecot-lmtpd || [[ -x /usr/lib/dovecot/lmtp ]] ;;
    postfix) [[ -x /usr/sbin/postfix ]] || command -v postfix >/dev/null ;;
    swaks) swaks --version >/dev/null 2>&1 ;;
    # swaks speaks TLS through Net::SSLeay (and IO::Socket::SSL is not needed): ask swaks itself.
    libnet-ssleay-perl) perl -MNet::SSLeay -e1 2>/dev/null && [[ "$(swaks --support 2>&1)" == *'=== TLS supported'* ]] ;;
    python3) python3 -c 'import ssl, imaplib' 2>/dev/null ;;
    openssl) openssl version >/dev/null 2>&1 ;;
    nginx-light) nginx -v >/dev/null 2>&1 ;;
    libnginx-mod-mail) [[ -e /usr/lib/nginx/modules/ngx_mail_module.so ]] ;;
    *) return 1 ;;
  esac
}
pkg_installed() {
  command -v dpkg-query >/dev/null &&
    [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" == installed ]]
}

# PIDs of the daemons these packages ship (listing by name is only used to tell which ones
# appeared during our install; only those are stopped, by PID).
daemon_pids() {
  {
    pgrep -x redis-server || true
    pgrep -x dovecot || true
    pgrep -f '^/usr/lib/postfix/sbin/master' || true
    pgrep -f '^nginx: master' || true
  } | sort -n
}

install_system_packages() {
  local missing=()
  local pkg
  for pkg in "${PKGS[@]}"; do
    check_pkg "$pkg" || missing+=("$pkg")
  done
  if ((${#missing[@]} == 0)); then
    log "system packages present"
    return 0
  fi
  if [[ "$(id -u)" != 0 ]]; then
    echo "install-deps: missing ${missing[*]}: install them as root (apt-get install -y ${missing[*]}) or run scripts/test as root" >&2
    exit 1
  fi
  if ! command -v apt-get >/dev/null; then
    echo "install-deps: missing ${missing[*]} and no apt-get here: install them with your package manager" >&2
    exit 1
  fi

  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Postfix asks what kind of mail setup this is: preseed "No configuration".
  if printf '%s\n' "${missing[@]}" | grep -qx postfix && command -v debconf-set-selections >/dev/null; then
    debconf-set-selections <<'SEL'
postfix postfix/main_mailer_type select No configuration
postfix postfix/mailname string localhost.localdomain
SEL
  fi

  # Keep the packages' own init scripts from starting their services (exit 101 = "action forbidden").
  local policy=/usr/sbin/policy-rc.d own_policy=0
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\n# written by mailgate scripts/lib/install-deps.sh during apt-get install\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
  fi
  local before after
  before="$(daemon_pids)"

  local status=0
  {
    apt-get -o DPkg::Lock::Timeout=300 update -qq &&
      apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}"
  } || status=$?

  if ((own_policy)); then rm -f "$policy"; fi

  # Stop any daemon that appeared during the install (and only those).
  after="$(daemon_pids)"
  local pid
  for pid in $(comm -13 <(printf '%s\n' "$before") <(printf '%s\n' "$after")); do
    [[ -n "$pid" ]] || continue
    log "stopping daemon started by the install: pid $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true))"
    kill -TERM "$pid" 2>/dev/null || true
  done

  if ((status != 0)); then
    echo "install-deps: apt-get failed (exit $status) installing ${missing[*]}" >&2
    exit "$status"
  fi
  for pkg in "${missing[@]}"; do
    check_pkg "$pkg" || {
      echo "install-deps: $pkg still missing after apt-get install" >&2
      exit 1
    }
  done
}

install_node_modules() {
  local marker=node_modules/.package-lock.json
  if [[ ! -d node_modules || ! -e "$marker" || package-lock.json -nt "$marker" ]]; then
    log "npm ci"
    npm ci --no-audit --no-fund
  else
    log "node_modules up to date"
  fi
}

install_system_packages
install_node_modules
