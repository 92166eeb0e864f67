package testbed

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// ReplayBinlog pipes m's binlog from file at pos to its end through the
// flavor's binlog tool, given toolArgs, and client into the server
// listening on 127.0.0.1 at port, as root without a password: the way a
// test checks that a restored snapshot plus the binlog after it equals the
// source.
func (m *MariaDB) ReplayBinlog(tb testing.TB, file string, pos uint64, port int, toolArgs ...string) {
	tb.Helper()
	f := m.Flavor()
	binlogTool := f.Binary(tb, f.BinlogTool())
	client := f.Binary(tb, f.ClientProgram())
	var files []string
	for _, p := range m.BinlogFiles(tb) {
		if filepath.Base(p) >= file {
			files = append(files, p)
		}
	}
	if len(files) == 0 || filepath.Base(files[0]) != file {
		tb.Fatalf("binlog %s is not among the source's files %v", file, files)
	}
	args := append([]string{"--no-defaults", "--start-position=" + strconv.FormatUint(pos, 10)}, toolArgs...)
	dump := exec.CommandContext(tb.Context(), binlogTool, append(args, files...)...)
	load := exec.CommandContext(tb.Context(), client, "--no-defaults", "--protocol=tcp", "-h127.0.0.1", "-P"+strconv.Itoa(port), "-uroot")
	pipe, err := dump.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	load.Stdin = pipe
	var dumpErr, loadErr bytes.Buffer
	dump.Stderr, load.Stderr = &dumpErr, &loadErr
	if err := load.Start(); err != nil {
		tb.Fatal(err)
	}
	// The client holds the read end now; keeping ours open would leave
	// the binlog tool blocked forever if the client exited early.
	pipe.Close()
	runErr := dump.Run()
	if err := load.Wait(); err != nil {
		tb.Fatalf("replay: %v: %s", err, loadErr.String())
	}
	if runErr != nil {
		tb.Fatalf("%s: %v: %s", filepath.Base(binlogTool), runErr, dumpErr.String())
	}
}
