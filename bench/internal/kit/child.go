package kit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Child is a process a benchmark started and must end. Its stderr (and
// stdout, unless it has a file of its own) goes to a log file, so that a
// failed run can show why.
type Child struct {
	cmd   *exec.Cmd
	log   string
	done  chan struct{} // closed when the process has exited
	err   error         // written before done is closed
	usage Usage         // written before done is closed
}

// Start starts argv with extra environment variables (secrets go there,
// never in argv), appending its output to logPath.
func Start(argv, env []string, logPath string) (*Child, error) {
	return StartIO(argv, env, "", "", logPath)
}

// StartIO is Start with stdin read from a file and stdout written to a
// file, where given ("" for none and for the log).
func StartIO(argv, env []string, stdin, stdout, logPath string) (*Child, error) {
	cmd, closers, err := command(argv, env, stdin, stdout, logPath)
	defer closeAll(closers) // the child holds its own descriptors
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	return watch(cmd, logPath), nil
}

func command(argv, env []string, stdin, stdout, logPath string) (*exec.Cmd, []io.Closer, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	// A benchmark killed with Ctrl-C must not leave a tool running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var closers []io.Closer
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", logPath, err)
	}
	closers = append(closers, logFile)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if stdin != "" {
		f, err := os.Open(stdin)
		if err != nil {
			return nil, closers, err
		}
		closers, cmd.Stdin = append(closers, f), f
	}
	if stdout != "" {
		f, err := os.Create(stdout)
		if err != nil {
			return nil, closers, err
		}
		closers, cmd.Stdout = append(closers, f), f
	}
	return cmd, closers, nil
}

func closeAll(cs []io.Closer) {
	for _, c := range cs {
		c.Close()
	}
}

func watch(cmd *exec.Cmd, logPath string) *Child {
	c := &Child{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			c.usage = Usage{CPU: time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), PeakRSS: ru.Maxrss << 10} // KiB on Linux
		}
		if c.err != nil {
			c.err = fmt.Errorf("%s: %w (log %s):\n%s", cmd.Args[0], c.err, logPath, Tail(logPath, 8))
		}
		close(c.done)
	}()
	return c
}

// Pid is the child's process id.
func (c *Child) Pid() int { return c.cmd.Process.Pid }

// Done is closed when the child has exited.
func (c *Child) Done() <-chan struct{} { return c.done }

// Wait waits for the child to exit and returns how, with the log's end.
func (c *Child) Wait() error { <-c.done; return c.err }

// Usage is what the child and the children it waited for used, from
// rusage; valid once Done is closed. Its PeakRSS is at least this
// program's own (see TreeSampler).
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

// Signal sends sig to the child.
func (c *Child) Signal(sig os.Signal) error { return c.cmd.Process.Signal(sig) }

// Stop sends SIGTERM, then SIGKILL if the child is still there after grace,
// and waits for it to end.
func (c *Child) Stop(grace time.Duration) {
	if done, _ := c.Exited(); done {
		return
	}
	if err := c.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		c.cmd.Process.Kill()
	}
	select {
	case <-c.done:
	case <-time.After(grace):
		c.cmd.Process.Kill()
		<-c.done
	}
}

// LogTail is the last n lines of the child's log.
func (c *Child) LogTail(n int) string { return Tail(c.log, n) }

// LogPath is the file the child's output goes to.
func (c *Child) LogPath() string { return c.log }

// Stage is one process of a pipeline: argv, extra environment and the file
// its stderr goes to.
type Stage struct {
	Argv, Env []string
	Log       string
}

// RSSInterval is how often a running tool's peak RSS is read from /proc:
// the growth of its last moments may be missed, no more.
const RSSInterval = 50 * time.Millisecond

// Pipeline runs the stages with each one's stdout feeding the next one's
// stdin, the first reading stdin and the last writing stdout (file paths,
// "" for none and for its log), and returns when every process has exited,
// with their summed CPU (rusage) and the largest VmHWM of them and their
// children (see TreeSampler).
func Pipeline(ctx context.Context, stages []Stage, stdin, stdout string) (Usage, error) {
	var u Usage
	cmds := make([]*exec.Cmd, len(stages))
	var closers []io.Closer
	defer func() { closeAll(closers) }()
	for i, s := range stages {
		in, out := "", ""
		if i == 0 {
			in = stdin
		}
		if i == len(stages)-1 {
			out = stdout
		}
		cmd, cs, err := command(s.Argv, s.Env, in, out, s.Log)
		closers = append(closers, cs...)
		if err != nil {
			return u, err
		}
		cmds[i] = cmd
	}
	for i := 0; i+1 < len(cmds); i++ {
		r, w, err := os.Pipe()
		if err != nil {
			return u, err
		}
		closers = append(closers, r, w)
		cmds[i].Stdout, cmds[i+1].Stdin = w, r
	}
	var children []*Child
	var errs []error
	for i, cmd := range cmds {
		if err := cmd.Start(); err != nil {
			errs = append(errs, fmt.Errorf("start %s: %w", cmd.Args[0], err))
			break
		}
		children = append(children, watch(cmd, stages[i].Log))
	}
	// The children hold their own ends of the pipes; ours must close, or
	// a reader never sees EOF.
	closeAll(closers)
	closers = nil
	rss := NewTreeSampler(RSSInterval)
	for _, c := range children {
		rss.Add(c.Pid())
	}
	stop := rss.Watch()
	for _, c := range children {
		if errors.Join(errs...) != nil {
			c.Stop(time.Second)
		}
		select {
		case <-c.Done():
		case <-ctx.Done():
			c.Stop(time.Second)
		}
		errs = append(errs, c.Wait())
		u.CPU += c.Usage().CPU
	}
	u.PeakRSS = stop().MaxRSS()
	return u, errors.Join(append(errs, ctx.Err())...)
}
