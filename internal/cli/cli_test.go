package cli

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/mysql-pitr/mysql-pitr/catalog"
)

// secretFlag refuses any value given on the command line.
type secretFlag struct{ v string }

func (s *secretFlag) String() string         { return s.v }
func (s *secretFlag) Set(v string) error     { s.v = v; return nil }
func (s *secretFlag) CheckArgv(string) error { return Usage(errors.New("not on the command line")) }

func TestParse(t *testing.T) {
	newFlags := func() (*flag.FlagSet, *string, *secretFlag) {
		fs := flag.NewFlagSet("cmd", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var s secretFlag
		fs.Var(&s, "secret", "")
		return fs, fs.String("some-flag", "default", ""), &s
	}
	t.Setenv("MYSQL_PITR_SOME_FLAG", "from-env")
	t.Setenv("MYSQL_PITR_SECRET", "from-env")
	for _, tc := range []struct {
		name             string
		args             []string
		wantFlag, secret string
		wantErr          string
		code             int
	}{
		{name: "environment", wantFlag: "from-env", secret: "from-env"},
		{name: "argument over environment", args: []string{"--some-flag", "arg"}, wantFlag: "arg", secret: "from-env"},
		{name: "refused on the command line", args: []string{"--secret", "x"}, wantErr: "not on the command line", code: 2},
		{name: "unknown flag", args: []string{"--nope"}, wantErr: "cmd: flag provided but not defined: -nope (see 'prog cmd --help')", code: 2},
		{name: "positional argument", args: []string{"hunter2"}, wantErr: "unexpected argument after the flags (1 of them, 7 characters in the first); every value goes with a --flag", code: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, some, secret := newFlags()
			err := Parse("prog", fs, tc.args)
			var stderr bytes.Buffer
			code := ExitCode("prog", err, &stderr)
			if tc.wantErr != "" {
				if want := "prog: " + tc.wantErr + "\n"; code != tc.code || stderr.String() != want {
					t.Fatalf("exit %d, stderr %q; want exit %d and %q", code, stderr.String(), tc.code, want)
				}
				return
			}
			if err != nil || *some != tc.wantFlag || secret.v != tc.secret {
				t.Fatalf("err %v, --some-flag %q, --secret %q; want %q and %q", err, *some, secret.v, tc.wantFlag, tc.secret)
			}
		})
	}
}

// TestOpen: readers and amenders need an archive where --storage points;
// a writer starts one there.
func TestOpen(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	dir := filepath.Join(t.TempDir(), "archive")
	var s StorageFlags
	fs := flag.NewFlagSet("cmd", flag.ContinueOnError)
	s.Register(fs)
	if err := Parse("prog", fs, []string{"--storage", "file://" + dir}); err != nil {
		t.Fatal(err)
	}
	for _, access := range []Access{Read, Amend} {
		if _, err := s.Open(t.Context(), access, logger); !errors.Is(err, catalog.ErrNoArchive) {
			t.Errorf("access %d to a missing directory: %v, want %v", access, err, catalog.ErrNoArchive)
		}
	}
	if _, err := s.Open(t.Context(), Write, logger); err != nil {
		t.Fatalf("writer: %v", err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("the writer did not create the archive's directory: %v", err)
	}
}
