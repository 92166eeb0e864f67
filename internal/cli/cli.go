// Package cli is what the mysql-pitr command and its kubectl plugin
// (kubectl-mysql_pitr) share: flags that MYSQL_PITR_* environment variables
// fill, bad usage said in one line with its exit code, the logging flags,
// the archive's storage and encryption flags, and the restore plan as both
// show it. It holds no Kubernetes client, so the sidecar carries none.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// EnvPrefix: every flag --some-flag can also be set as MYSQL_PITR_SOME_FLAG.
const EnvPrefix = "MYSQL_PITR_"

// EnvName returns the environment variable that sets a flag.
func EnvName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// ArgvChecker is a flag value that refuses some values on the command line
// (where every user of the host can read them) but not in its environment
// variable: Parse calls CheckArgv for each such flag given as an argument.
type ArgvChecker interface {
	CheckArgv(name string) error
}

// Parse parses args for program's subcommand fs, then fills every flag not
// given on the command line from its MYSQL_PITR_* environment variable.
// A bad flag is one line naming it and where the usage is; -h prints the
// usage and returns flag.ErrHelp.
func Parse(program string, fs *flag.FlagSet, args []string) error {
	fs.VisitAll(func(f *flag.Flag) {
		f.Usage = fmt.Sprintf("%s (env %s)", f.Usage, EnvName(f.Name))
	})
	// The flag package prints a bad flag's error and then every flag's
	// usage: the error is said once, in one line, by the caller, and the
	// usage is printed when asked for.
	out := fs.Output()
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.SetOutput(out)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(out, "Usage: %s %s [flags]\n", program, fs.Name())
		fs.PrintDefaults()
		return err
	}
	if err != nil {
		return Usage(fmt.Errorf("%s: %w (see '%s %s --help')", fs.Name(), err, program, fs.Name()))
	}
	var argvErr error
	fs.Visit(func(f *flag.Flag) {
		if c, ok := f.Value.(ArgvChecker); ok && argvErr == nil {
			argvErr = c.CheckArgv(f.Name)
		}
	})
	if argvErr != nil {
		return argvErr
	}
	if fs.NArg() > 0 {
		// The argument itself is not quoted: a password given by mistake
		// would reach the log.
		return Usage(fmt.Errorf("unexpected argument after the flags (%d of them, %d characters in the first); every value goes with a --flag", fs.NArg(), len(fs.Arg(0))))
	}
	return fillFromEnv(fs)
}

// fillFromEnv sets every flag not given on the command line from its
// environment variable.
func fillFromEnv(fs *flag.FlagSet) (err error) {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		if v, ok := os.LookupEnv(EnvName(f.Name)); ok {
			if serr := fs.Set(f.Name, v); serr != nil {
				err = Usage(fmt.Errorf("%s: %w", EnvName(f.Name), serr))
			}
		}
	})
	return err
}

// usageError marks bad input: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// ExitCode prints err as one line, after program's name, and maps it to the
// documented exit code: 0 success (and -h), 1 failure, 2 bad usage or input.
func ExitCode(program string, err error, stderr io.Writer) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(stderr, "%s: %v\n", program, err)
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// ListFlag is a repeatable flag; one value may also hold several, separated
// by commas (as a MYSQL_PITR_* variable must).
type ListFlag []string

func (l *ListFlag) String() string { return strings.Join(*l, ",") }

// Set adds the comma-separated values of v.
func (l *ListFlag) Set(v string) error {
	for part := range strings.SplitSeq(v, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*l = append(*l, part)
		}
	}
	return nil
}

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// Usage marks err as bad input: exit code 2.
func Usage(err error) error { return usageError{err} }
