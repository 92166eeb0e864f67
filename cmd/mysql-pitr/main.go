// Command mysql-pitr archives a MySQL or MariaDB server's binlog
// continuously to object storage and restores it to any moment.
//
// Exit codes: 0 success, 1 failure, 2 bad usage or input.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/mysql-pitr/mysql-pitr/internal/cli"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `mysql-pitr: continuous binlog archive and point-in-time recovery for MySQL and MariaDB

Usage:
  mysql-pitr agent --dsn DSN --storage URL [flags]     stream the binlog to storage (the sidecar);
                                                       [--schedule CRON --keep-snapshots N] to take snapshots and prune
  mysql-pitr snapshot --dsn DSN --storage URL          take a snapshot now [--method logical|physical] [--threads N]
  mysql-pitr list --storage URL [--json]               show snapshots, binlog coverage and recoverable windows
  mysql-pitr prune --storage URL --keep-snapshots N [--keep-within D] [--dry-run]   delete expired snapshots and the binlog no kept snapshot needs
  mysql-pitr restore --storage URL --to TIME --datadir DIR   restore a datadir to a moment [--dry-run] [--force]
                     (or --target-dsn DSN: into a running empty server; a pod of the chart, in place or into
                     a new PVC: kubectl mysql-pitr restore --pod NAME, the kubectl-mysql_pitr plugin)
  mysql-pitr verify --storage URL [--json]             read everything, check checksums and continuity; exit 1 on damage
  mysql-pitr drill --storage URL [--to latest|TIME]    restore into scratch space, check it against the archive, record the result;
                   [--scratch DIR] [--keep-scratch]     exit 1 when the archive cannot be restored as it records
  mysql-pitr binlog fetch --storage URL --out DIR      write the archived binlog back out as files
  mysql-pitr status --url URL [--max-lag 5m]         ask running agents (/readyz, /status); exit 1 unless each is
                                                       ready, streaming and within --max-lag (the chart's helm test)
  mysql-pitr grants --role ROLE --flavor mariadb|mysql --user "'pitr'@'%'"   print the SQL for an account with
                                                       the least privileges (ROLE: streamer, logical, physical, restore, all)
  mysql-pitr version

Every flag can also be set through MYSQL_PITR_<FLAG>, e.g. MYSQL_PITR_DSN.
Run 'mysql-pitr COMMAND -h' for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// run dispatches a command line; tests call it directly.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return cli.Usage(errors.New("no command given"))
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "agent":
		return runAgent(ctx, rest, stdout, stderr)
	case "list":
		return runList(ctx, rest, stdout, stderr)
	case "snapshot":
		return runSnapshot(ctx, rest, stdout, stderr)
	case "restore":
		return runRestore(ctx, rest, stdout, stderr)
	case "verify":
		return runVerify(ctx, rest, stdout, stderr)
	case "drill":
		return runDrill(ctx, rest, stdout, stderr)
	case "prune":
		return runPrune(ctx, rest, stdout, stderr)
	case "binlog":
		if len(rest) > 0 && rest[0] == "fetch" {
			return runFetch(ctx, rest[1:], stdout, stderr)
		}
		return cli.Usage(errors.New("binlog: the subcommand is 'fetch'"))
	case "grants":
		return runGrants(ctx, rest, stdout, stderr)
	case "status":
		return runStatus(ctx, rest, stdout, stderr)
	case "copy-self":
		return runCopySelf(rest, stdout)
	case "version", "--version":
		fmt.Fprintln(stdout, "mysql-pitr", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return cli.Usage(fmt.Errorf("unknown command %q (see 'mysql-pitr --help')", cmd))
}

// exitCode prints err as one line and maps it to the documented exit code.
func exitCode(err error, stderr io.Writer) int { return cli.ExitCode(program, err, stderr) }
