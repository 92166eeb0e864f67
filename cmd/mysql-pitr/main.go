// Command mysql-pitr archives a MySQL or MariaDB server's binlog
// continuously to object storage and restores it to any moment. It is the
// sidecar's binary (agent) and the command line for everything that reads
// or writes the archive; restoring a pod of the Helm chart is the kubectl
// plugin's (cmd/kubectl-mysql_pitr), so that this binary carries no
// Kubernetes client.
//
// Each subcommand is an options struct (command): register adds its flags,
// validate names the first bad one, run does the work. The parts several
// share are built once from their flags by one constructor each: the logger
// (cli.LogFlags.Logger), the archive with its encryption
// (cli.StorageFlags.Open), and a MySQL server's connection with its TLS
// (mysqlFlags.server). main is the only place that exits.
//
// Exit codes: 0 success, 1 failure, 2 bad usage or input.
package main

import (
	"context"
	"errors"
	"flag"
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

// command is a subcommand's options: register adds its flags to its own
// flag set, validate names the first bad setting once they are parsed (and
// the MYSQL_PITR_* variables read), run does the work.
type command interface {
	register(fs *flag.FlagSet)
	validate() error
	run(ctx context.Context) error
}

// output is where a command writes: its report to stdout, logs and
// progress to stderr.
type output struct{ stdout, stderr io.Writer }

// commands make each subcommand's options by name.
var commands = map[string]func(output) command{
	"agent":        func(out output) command { return &agentOptions{output: out} },
	"snapshot":     func(out output) command { return &snapshotOptions{output: out} },
	"list":         func(out output) command { return &listOptions{output: out} },
	"prune":        func(out output) command { return &pruneOptions{output: out} },
	"restore":      func(out output) command { return &restoreOptions{output: out} },
	"verify":       func(out output) command { return &verifyOptions{output: out} },
	"drill":        func(out output) command { return &drillOptions{output: out} },
	"binlog fetch": func(out output) command { return &fetchOptions{output: out} },
	"status":       func(out output) command { return &statusOptions{output: out} },
	"grants":       func(out output) command { return &grantsOptions{output: out} },
}

// run dispatches a command line; tests call it directly.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return cli.Usage(errors.New("no command given"))
	}
	name, rest := args[0], args[1:]
	switch name {
	case "binlog":
		if len(rest) == 0 || rest[0] != "fetch" {
			return cli.Usage(errors.New("binlog: the subcommand is 'fetch'"))
		}
		name, rest = "binlog fetch", rest[1:]
	case "restore":
		if kubeRequested(rest) {
			return errKubeMoved
		}
	case "copy-self":
		return runCopySelf(rest, stdout)
	case "version", "--version":
		fmt.Fprintln(stdout, "mysql-pitr", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	newCommand, ok := commands[name]
	if !ok {
		return cli.Usage(fmt.Errorf("unknown command %q (see 'mysql-pitr --help')", name))
	}
	c := newCommand(output{stdout, stderr})
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.register(fs)
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	if err := c.validate(); err != nil {
		return err
	}
	return c.run(ctx)
}

// exitCode prints err as one line and maps it to the documented exit code.
func exitCode(err error, stderr io.Writer) int { return cli.ExitCode(program, err, stderr) }
