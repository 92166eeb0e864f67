package main

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/mysqld"
)

// secretKey matches an age secret key.
var secretKey = regexp.MustCompile(`AGE-SECRET-KEY-1[0-9A-Z]{20,}`)

// ageKey is a generated key pair with its identity file.
type ageKey struct {
	pub  string
	file string
}

func newAgeKey(t *testing.T, name string) ageKey {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name+".key")
	content := fmt.Sprintf("# created: %s\n# public key: %s\n%s\n", time.Now().UTC().Format(time.RFC3339), id.Recipient(), id)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return ageKey{pub: id.Recipient().String(), file: path}
}

// checksums returns CHECKSUM TABLE of every table of the app schema.
func checksums(t *testing.T, db *sql.DB) map[string]string {
	t.Helper()
	rows, err := db.Query("SELECT table_name FROM information_schema.tables WHERE table_schema = 'app' AND table_type = 'BASE TABLE'")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	rows.Close()
	sort.Strings(names)
	out := map[string]string{}
	for _, n := range names {
		var name, sum string
		if err := db.QueryRow("CHECKSUM TABLE app."+n+" EXTENDED").Scan(&name, &sum); err != nil {
			t.Fatal(err)
		}
		out[n] = sum
	}
	if len(out) == 0 {
		t.Fatal("no table in app")
	}
	return out
}

// restoredChecksums starts a server on a restored datadir and returns its checksums.
func restoredChecksums(t *testing.T, datadir string) map[string]string {
	t.Helper()
	srv, err := mysqld.Start(t.Context(), mysqld.Options{Flavor: mysqld.MariaDB, Datadir: datadir, RunDir: t.TempDir(), SkipGrants: true})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop(context.WithoutCancel(t.Context()))
	return checksums(t, srv.DB())
}

func sameSums(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s: checksums %v, source has %v", what, got, want)
	}
}

// assertNoDatadir checks that a refused restore left no datadir behind.
func assertNoDatadir(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err == nil && len(ents) > 0 {
		t.Fatalf("the refused restore wrote %d entries into %s", len(ents), dir)
	}
	if err == nil {
		t.Fatalf("the refused restore created %s", dir)
	}
}

