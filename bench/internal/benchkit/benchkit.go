// Package benchkit holds what the benchmarks in bench/ share: size flags,
// /proc readings, medians and log lines.
package benchkit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// UserHZ is the kernel's USER_HZ, the unit of utime and stime in
// /proc/PID/stat and of /proc/stat.
const UserHZ = 100

// SizeValue is a byte-size flag: 1GiB, 200MiB, 1048576.
type SizeValue struct{ P *int64 }

func (s SizeValue) String() string {
	if s.P == nil {
		return ""
	}
	return strconv.FormatInt(*s.P, 10)
}

func (s SizeValue) Set(v string) error {
	n, err := ParseSize(v)
	if err != nil {
		return err
	}
	*s.P = n
	return nil
}

func ParseSize(v string) (int64, error) {
	v = strings.TrimSpace(v)
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(v, u.suffix) {
			v, mult = strings.TrimSpace(strings.TrimSuffix(v, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid size %q (use e.g. 200MiB or 2GiB)", v)
	}
	return n * mult, nil
}

// ProcField returns the value of the first "name : value" line of a /proc file.
func ProcField(path, name string) string {
	f, err := os.Open(path)
	if err != nil {
		return "?"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

func Logf(format string, args ...any) {
	fmt.Printf("%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// ParseStatCPU returns utime+stime from the text of /proc/PID/stat. The
// command name (field 2) may hold spaces and parentheses, so fields are
// counted from the last ')'.
func ParseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("no command name")
	}
	// After ")" come field 3 (state) onwards; utime and stime are fields
	// 14 and 15.
	f := strings.Fields(stat[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("only %d fields", len(f)+2)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(utime+stime) * time.Second / UserHZ, nil
}

// SelfCPU is the CPU time this process has used.
func SelfCPU() time.Duration {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	d, _ := ParseStatCPU(string(b))
	return d
}

// Median of xs; NaN when empty.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func Met(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// CPUTimes are the machine's aggregate CPU counters from /proc/stat, in
// USER_HZ ticks.
type CPUTimes struct {
	Busy, Steal, Total int64
}

// ReadCPUTimes reads the "cpu" line of /proc/stat; zero if it cannot.
func ReadCPUTimes() CPUTimes {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return CPUTimes{}
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return ParseCPULine(line)
}

// ParseCPULine parses "cpu user nice system idle iowait irq softirq steal ...".
// Guest time is already counted in user and nice, so it is left out.
func ParseCPULine(line string) CPUTimes {
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return CPUTimes{}
	}
	var v [8]int64
	for i := range v {
		v[i], _ = strconv.ParseInt(f[i+1], 10, 64)
	}
	user, nice, system, idle, iowait, irq, softirq, steal := v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]
	busy := user + nice + system + irq + softirq
	return CPUTimes{Busy: busy, Steal: steal, Total: busy + idle + iowait + steal}
}

// Binary returns the mysql-pitr binary to benchmark: given, made absolute, or
// else ./cmd/mysql-pitr of this module built into dir. flag names the flag
// that gives one, for the error outside the module.
func Binary(ctx context.Context, given, dir, flag string) (string, error) {
	if given != "" {
		return filepath.Abs(given)
	}
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the mysql-pitr module: run from the repository or pass %s", flag)
	}
	bin := filepath.Join(dir, "mysql-pitr")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/mysql-pitr")
	cmd.Dir = filepath.Dir(mod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build mysql-pitr: %w\n%s", err, out)
	}
	Logf("built %s", bin)
	return bin, nil
}

// ParseStatusKB returns a "Name:   123 kB" line of /proc/PID/status in bytes.
func ParseStatusKB(status, name string) (int64, error) {
	for line := range strings.SplitSeq(status, "\n") {
		rest, ok := strings.CutPrefix(line, name+":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("%s: unexpected %q", name, line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", name, err)
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("no %s line", name)
}
