#!/usr/bin/env bash
# kube-build.sh builds the Kubernetes programs the cluster tests run
# (internal/kubetest): etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and the kubelet, from the Go module proxy, into
#
#   $MYSQL_PITR_KUBE_CACHE/kubernetes-$KUBE_VERSION/   the four Kubernetes programs
#   $MYSQL_PITR_KUBE_CACHE/etcd-$ETCD_VERSION/         etcd
#
# (MYSQL_PITR_KUBE_CACHE defaults to /var/cache/mysql-pitr/kube). A directory
# appears only once everything in it is built, and one that exists is never
# built again: delete it to rebuild. Other versions' directories are left
# alone.
#
# Neither k8s.io/kubernetes nor etcd's server can be installed with
# `go install MODULE@VERSION`: their go.mod replace their own sub-modules
# with directories of their repository (k8s.io/api => ./staging/src/k8s.io/api),
# which the go command refuses in a module it did not start in. So each is
# built in a scratch module outside this repository (our go.mod never sees
# them) whose go.mod requires the module and replaces each of those
# sub-modules with its published release of the same version, the lines
# generated from the module's own go.mod. The Kubernetes programs are stamped
# with their version, as the release builds are: /version must say v1.37.2,
# not v0.0.0-master, or helm refuses charts with a kubeVersion.
#
# A cold build takes about 1,350 CPU-seconds and 4-5 GB of build cache, which
# is private to the build and deleted afterwards; the binaries are about
# 570 MB.
set -euo pipefail

# The Kubernetes release matches the minor of our client-go (v0.37.x).
KUBE_VERSION=v1.37.2
ETCD_VERSION=v3.7.4
CACHE=${MYSQL_PITR_KUBE_CACHE:-/var/cache/mysql-pitr/kube}
KUBE_PROGRAMS=(kube-apiserver kube-controller-manager kube-scheduler kubelet)

log() { printf 'kube-build: %s\n' "$*"; }
die() { printf 'kube-build: %s\n' "$*" >&2; exit 1; }

if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
	export PATH="$PATH:/usr/local/go/bin"
fi

# built DIR PROGRAMS... reports whether DIR holds every program.
built() {
	local dir=$1 p
	shift
	[ -d "$dir" ] || return 1
	for p in "$@"; do
		[ -x "$dir/$p" ] || return 1
	done
}

