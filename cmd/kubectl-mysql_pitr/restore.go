package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/mysql-pitr/mysql-pitr/internal/cli"
	"github.com/mysql-pitr/mysql-pitr/restore"
	"github.com/mysql-pitr/mysql-pitr/restore/kube"
)

// restoreOptions are the settings of `kubectl mysql-pitr restore`: a pod
// of the chart restored in place, or its archive into a new PVC.
type restoreOptions struct {
	storage cli.StorageFlags
	log     cli.LogFlags
	to      cli.ToFlag
	dryRun  bool

	namespace, kubeconfig, release string
	pod, newPVC                    string
	yes                            bool
	timeout                        time.Duration

	target         restore.Target // from --to, by validate
	stdout, stderr io.Writer
}

func (o *restoreOptions) register(fs *flag.FlagSet) {
	o.storage.Register(fs)
	o.log.Register(fs)
	o.to.Register(fs)
	fs.BoolVar(&o.dryRun, "dry-run", false, "print the plan and stop: nothing in the cluster is read or changed")
	fs.StringVar(&o.namespace, "namespace", "", "the pod's namespace (default: the kubeconfig context's, or the service account's)")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster)")
	fs.StringVar(&o.pod, "pod", "", "the pod to restore, e.g. db-mysql-pitr-0")
	fs.StringVar(&o.release, "release", "", "the Helm release (default: the pod's app.kubernetes.io/instance label)")
	fs.StringVar(&o.newPVC, "to-new-pvc", "", "leave the pod alone and restore its archive into a new PVC of this name (size and storage class cloned from the pod's), through a Job")
	fs.BoolVar(&o.yes, "yes", false, "do not ask for confirmation")
	fs.DurationVar(&o.timeout, "timeout", kube.DefaultTimeout, "how long to wait for the restored pod to become Ready, or for the Job with --to-new-pvc")
}

// validate names the first bad setting.
func (o *restoreOptions) validate() (err error) {
	if o.target, err = o.to.Target(""); err != nil {
		return err
	}
	switch {
	case o.pod == "":
		return cli.Usage(errors.New("restore needs --pod NAME, the pod of the chart whose archive is restored"))
	case o.timeout <= 0:
		return cli.Usage(fmt.Errorf("--timeout %s: must be positive", o.timeout))
	}
	return nil
}

// run plans the restore against --storage (the pod's archive) before
// anything in the cluster is touched, then restores the pod in place or
// into a new PVC.
func (o *restoreOptions) run(ctx context.Context) error {
	logger, err := o.log.Logger(o.stderr)
	if err != nil {
		return err
	}
	plan := func(ctx context.Context) (*restore.Plan, error) {
		st, err := o.storage.Open(ctx, cli.Read, logger)
		if err != nil {
			return nil, err
		}
		return cli.PlanRestore(ctx, st, o.target)
	}
	if o.dryRun {
		p, err := plan(ctx)
		if err == nil {
			cli.PrintPlan(o.stdout, p)
		}
		return err
	}
	client, ns, err := kube.NewClient(o.kubeconfig, o.namespace)
	if err != nil {
		return err
	}
	ko := kube.Options{
		Client: client, Namespace: ns, Pod: o.pod, Release: o.release, Target: o.target,
		Plan: plan, PrintPlan: cli.PrintPlan, Yes: o.yes, Timeout: o.timeout, Out: o.stdout,
		NewPVC: o.newPVC, Storage: o.storage.URL(),
	}
	if !o.yes && cli.IsTerminal(os.Stdin) {
		ko.Confirm = o.confirm(ns)
	}
	_, err = kube.Run(ctx, ko)
	return err
}

// confirm asks on the terminal before the cluster is changed.
func (o *restoreOptions) confirm(ns string) func() (bool, error) {
	prompt := fmt.Sprintf("This replaces the datadir of pod %s/%s (the old contents are moved aside on its volume) and restarts it.", ns, o.pod)
	if o.newPVC != "" {
		prompt = fmt.Sprintf("This creates PVC %s/%s and restores pod %s's archive into it through a Job; the pod is not touched.", ns, o.newPVC, o.pod)
	}
	return func() (bool, error) {
		fmt.Fprintf(o.stdout, "%s\nType yes to go on: ", prompt)
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return false, err
		}
		return strings.TrimSpace(line) == "yes", nil
	}
}