// TestEncryptedArchiveEndToEnd archives a server into file storage through
// an agent and a snapshot that hold only age public keys, rotating the key
// halfway, and restores it: with both identities the restored tables equal
// the source's; with no identity, another key, only the new key, or a
// truncated segment, the command fails with a clear error before the
// target datadir exists.
func TestEncryptedArchiveEndToEnd(t *testing.T) {
	db := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	keyA, keyB, keyC := newAgeKey(t, "a"), newAgeKey(t, "b"), newAgeKey(t, "c")
	root := t.TempDir()
	storageURL := "file://" + root
	t.Setenv("MYSQL_PITR_PASSWORD", db.PitrPassword())
	dsn := fmt.Sprintf("%s@tcp(127.0.0.1:%d)/", testbed.PitrUser, db.Port())
	spool := t.TempDir()
	agentArgs := func(recipient string) []string {
		return []string{"--dsn", dsn, "--storage", storageURL, "--spool-dir", spool, "--agent-id", "sidecar-0",
			"--flush-interval", "200ms", "--server-id", "4243", "--age-recipient", recipient,
			"--schedule", "@every 24h", "--keep-snapshots", "2", "--drill-schedule", "@every 24h"}
	}
	const canary = "plaintext-canary-7f3e"

	a := startAgent(t, nil, agentArgs(keyA.pub)...)
	a.waitReady(30 * time.Second)
	db.Exec(t, "CREATE DATABASE app")
	db.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(100))")
	for i := range 200 {
		db.Exec(t, "INSERT INTO app.t (v) VALUES (?)", fmt.Sprintf("%s row %d", canary, i))
	}
	if _, stderr, code := runCLI(t, t.Context(), "snapshot", "--dsn", dsn, "--storage", storageURL, "--threads", "1",
		"--age-recipient", keyA.pub); code != 0 {
		t.Fatalf("snapshot: exit %d: %s", code, stderr)
	}
	db.Exec(t, "UPDATE app.t SET v = CONCAT(v, ' updated') WHERE id % 3 = 0")
	db.Exec(t, "CREATE TABLE app.u (id INT PRIMARY KEY, w TEXT)")
	db.Exec(t, "INSERT INTO app.u VALUES (1, ?)", canary)
	a.waitDurable(db, 30*time.Second)
	if err := a.signal(syscall.SIGTERM); err != nil {
		t.Fatalf("agent: %v\n%s", err, a.logs())
	}
	for _, say := range []string{"compaction is off", "retention (--keep-snapshots, --keep-within) is off", "drills (--drill-schedule) are off"} {
		if !strings.Contains(a.logs(), say) {
			t.Errorf("the agent without identity did not say %q", say)
		}
	}

	// Key rotation: the agent now encrypts for B; it continues the same
	// timeline from its spool without reading anything back.
	b := startAgent(t, nil, agentArgs(keyB.pub)...)
	b.waitReady(30 * time.Second)
	db.Exec(t, "DELETE FROM app.t WHERE id % 5 = 0")
	db.Exec(t, "INSERT INTO app.u VALUES (2, 'after rotation')")
	b.waitDurable(db, 30*time.Second)
	if err := b.signal(syscall.SIGTERM); err != nil {
		t.Fatalf("agent: %v\n%s", err, b.logs())
	}
	if !strings.Contains(b.logs(), "resuming archive") {
		t.Errorf("the rotated agent did not resume the archive:\n%s", b.logs())
	}
	want := checksums(t, db.DB(t))

	// Nothing in storage holds the plaintext.
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(body, []byte("age-encryption.org/v1\n")) {
			t.Errorf("%s is not an age file", p)
		}
		if bytes.Contains(body, []byte(canary)) {
			t.Errorf("%s holds the plaintext", p)
		}
		return nil
	})

	both := []string{"--age-identity", keyA.file, "--age-identity", keyB.file}
	restoreArgs := func(datadir string, keys ...string) []string {
		return append([]string{"restore", "--storage", storageURL, "--to", "latest", "--datadir", datadir, "--threads", "1"}, keys...)
	}
	refusals := []struct {
		name string
		keys []string
		msg  string
	}{
		{"no identity", nil, "no age identity is configured to decrypt it"},
		{"another key", []string{"--age-identity", keyC.file}, "no configured age identity can decrypt"},
		{"only the new key", []string{"--age-identity", keyB.file}, "it was encrypted for other recipients"},
	}
	for _, tt := range refusals {
		t.Run("refused/"+tt.name, func(t *testing.T) {
			datadir := filepath.Join(t.TempDir(), "data")
			_, stderr, code := runCLI(t, t.Context(), restoreArgs(datadir, tt.keys...)...)
			if code != 1 || !strings.Contains(stderr, tt.msg) {
				t.Fatalf("restore: exit %d, stderr %q; want exit 1 saying %q", code, stderr, tt.msg)
			}
			assertNoDatadir(t, datadir)
			if secretKey.MatchString(stderr) {
				t.Fatal("an identity reached the error output")
			}
		})
	}

	if _, stderr, code := runCLI(t, t.Context(), append([]string{"verify", "--storage", storageURL}, both...)...); code != 0 {
		t.Fatalf("verify with both identities: exit %d: %s", code, stderr)
	}
	datadir := filepath.Join(t.TempDir(), "data")
	stdout, stderr, code := runCLI(t, t.Context(), restoreArgs(datadir, both...)...)
	if code != 0 {
		t.Fatalf("restore with both identities: exit %d: %s", code, stderr)
	}
	t.Logf("restore: %s", strings.TrimSpace(stdout))
	sameSums(t, "restored with identities {A,B}", restoredChecksums(t, datadir), want)

	// A segment cut short by one byte, as a partial copy would leave it.
	var last string
	filepath.WalkDir(filepath.Join(root, "binlog"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".zst") {
			last = p
		}
		return nil
	})
	fi, err := os.Stat(last)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(last, fi.Size()-1); err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(t.TempDir(), "data")
	_, stderr, code = runCLI(t, t.Context(), restoreArgs(truncated, both...)...)
	rel, _ := filepath.Rel(root, last)
	if code != 1 || !strings.Contains(stderr, rel) {
		t.Fatalf("restore from a truncated segment: exit %d, stderr %q; want exit 1 naming %s", code, stderr, rel)
	}
	assertNoDatadir(t, truncated)
	t.Logf("truncated segment refused: %s", strings.TrimSpace(stderr))
	if stdout, stderr, code := runCLI(t, t.Context(), append([]string{"verify", "--storage", storageURL}, both...)...); code != 1 || !strings.Contains(stdout+stderr, rel) {
		t.Errorf("verify over a truncated segment: exit %d, want 1 naming %s:\n%s%s", code, rel, stdout, stderr)
	}
}