# scratch_module DIR MODULE VERSION writes a go.mod in DIR that requires
# MODULE@VERSION and replaces each module MODULE's go.mod replaces with a
# directory by that module's release REPLACE_VERSION (set by the caller;
# "=" for MODULE's own version). It copies MODULE's go and godebug lines,
# which a dependency's go.mod does not pass on.
scratch_module() {
	local dir=$1 module=$2 version=$3 gomod
	gomod=$(cd "$dir" && GOFLAGS=-mod=mod go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
	[ -f "$gomod" ] || die "go mod download $module@$version gave no go.mod"
	{
		echo "module mysql-pitr.local/kube-build"
		echo
		grep -E '^(go|godebug) ' "$gomod"
		echo
		echo "require $module $version"
		echo
		# "	k8s.io/api => ./staging/src/k8s.io/api" or
		# "	go.etcd.io/etcd/api/v3 => ../api": the left side is the module.
		awk -v v="$REPLACE_VERSION" '
			$2 == "=>" && $3 ~ /^\.\.?\// { print "replace " $1 " => " $1 " " v }
		' "$gomod"
	} >"$dir/go.mod"
	grep -q '^replace ' "$dir/go.mod" || die "$module@$version: found no directory replacements in its go.mod; has its layout changed?"
	log "$module@$version: $(grep -c '^replace ' "$dir/go.mod") sub-modules replaced by their $REPLACE_VERSION releases"
}

# build NAME MODULE VERSION OUT LDFLAGS PACKAGES... builds PACKAGES of
# MODULE@VERSION into the directory OUT, atomically.
build() {
	local name=$1 module=$2 version=$3 out=$4 ldflags=$5
	shift 5
	local tmp start
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/kube-build.XXXXXX")
	TMP_DIRS+=("$tmp")
	mkdir -p "$tmp/mod" "$tmp/bin"
	export GOCACHE=$tmp/cache GOMODCACHE=$tmp/modcache GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
	start=$(date +%s)
	scratch_module "$tmp/mod" "$module" "$version"
	# go get records the sums of everything the packages import.
	(cd "$tmp/mod" && go get "${@/%/@$version}" >"$tmp/get.log" 2>&1) ||
		die "$name: go get failed: $(tail -n 5 "$tmp/get.log")"
	log "$name $version: building $* (about $(nproc) cores; this takes long the first time)"
	(cd "$tmp/mod" && nice -n 19 go build -trimpath -ldflags "$ldflags" -o "$tmp/bin/" "$@" >"$tmp/build.log" 2>&1) ||
		die "$name: go build failed: $(tail -n 20 "$tmp/build.log")"
	local elapsed=$(($(date +%s) - start))
	mkdir -p "$CACHE"
	local stage=$CACHE/.$(basename "$out").tmp.$$
	rm -rf "$stage"
	mkdir -p "$stage"
	cp "$tmp"/bin/* "$stage/"
	# A package path ending in /vN builds a program named after the
	# element before it (etcd's server/v3 builds "server").
	if [ -n "${RENAME:-}" ]; then
		mv "$stage/${RENAME%%:*}" "$stage/${RENAME#*:}"
	fi
	printf 'built %s %s with %s in %ds on %d cores\n' "$module" "$version" "$(go version | cut -d' ' -f3)" "$elapsed" "$(nproc)" >"$stage/BUILD"
	cp "$tmp/mod/go.mod" "$stage/go.mod.txt"
	mv -T "$stage" "$out"
	unset GOCACHE GOMODCACHE GOTOOLCHAIN GOFLAGS CGO_ENABLED
	log "$name $version ready at $out in ${elapsed}s ($(du -sh "$out" | cut -f1))"
	remove_tmp "$tmp"
}

# The build and module caches are private to a build, so their 4-5 GB go
# with its temporary directory (module cache files are read-only).
TMP_DIRS=()
remove_tmp() {
	chmod -R u+w "$1" 2>/dev/null || true
	rm -rf "$1"
}
cleanup() {
	local d
	for d in "${TMP_DIRS[@]}"; do
		remove_tmp "$d"
	done
}
trap cleanup EXIT

command -v go >/dev/null 2>&1 || die "go not found (looked on PATH and in /usr/local/go/bin): install Go to build Kubernetes"
mkdir -p "$CACHE"
# One build at a time, even from two worktrees' setups at once.
exec 8>"$CACHE/.build.lock"
flock 8
for stale in "$CACHE"/.*.tmp.*; do
	[ -e "$stale" ] && rm -rf "$stale"
done

ETCD_DIR=$CACHE/etcd-$ETCD_VERSION
if built "$ETCD_DIR" etcd; then
	log "etcd $ETCD_VERSION already at $ETCD_DIR"
else
	# etcd's server module is its main package; ldflags as etcd's build.
	REPLACE_VERSION=$ETCD_VERSION RENAME=server:etcd build etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "$ETCD_DIR" \
		"-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION" go.etcd.io/etcd/server/v3
fi

KUBE_DIR=$CACHE/kubernetes-$KUBE_VERSION
if built "$KUBE_DIR" "${KUBE_PROGRAMS[@]}"; then
	log "Kubernetes $KUBE_VERSION already at $KUBE_DIR"
else
	# The staging modules are published as k8s.io/<name> v0.<minor>.<patch>.
	major=${KUBE_VERSION#v}
	major=${major%%.*}
	minor=${KUBE_VERSION#v*.}
	minor=${minor%%.*}
	ldflags="-s -w"
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
		ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
	done
	REPLACE_VERSION=v0.${KUBE_VERSION#v1.} build kubernetes k8s.io/kubernetes "$KUBE_VERSION" "$KUBE_DIR" "$ldflags" \
		"${KUBE_PROGRAMS[@]/#/k8s.io/kubernetes/cmd/}"
fi
