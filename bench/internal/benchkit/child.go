package benchkit

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Child is a process a benchmark started and must end. Its output goes to
// files so that a failed run can show why.
type Child struct {
	name  string
	cmd   *exec.Cmd
	log   string        // stderr
	done  chan struct{} // closed when the process has exited
	err   error         // written before done is closed
	usage Usage         // written before done is closed
}

// Usage is a process tree's CPU time and largest resident set, from wait4.
type Usage struct {
	CPU     time.Duration
	PeakRSS int64 // bytes
}

// StartChild starts argv with extra environment variables, logging stdout
// and stderr to logPath. Secrets go in env, never in argv.
func StartChild(name string, argv, env []string, logPath string) (*Child, error) {
	return StartChildOut(name, argv, env, logPath, logPath)
}

// StartChildOut is StartChild with stdout to its own file.
func StartChildOut(name string, argv, env []string, outPath, logPath string) (*Child, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("create %s log: %w", name, err)
	}
	defer logFile.Close() // the child holds its own descriptors
	outFile := logFile
	if outPath != logPath {
		if outFile, err = os.Create(outPath); err != nil {
			return nil, fmt.Errorf("create %s output: %w", name, err)
		}
		defer outFile.Close()
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = outFile
	cmd.Stderr = logFile
	// A benchmark killed with Ctrl-C must not leave an agent, a load or a
	// restore running behind it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &Child{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			c.usage = Usage{CPU: time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), PeakRSS: ru.Maxrss << 10} // KiB on Linux
		}
		close(c.done)
	}()
	return c, nil
}

// Pid is the child's process id.
func (c *Child) Pid() int { return c.cmd.Process.Pid }

// Done is closed when the child has exited.
func (c *Child) Done() <-chan struct{} { return c.done }

// Err is how the child exited; valid once Done is closed.
func (c *Child) Err() error { return c.err }

// Usage is what the child and the children it waited for used; valid once
// Done is closed.
func (c *Child) Usage() Usage { return c.usage }

// Exited reports whether the child has ended, and with what.
func (c *Child) Exited() (bool, error) {
	select {
	case <-c.done:
		return true, c.err
	default:
		return false, nil
	}
}

// Stop sends SIGTERM, then SIGKILL if the child is still there after grace,
// and waits for it to end.
func (c *Child) Stop(grace time.Duration) {
	if done, _ := c.Exited(); done {
		return
	}
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		c.cmd.Process.Kill()
	}
	select {
	case <-c.done:
	case <-time.After(grace):
		c.cmd.Process.Kill()
		<-c.done
	}
}

// LogTail returns the last n lines of the child's log, for error messages.
func (c *Child) LogTail(n int) string {
	b, err := os.ReadFile(c.log)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	return LastLines(string(b), n)
}

// Signal sends sig to the child.
func (c *Child) Signal(sig os.Signal) error { return c.cmd.Process.Signal(sig) }

// LogPath is the file the child's stderr goes to.
func (c *Child) LogPath() string { return c.log }
