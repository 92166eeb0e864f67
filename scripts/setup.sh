#!/usr/bin/env bash
# setup.sh installs what mysql-pitr's tests, benchmarks and demo need on a
# Debian 12 machine: MariaDB (server, mariadb-backup, client), sysbench, zstd,
# mydumper, the versitygw S3 gateway and helm (for the chart's tests), and for
# the tests on a real Kubernetes node (internal/kubetest) containerd, runc, the
# CNI plugins and the Kubernetes programs (kube-build.sh). It is idempotent
# and fast to re-run: nothing is downloaded or built when everything is
# already there.
#
# The tests start their own throwaway MariaDB servers, so the system MariaDB
# service is neither started nor enabled.
#
# MySQL 9.7 and MariaDB 11.8, which Debian 12 does not package, come as two
# server roots that server-roots.sh makes with debootstrap from the machine's
# own Debian mirror (MySQL from sid, MariaDB from trixie) in
# $MYSQL_PITR_ROOTS (default /var/cache/mysql-pitr/roots): mysql-9.7 and
# mariadb-11.8, about a minute each the first time. Each holds .bin/,
# wrappers that run the root's programs on this host through the root's own
# loader and libraries (put it first on PATH to use them as if installed). A
# root appears only once built and checked; delete its directory to rebuild
# it.
set -euo pipefail

VERSITYGW_VERSION=v1.8.0
VERSITYGW_MODULE=github.com/versity/versitygw/cmd/versitygw
# Overridable so the install path can be tried without replacing the real one.
VERSITYGW_BIN=${VERSITYGW_BIN:-/usr/local/bin/versitygw}

# helm renders and lints charts/mysql-pitr in the chart tests; built with go
# install like versitygw, so it stays out of our go.mod.
HELM_VERSION=v3.22.0
HELM_MODULE=helm.sh/helm/v3/cmd/helm
HELM_BIN=${HELM_BIN:-/usr/local/bin/helm}

# mydumper is the Debian 12 package (0.10.x): old, but enough for the logical
# snapshot comparisons in bench/. make runs the test target; ca-certificates
# is for `go install` over HTTPS on a minimal image; debootstrap builds the
# server roots (server-roots.sh). containerd, runc and
# containernetworking-plugins (its loopback plugin) make the test cluster's
# node; the tests run a private containerd, never the system's service.
PACKAGES=(
	mariadb-server
	mariadb-backup
	mariadb-client
	sysbench
	zstd
	mydumper
	make
	# GNU time: a child's peak RSS that a Go test's own does not cloud.
	time
	ca-certificates
	debootstrap
	containerd
	runc
	containernetworking-plugins
)

log() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: %s\n' "$*" >&2; exit 1; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
	command -v sudo >/dev/null 2>&1 || die "not root and sudo is missing: run as root"
	SUDO=(sudo)
fi

POLICY_RC_D=/usr/sbin/policy-rc.d
ADDED_POLICY=

remove_policy() {
	if [ -n "$ADDED_POLICY" ]; then
		"${SUDO[@]}" rm -f "$POLICY_RC_D"
		ADDED_POLICY=
	fi
}

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

install_packages() {
	local missing=() p
	for p in "${PACKAGES[@]}"; do
		installed "$p" || missing+=("$p")
	done
	if [ ${#missing[@]} -eq 0 ]; then
		log "packages already installed: ${PACKAGES[*]}"
		return
	fi
	log "installing ${missing[*]}"

	# Deny service starts during the install, as Debian's container images
	# do; an existing policy-rc.d is the machine's own and stays untouched.
	if [ ! -e "$POLICY_RC_D" ]; then
		# Removed by the trap even when apt-get fails.
		trap remove_policy EXIT
		printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY_RC_D" >/dev/null
		"${SUDO[@]}" chmod 0755 "$POLICY_RC_D"
		ADDED_POLICY=1
	fi

	log "apt-get update"
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"

	remove_policy
	trap - EXIT

	# policy-rc.d stops the start but not the enable that postinst does, and
	# a machine with its own policy may have let the start through.
	if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
		log "stopping and disabling the system mariadb and containerd services"
		"${SUDO[@]}" systemctl disable --now mariadb.service containerd.service >/dev/null 2>&1 || true
	elif command -v service >/dev/null 2>&1 && service mariadb status >/dev/null 2>&1; then
		log "stopping the system mariadb service"
		"${SUDO[@]}" service mariadb stop || true
	fi
}

# install_go_tool NAME MODULE VERSION BIN installs MODULE@VERSION as BIN
# unless BIN already records that module version (read with go version -m:
# versitygw --version prints "git" for builds made with go install).
install_go_tool() {
	local name=$1 module=$2 version=$3 bin=$4
	if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
		export PATH="$PATH:/usr/local/go/bin"
	fi
	local have=
	if [ -x "$bin" ] && command -v go >/dev/null 2>&1; then
		have=$(go version -m "$bin" 2>/dev/null | awk '$1 == "mod" { print $3 }')
	fi
	if [ "$have" = "$version" ]; then
		log "$name $version already at $bin"
		return
	fi
	command -v go >/dev/null 2>&1 || die "go not found (looked on PATH and in /usr/local/go/bin): install Go to build $name"

	log "installing $name $version to $bin (was: ${have:-missing})"
	# Built outside the repository and as the calling user, so our go.mod is
	# never touched and only the final copy needs root.
	local tmp
	tmp=$(mktemp -d)
	(cd "$tmp" && GOBIN="$tmp/bin" go install "$module@$version")
	"${SUDO[@]}" install -D -m 0755 "$tmp/bin/$name" "$bin"
	rm -rf "$tmp"
}

install_packages
install_go_tool versitygw "$VERSITYGW_MODULE" "$VERSITYGW_VERSION" "$VERSITYGW_BIN"
install_go_tool helm "$HELM_MODULE" "$HELM_VERSION" "$HELM_BIN"
bash "$(dirname "${BASH_SOURCE[0]}")/server-roots.sh"
if [ "$(id -u)" -eq 0 ]; then
	bash "$(dirname "${BASH_SOURCE[0]}")/kube-build.sh"
else
	"${SUDO[@]}" env PATH="$PATH" MYSQL_PITR_KUBE_CACHE="${MYSQL_PITR_KUBE_CACHE:-}" bash "$(dirname "${BASH_SOURCE[0]}")/kube-build.sh"
fi
log "done"