// TestEncryptedArchiveS3 runs the same archive, snapshot and restore against
// S3 (versitygw): the agent and the snapshot hold only the public key.
func TestEncryptedArchiveS3(t *testing.T) {
	db := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	s3 := testbed.StartS3(t)
	s3.SetEnv(t)
	storageURL := s3.URL("encrypted")
	key := newAgeKey(t, "k")
	t.Setenv("MYSQL_PITR_PASSWORD", db.PitrPassword())
	dsn := fmt.Sprintf("%s@tcp(127.0.0.1:%d)/", testbed.PitrUser, db.Port())
	recipients := filepath.Join(t.TempDir(), "recipients.txt")
	if err := os.WriteFile(recipients, []byte("# archive key\n"+key.pub+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, append(s3.Env(), "MYSQL_PITR_AGE_RECIPIENTS_FILE="+recipients), "--dsn", dsn, "--storage", storageURL,
		"--spool-dir", t.TempDir(), "--agent-id", "sidecar-0", "--flush-interval", "200ms", "--server-id", "4244")
	a.waitReady(30 * time.Second)
	db.Exec(t, "CREATE DATABASE app")
	db.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(100))")
	for i := range 100 {
		db.Exec(t, "INSERT INTO app.t (v) VALUES (?)", fmt.Sprint("row ", i))
	}
	if _, stderr, code := runCLI(t, t.Context(), "snapshot", "--dsn", dsn, "--storage", storageURL, "--threads", "1",
		"--age-recipients-file", recipients); code != 0 {
		t.Fatalf("snapshot: exit %d: %s", code, stderr)
	}
	db.Exec(t, "UPDATE app.t SET v = 'changed' WHERE id < 10")
	a.waitDurable(db, 30*time.Second)
	if err := a.signal(syscall.SIGTERM); err != nil {
		t.Fatalf("agent: %v\n%s", err, a.logs())
	}
	want := checksums(t, db.DB(t))
	n := 0
	filepath.WalkDir(s3.ObjectPath("encrypted"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(body, []byte("age-encryption.org/v1\n")) {
			t.Errorf("%s is not an age file", p)
		}
		n++
		return nil
	})
	if n == 0 {
		t.Fatal("no object found in the gateway's data directory")
	}
	datadir := filepath.Join(t.TempDir(), "data")
	if _, stderr, code := runCLI(t, t.Context(), "restore", "--storage", storageURL, "--to", "latest", "--datadir", datadir,
		"--threads", "1", "--age-identity", key.file); code != 0 {
		t.Fatalf("restore: exit %d: %s", code, stderr)
	}
	sameSums(t, "restored from S3", restoredChecksums(t, datadir), want)
}

// TestAgeFlagsBadInput: bad keys are usage errors that never echo a key.
func TestAgeFlagsBadInput(t *testing.T) {
	key := newAgeKey(t, "k")
	secret, err := os.ReadFile(key.file)
	if err != nil {
		t.Fatal(err)
	}
	secretLine := strings.TrimSpace(string(secret[bytes.LastIndex(bytes.TrimSpace(secret), []byte("\n"))+1:]))
	dir := t.TempDir()
	notKeys := filepath.Join(dir, "not-keys")
	os.WriteFile(notKeys, []byte("hello\n"), 0o600)
	recipientsAsIdentity := filepath.Join(dir, "recipients")
	os.WriteFile(recipientsAsIdentity, []byte(key.pub+"\n"), 0o600)
	storageURL := "file://" + t.TempDir()
	tests := []struct {
		name string
		args []string
		msg  string
	}{
		{"secret key as recipient", []string{"list", "--storage", storageURL, "--age-recipient", secretLine}, "that is a secret key"},
		{"garbage recipient", []string{"list", "--storage", storageURL, "--age-recipient", "age1nope"}, "not an age public key"},
		{"missing identity file", []string{"list", "--storage", storageURL, "--age-identity", filepath.Join(dir, "missing")}, "--age-identity"},
		{"identity file of other content", []string{"list", "--storage", storageURL, "--age-identity", notKeys}, "not an age identity file"},
		{"recipients given as identity", []string{"list", "--storage", storageURL, "--age-identity", recipientsAsIdentity}, "not an age identity file"},
		{"identity given as recipients file", []string{"list", "--storage", storageURL, "--age-recipients-file", key.file}, "not a file of age public keys"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, code := runCLI(t, t.Context(), tt.args...)
			if code != 2 || !strings.Contains(stderr, tt.msg) {
				t.Fatalf("exit %d, stderr %q; want exit 2 saying %q", code, stderr, tt.msg)
			}
			if strings.Contains(stderr, secretLine) || secretKey.MatchString(stderr) {
				t.Fatal("a secret key reached the error output")
			}
		})
	}
}

// TestWriterRefusesMismatchedArchive: a snapshot without keys refuses an
// encrypted archive, and one with keys refuses a plaintext archive.
func TestWriterRefusesMismatchedArchive(t *testing.T) {
	db := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	t.Setenv("MYSQL_PITR_PASSWORD", db.PitrPassword())
	dsn := fmt.Sprintf("%s@tcp(127.0.0.1:%d)/", testbed.PitrUser, db.Port())
	key := newAgeKey(t, "k")
	db.Exec(t, "CREATE DATABASE app")
	db.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY)")
	for _, tt := range []struct {
		name        string
		first, then []string
		msg         string
	}{
		{"plaintext into encrypted", []string{"--age-recipient", key.pub}, nil, "holds an encrypted archive"},
		{"encrypted into plaintext", nil, []string{"--age-recipient", key.pub}, "holds an unencrypted archive"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			storageURL := "file://" + t.TempDir()
			args := []string{"snapshot", "--dsn", dsn, "--storage", storageURL, "--threads", "1"}
			if _, stderr, code := runCLI(t, t.Context(), append(args, tt.first...)...); code != 0 {
				t.Fatalf("first snapshot: exit %d: %s", code, stderr)
			}
			_, stderr, code := runCLI(t, t.Context(), append(args, tt.then...)...)
			if code != 2 || !strings.Contains(stderr, tt.msg) {
				t.Fatalf("second snapshot: exit %d, stderr %q; want exit 2 saying %q", code, stderr, tt.msg)
			}
		})
	}
}
