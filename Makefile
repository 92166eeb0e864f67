# Developer and CI entry points. `make test` is the project's test command;
# .ci/run calls it after scripts/setup.sh.

# Go may be installed without being on PATH (the tarball's default place).
export PATH := $(PATH):/usr/local/go/bin

.PHONY: test build setup demo

# staticcheck, pinned, run through `go run pkg@version`: it is fetched into
# the module cache (from the module proxy) on first use and never enters
# go.mod, so the product's dependencies stay the product's.
STATICCHECK := go run honnef.co/go/tools/cmd/staticcheck@v0.8.2

# The packages whose code runs goroutines, tested again under the race
# detector. ./agent has no tests of its own: the agent runs in
# cmd/mysql-pitr's tests as a separate binary, built without -race.
RACE_PKGS := ./binlog/... ./agent/... ./schedule/... ./storage/... ./restore/...

# The tests on a real Kubernetes cluster (internal/kubetest; TestCluster*)
# run on their own, one package at a time, after the rest: the cluster and its
# pods take both cores for minutes, and the time-bound tests of other
# packages beside them would be starved.
KUBE_TESTS := ^TestCluster
KUBE_PKGS := ./charts/charttest ./internal/kubetest

# CI=true turns a missing MariaDB, MySQL, versitygw or Kubernetes binary from
# a skip into a failure; passing it through explicitly keeps that visible here.
# MYSQL_PITR_TEST_SERVERS chooses the servers the suites that run on several
# take (see internal/testbed's Servers and ServersAmong, and docs/tested.md's
# table): all of them in the plain run, unless set; the race run is for the
# Go code's goroutines, which MariaDB 10.11 alone exercises.
test:
	go vet ./...
	$(STATICCHECK) ./...
	CI=$${CI:-} MYSQL_PITR_TEST_SERVERS=$${MYSQL_PITR_TEST_SERVERS:-all} go test -count=1 -timeout 40m -skip '$(KUBE_TESTS)' ./...
	CI=$${CI:-} go test -count=1 -timeout 40m -p 1 -run '$(KUBE_TESTS)' $(KUBE_PKGS)
	CI=$${CI:-} MYSQL_PITR_TEST_SERVERS=mariadb-10.11 go test -race -count=1 -timeout 40m $(RACE_PKGS)

# bin/mysql-pitr is the sidecar and the command line; bin/kubectl-mysql_pitr
# the kubectl plugin (kubectl mysql-pitr restore), which alone carries a
# Kubernetes client: put it on PATH to use it.
build:
	go build -o bin/ ./cmd/mysql-pitr ./cmd/kubectl-mysql_pitr

setup:
	scripts/setup.sh

demo: build
	scripts/demo.sh
