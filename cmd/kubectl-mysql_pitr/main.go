// Command kubectl-mysql_pitr is mysql-pitr's kubectl plugin: the commands
// that act on a Kubernetes cluster, run from an operator's workstation as
// `kubectl mysql-pitr …` (kubectl runs kubectl-mysql_pitr from PATH). It
// carries the Kubernetes client, so that mysql-pitr, the sidecar's binary,
// does not; both take the same storage, encryption and logging flags
// (internal/cli).
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

// program is the name errors and usage give this command.
const program = "kubectl mysql-pitr"

const usage = `kubectl mysql-pitr: restore a pod of the mysql-pitr Helm chart to a moment

Usage:
  kubectl mysql-pitr restore --pod NAME --storage URL --to TIME   restore the pod in place: record a request in
                     <release>-restore-requests, delete the pod, wait until it is Ready [--yes] [--timeout D];
                     or --to-new-pvc NAME: leave the pod alone and restore into a new PVC through a Job;
                     [--namespace NS] [--kubeconfig FILE] [--release NAME] [--dry-run: print the plan only]
  kubectl mysql-pitr version

kubectl runs this plugin as kubectl-mysql_pitr, found on PATH.
Every flag can also be set through MYSQL_PITR_<FLAG>, e.g. MYSQL_PITR_STORAGE.
Run 'kubectl mysql-pitr COMMAND -h' for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(cli.ExitCode(program, err, os.Stderr))
}

// run dispatches a command line; tests call it directly.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return cli.Usage(errors.New("no command given"))
	}
	switch args[0] {
	case "restore":
		o := &restoreOptions{stdout: stdout, stderr: stderr}
		fs := flag.NewFlagSet("restore", flag.ContinueOnError)
		fs.SetOutput(stderr)
		o.register(fs)
		if err := cli.Parse(program, fs, args[1:]); err != nil {
			return err
		}
		if err := o.validate(); err != nil {
			return err
		}
		return o.run(ctx)
	case "version", "--version":
		fmt.Fprintln(stdout, "kubectl-mysql_pitr", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return cli.Usage(fmt.Errorf("unknown command %q (see 'kubectl mysql-pitr --help')", args[0]))
}
