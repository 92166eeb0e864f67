package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/mysql-pitr/mysql-pitr/internal/childout"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// TestBadInputHidesSecrets gives secrets in the wrong place or in a
// malformed value, as a user may by mistake: the error names the problem
// and never shows the secret.
func TestBadInputHidesSecrets(t *testing.T) {
	secret := randomCanary(t, "canaryBad-")
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	identityFile := writeSecret(t, dir, "id.key", id.String()+"\n")
	garbled := writeSecret(t, dir, "garbled.key", id.String()+"X\n")
	s := &scanner{canaries: []canary{newCanary("secret", secret), newCanary("age identity", id.String())}}
	file := "file://" + t.TempDir()
	for _, c := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"S3 URL with credentials", []string{"list", "--storage", "s3://AKIA:" + secret + "@bucket/p"}, 2, "credentials are not accepted"},
		{"S3 URL with credentials, scheme in capitals", []string{"list", "--storage", "S3://AKIA:" + secret + "@bucket/p"}, 2, "not file or s3"},
		{"S3 URL with credentials, one slash", []string{"list", "--storage", "s3:/AKIA:" + secret + "@bucket/p"}, 2, "expected file:///path"},
		{"file URL with credentials", []string{"list", "--storage", "file://u:" + secret + "@host/x"}, 2, "needs an absolute path"},
		{"endpoint with credentials", []string{"list", "--storage", "s3://bucket/p?endpoint=http://AKIA:" + secret + "@host:9000"}, 2, "without credentials"},
		{"DSN cut short", []string{"snapshot", "--dsn", "pitr:" + secret + "@tcp(127.0.0.1:3306", "--storage", file}, 2, "not a valid DSN"},
		{"DSN with the password on the command line", []string{"snapshot", "--dsn", "pitr:" + secret + "@tcp(127.0.0.1:1)/", "--storage", file,
			"--log-level", "debug"}, 2, "--dsn holds a password"},
		{"target DSN with the password on the command line", []string{"restore", "--storage", file, "--to", "latest",
			"--target-dsn", "restorer:" + secret + "@tcp(127.0.0.1:1)/"}, 2, "--target-dsn holds a password"},
		{"secret key as a recipient", []string{"list", "--storage", file, "--age-recipient", id.String()}, 2, "that is a secret key"},
		{"identity file as recipients file", []string{"list", "--storage", file, "--age-recipients-file", identityFile}, 2, "an identity file goes to --age-identity"},
		{"garbled identity", []string{"list", "--storage", file, "--age-identity", garbled}, 2, "not an age identity file"},
		{"password given as a stray argument", []string{"list", "--storage", file, secret}, 2, "unexpected argument after the flags"},
	} {
		t.Run(c.name, func(t *testing.T) {
			stdout, stderr, code := runCLI(t, t.Context(), c.args...)
			if code != c.code || !strings.Contains(lastLine(stderr), c.want) {
				t.Errorf("exit %d, %q; want exit %d naming %q", code, lastLine(stderr), c.code, c.want)
			}
			for _, l := range append(s.find("stdout", []byte(stdout)), s.find("stderr", []byte(stderr))...) {
				t.Errorf("LEAK: %s: %s", l, lastLine(stderr))
			}
		})
	}
}

// TestNoLeakedSecrets runs the binary through the agent (streaming and a
// scheduled logical snapshot), a physical snapshot with mariadb-backup,
// verify, list, restores into datadirs with both replay modes and into a
// running server, and a drill, with canary secrets passed every way a user
// can: password file, MYSQL_PITR_* variables, a DSN holding the password,
// S3 keys in the environment and in a shared credentials file, age
// identity files. Then it fails MySQL, S3 and age authentication on
// purpose. No canary may show in any process's command line or environment
// (the command's own environment aside, when the user put the secret
// there), in the output at debug level, in the error messages, in what the
// agent serves on /status and /metrics, in an option file a child gets
// unless it is 0600, or in any file the commands leave in their work
// directories or the system's temporary directory. It runs on MariaDB 10.11
// and on MySQL 9.7, whose physical snapshot is a clone (finished by the
// release's mysqld) and whose replay pipes mysqlbinlog into mysql.
func TestNoLeakedSecrets(t *testing.T) {
	for _, f := range testbed.ServersAmong(t, testbed.MariaDB1011, testbed.MySQL97) {
		t.Run(f.String(), func(t *testing.T) { noLeakedSecrets(t, f) })
	}
}

func noLeakedSecrets(t *testing.T, f testbed.Flavor) {
	if f == testbed.MariaDB1011 {
		for _, b := range []string{"mariadb-backup", "mbstream", "mariadb-binlog", "mariadb"} {
			testbed.Binary(t, b, testbed.MariaDBInstall)
		}
	} else {
		for _, b := range []string{f.ServerProgram(), f.BinlogTool(), f.ClientProgram()} {
			f.Binary(t, b)
		}
	}
	server, client := f.ServerProgram(), f.ClientProgram()
	secrets := t.TempDir() // the test's own secret files, not scanned
	pitrPW := randomCanary(t, "canaryPW-")
	wrongPW := randomCanary(t, "canaryWrongPW-")
	targetPW := randomCanary(t, "canaryTargetPW-")
	wrongTargetPW := randomCanary(t, "canaryWrongTargetPW-")
	s3Secret := randomCanary(t, "canaryS3-")
	wrongS3 := randomCanary(t, "canaryWrongS3-")
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	wrongID, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	ageFile := writeSecret(t, secrets, "age.key", fmt.Sprintf("# public key: %s\n%s\n", id.Recipient(), id))
	wrongAgeFile := writeSecret(t, secrets, "wrong-age.key", wrongID.String()+"\n")
	recipient := id.Recipient().String()
	h := newSecretsRun(t, []canary{
		newCanary("mysql password", pitrPW), newCanary("wrong mysql password", wrongPW),
		newCanary("target password", targetPW), newCanary("wrong target password", wrongTargetPW),
		newCanary("s3 secret key", s3Secret), newCanary("wrong s3 secret key", wrongS3),
		newCanary("age identity", id.String()), newCanary("wrong age identity", wrongID.String()),
	})

	// The servers, with the canaries as their real credentials.
	s3 := testbed.StartS3(t)
	if err := s3.Stop(); err != nil {
		t.Fatal(err)
	}
	s3.SecretKey = s3Secret
	if err := s3.Start(); err != nil {
		t.Fatal(err)
	}
	src := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: f})
	src.SetPitrPassword(t, pitrPW)
	target := newTarget(t, f, 2, targetPW)
	if dir := f.BinDir(); dir != "" {
		// Every command takes the release's programs from there.
		h.base = append(h.base, "MYSQL_PITR_SERVER_BINDIR="+dir)
	}

	storageURL := s3.URL("archive")
	dsn := fmt.Sprintf("%s@tcp(127.0.0.1:%d)/", testbed.PitrUser, src.Port())
	passwordFile := writeSecret(t, secrets, "pitr.password", pitrPW+"\n")
	wrongPasswordFile := writeSecret(t, secrets, "wrong.password", wrongPW+"\n")
	targetPasswordFile := writeSecret(t, secrets, "target.password", targetPW+"\n")
	s3File := func(secret string) []string {
		path := writeSecret(t, secrets, "aws-"+secret[:12], fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", s3.AccessKey, secret))
		return []string{"AWS_SHARED_CREDENTIALS_FILE=" + path, "AWS_REGION=" + s3.Region}
	}
	s3Env := func(secret string) []string {
		return []string{"AWS_ACCESS_KEY_ID=" + s3.AccessKey, "AWS_SECRET_ACCESS_KEY=" + secret, "AWS_REGION=" + s3.Region}
	}
	with := func(envs ...[]string) []string { return slices.Concat(envs...) }
	manifests := func() []string {
		m, _ := filepath.Glob(s3.ObjectPath("archive/snapshots/*/manifest.json"))
		return m
	}

	src.Exec(t, "CREATE DATABASE app")
	src.Exec(t, "CREATE TABLE app.t (id INT PRIMARY KEY, v MEDIUMTEXT)")
	src.Exec(t, "INSERT INTO app.t VALUES (1, 'a'), (2, 'b'), (3, 'c')")

	// The agent streams and its scheduler takes a logical snapshot: the
	// archive's first timeline pokes it at once (--snapshot-new-timelines),
	// and the hourly schedule takes no second one while the test runs.
	// Password file, S3 keys in a credentials file, JSON log at debug level.
	listen := freeListen(t)
	spec := cmdSpec{name: "agent", env: s3File(s3Secret), args: []string{"agent", "--dsn", dsn, "--password-file", passwordFile,
		"--storage", storageURL, "--age-recipient", recipient, "--age-identity", ageFile, "--listen", listen,
		"--spool-dir", filepath.Join(h.work, "spool"), "--flush-interval", "100ms",
		"--schedule", "@every 1h", "--snapshot-new-timelines=true", "--snapshot-method", "logical", "--snapshot-threads", "2",
		"--log-level", "debug", "--log-format", "json"}}
	began := time.Now()
	r := h.start(spec)
	waitFor(t, "a scheduled snapshot", 60*time.Second, r, func() bool { return len(manifests()) == 1 })
	// Enough binlog after the logical snapshot (about 9 MB) that the client
	// of a mysqlbinlog replay runs long enough for the watch to read it.
	for i := range replayed {
		src.Exec(t, "INSERT INTO app.t VALUES (?, REPEAT('after the logical snapshot ', 1100))", 4+i)
	}
	waitAgentDurable(t, listen, src, r)
	served := agentPages(t, listen)
	res := h.finish(spec, r.stop(t), began)
	res.leaks = append(res.leaks, h.scan.find(spec.name+" /status and /metrics", served)...)
	expectExit(t, spec.name, res, 0)
	expectClean(t, spec.name, res)
	// A restore to t1 uses the logical snapshot and replays rows 4 and 5:
	// commit times have one-second resolution, so later writes wait for
	// the next second.
	t1 := time.Now().UTC()
	testbed.NextSecond(t, t1)

	// A physical snapshot through mariadb-backup (on MySQL a clone, which
	// mysqld starts once to finish): password and S3 keys in the
	// environment, text log at debug level. MYSQL_PWD, which the client
	// tools would read, must not reach mariadb-backup or mysqld either.
	spec = cmdSpec{name: "snapshot --method physical", secretEnv: true,
		env: with(s3Env(s3Secret), []string{"MYSQL_PITR_PASSWORD=" + pitrPW, "MYSQL_PWD=" + pitrPW}),
		args: []string{"snapshot", "--method", "physical", "--dsn", dsn, "--storage", storageURL, "--age-recipient", recipient,
			"--log-level", "debug", "--log-format", "text"}}
	res = h.run(spec, 3*time.Minute)
	expectExit(t, spec.name, res, 0)
	expectClean(t, spec.name, res)
	physicalTool := "mariadb-backup"
	if f.MySQL() {
		physicalTool = server
	}
	if !res.sawProgram(physicalTool) {
		t.Errorf("%s: the watch never saw %s", spec.name, physicalTool)
	}

	// The agent again, from a DSN holding the password, in the environment
	// like every other setting; text log.
	src.Exec(t, "INSERT INTO app.t VALUES (1000, 'after the physical snapshot'), (1001, 'g')")
	listen = freeListen(t)
	spec = cmdSpec{name: "agent (password in MYSQL_PITR_DSN)", secretEnv: true,
		env: with(s3Env(s3Secret), []string{
			fmt.Sprintf("MYSQL_PITR_DSN=%s:%s@tcp(127.0.0.1:%d)/", testbed.PitrUser, pitrPW, src.Port()),
			"MYSQL_PITR_STORAGE=" + storageURL, "MYSQL_PITR_AGE_RECIPIENT=" + recipient}),
		args: []string{"agent", "--listen", listen, "--spool-dir", filepath.Join(h.work, "spool"), "--flush-interval", "100ms",
			"--log-level", "debug", "--log-format", "text"}}
	began = time.Now()
	r = h.start(spec)
	waitAgentDurable(t, listen, src, r)
	served = agentPages(t, listen)
	res = h.finish(spec, r.stop(t), began)
	res.leaks = append(res.leaks, h.scan.find(spec.name+" /status and /metrics", served)...)
	expectExit(t, spec.name, res, 0)
	expectClean(t, spec.name, res)

	spec = cmdSpec{name: "verify", env: s3File(s3Secret), args: []string{"verify", "--storage", storageURL, "--age-identity", ageFile}}
	res = h.run(spec, 2*time.Minute)
	expectExit(t, spec.name, res, 0)
	expectClean(t, spec.name, res)

	spec = cmdSpec{name: "list", env: s3Env(s3Secret), secretEnv: true,
		args: []string{"list", "--storage", storageURL, "--age-identity", ageFile, "--json"}}
	res = h.run(spec, time.Minute)
	expectExit(t, spec.name, res, 0)
	expectClean(t, spec.name, res)
	var listed struct {
		Snapshots []struct {
			Method string `json:"method"`
		} `json:"snapshots"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &listed); err != nil || len(listed.Snapshots) != 2 {
		t.Fatalf("list --json: %v; want 2 snapshots in:\n%s", err, res.stdout)
	}

	// Restores into datadirs: the physical snapshot with the built-in
	// binlog server, the logical one with mariadb-binlog | mariadb (or
	// mysqlbinlog | mysql).
	restore := func(name string, env []string, secretEnv bool, args ...string) *cmdResult {
		t.Helper()
		spec := cmdSpec{name: name, env: env, secretEnv: secretEnv, args: append([]string{"restore", "--storage", storageURL,
			"--age-identity", ageFile, "--threads", "2", "--buffer-pool-size", "64MiB", "--log-level", "debug"}, args...)}
		res := h.run(spec, 3*time.Minute)
		expectExit(t, spec.name, res, 0)
		expectClean(t, spec.name, res)
		if !res.sawProgram(server) && !strings.Contains(name, "target") {
			t.Errorf("%s: the watch never saw the temporary server", spec.name)
		}
		return res
	}
	res = restore("restore --datadir --replay server", s3File(s3Secret), false,
		"--to", "latest", "--datadir", filepath.Join(h.work, "d1"), "--replay", "server", "--log-format", "json")
	if !strings.Contains(res.stdout, "(physical,") {
		t.Errorf("the restore to latest did not use the physical snapshot:\n%s", res.stdout)
	}
	// The watch samples /proc: on a starved machine it can miss a client
	// that lives for a fraction of a second. Each attempt is scanned in
	// full; another one, into another datadir, is only for the watch to
	// see the client at least once.
	for attempt := 1; ; attempt++ {
		res = restore("restore --datadir --replay mysqlbinlog", with(s3Env(s3Secret), []string{"MYSQL_PWD=" + pitrPW}), true,
			"--to", t1.Format(time.RFC3339Nano), "--datadir", filepath.Join(h.work, fmt.Sprintf("d2-%d", attempt)), "--replay", "mysqlbinlog", "--log-format", "text")
		if want := fmt.Sprintf("+ %d transactions", replayed); !strings.Contains(res.stdout, "(logical,") || !strings.Contains(res.stdout, want) {
			t.Errorf("the restore to %s did not use the logical snapshot and replay %d transactions:\n%s", t1.Format(time.RFC3339Nano), replayed, res.stdout)
		}
		if res.sawProgram(client) {
			break
		}
		if attempt == 3 {
			t.Errorf("in %d restores the watch never saw the %s client of the replay; programs %q", attempt, client, res.names())
			break
		}
		t.Logf("attempt %d: the watch did not see the %s client; programs %q", attempt, client, res.names())
	}
	targetDSN := fmt.Sprintf("restorer@tcp(127.0.0.1:%d)/", target.Port())
	res = restore("restore --target-dsn --replay mysqlbinlog", s3File(s3Secret), false,
		"--to", t1.Format(time.RFC3339Nano), "--target-dsn", targetDSN, "--target-password-file", targetPasswordFile,
		"--replay", "mysqlbinlog", "--log-format", "json")
	// The client got the target's password, and only through a 0600 file.
	if !slices.ContainsFunc(res.options, func(o optionFile) bool {
		return o.program == client && o.mode == 0o600 && strings.Contains(string(o.content), targetPW)
	}) {
		t.Errorf("the watch saw no 0600 option file holding the target's password given to %s; programs %q, option files %d",
			client, res.names(), len(res.options))
	}
	// And with the built-in binlog server, the password in the environment.
	target2 := newTarget(t, f, 3, targetPW)
	restore("restore --target-dsn --replay server", with(s3Env(s3Secret), []string{"MYSQL_PITR_TARGET_PASSWORD=" + targetPW}), true,
		"--to", t1.Format(time.RFC3339Nano), "--target-dsn", fmt.Sprintf("restorer@tcp(127.0.0.1:%d)/", target2.Port()),
		"--replay", "server", "--log-format", "text")
	for _, db := range []*testbed.MariaDB{target, target2} {
		var n int
		if err := db.DB(t).QueryRow("SELECT COUNT(*) FROM app.t").Scan(&n); err != nil || n != 3+replayed {
			t.Errorf("target after the restore: %d rows, %v; want %d", n, err, 3+replayed)
		}
	}

	spec = cmdSpec{name: "drill", env: s3Env(s3Secret), secretEnv: true,
		args: []string{"drill", "--storage", storageURL, "--age-identity", ageFile, "--threads", "2", "--log-level", "debug", "--log-format", "text"}}
	res = h.run(spec, 3*time.Minute)
	expectExit(t, spec.name, res, 0)
	expectClean(t, spec.name, res)
	if !strings.Contains(res.stdout, "PASSED") || !res.sawProgram(server) {
		t.Errorf("drill: want a passed drill on a temporary server; programs %q, stdout:\n%s", res.names(), res.stdout)
	}

	// Failed authentication: each command fails, and its error says why
	// without the secret it was given or the right one.
	failing := []struct {
		name      string
		env       []string
		secretEnv bool
		args      []string
		timeout   time.Duration
		want      string // in the error (the last line of stderr)
	}{
		{"agent, wrong MySQL password", with(s3File(s3Secret), []string{"MYSQL_PITR_PASSWORD_FILE=" + wrongPasswordFile}), false,
			[]string{"agent", "--dsn", dsn, "--storage", storageURL, "--age-recipient", recipient, "--listen", "",
				"--spool-dir", filepath.Join(h.work, "spool"), "--connect-timeout", "3s", "--log-level", "debug", "--log-format", "json"},
			time.Minute, "Access denied"},
		{"snapshot, wrong MySQL password", s3File(s3Secret), false,
			[]string{"snapshot", "--dsn", dsn, "--password-file", wrongPasswordFile, "--storage", storageURL, "--age-recipient", recipient,
				"--log-level", "debug", "--log-format", "text"},
			time.Minute, "Access denied"},
		{"restore --target-dsn, wrong password", with(s3File(s3Secret), []string{"MYSQL_PITR_TARGET_PASSWORD=" + wrongTargetPW}), true,
			[]string{"restore", "--storage", storageURL, "--age-identity", ageFile, "--to", t1.Format(time.RFC3339Nano), "--target-dsn", targetDSN,
				"--log-level", "debug", "--log-format", "json"},
			time.Minute, "Access denied"},
		{"list, wrong S3 secret key", s3Env(wrongS3), true,
			[]string{"list", "--storage", storageURL, "--age-identity", ageFile},
			time.Minute, "access denied to bucket"},
		{"agent, wrong S3 secret key", with(s3File(wrongS3), []string{"MYSQL_PITR_PASSWORD_FILE=" + passwordFile}), false,
			[]string{"agent", "--dsn", dsn, "--storage", storageURL, "--age-recipient", recipient, "--listen", "",
				"--spool-dir", filepath.Join(h.work, "spool"), "--log-level", "debug", "--log-format", "text"},
			time.Minute, "access denied to bucket"},
		{"restore, wrong age identity", s3File(s3Secret), false,
			[]string{"restore", "--storage", storageURL, "--age-identity", wrongAgeFile, "--to", "latest",
				"--datadir", filepath.Join(h.work, "d3"), "--log-level", "debug", "--log-format", "text"},
			time.Minute, "no configured age identity can decrypt"},
	}
	for _, f := range failing {
		spec := cmdSpec{name: f.name, env: f.env, secretEnv: f.secretEnv, args: f.args}
		res := h.run(spec, f.timeout)
		t.Logf("%s: %s", f.name, lastLine(res.stderr))
		if res.code == 0 {
			t.Errorf("%s: exit 0, want a failure", f.name)
		}
		if !strings.Contains(lastLine(res.stderr), f.want) {
			t.Errorf("%s: the error does not say %q:\n%s", f.name, f.want, childout.Last(res.stderr, 10, "\n"))
		}
		expectClean(t, f.name, res)
	}
	if _, err := os.Stat(filepath.Join(h.work, "d3")); err == nil {
		t.Error("the restore with the wrong age identity created its datadir")
	}
}

// newTarget starts an empty server of release f to restore into, with an
// account restorer that may do everything (and on MySQL local_infile on).
func newTarget(t *testing.T, f testbed.Flavor, serverID uint32, password string) *testbed.MariaDB {
	t.Helper()
	db := testbed.NewMariaDB(t, testbed.MariaDBOptions{Flavor: f, ServerID: serverID})
	if f.MySQL() {
		db.Exec(t, "SET GLOBAL local_infile = ON")
	}
	db.Exec(t, fmt.Sprintf("CREATE USER restorer@'%%' IDENTIFIED BY '%s'", password))
	db.Exec(t, "GRANT ALL ON *.* TO restorer@'%' WITH GRANT OPTION")
	return db
}

// replayed is how many transactions the secrets test writes between its
// logical and its physical snapshot.
const replayed = 300

// freeListen is a loopback address for an agent's HTTP server.
func freeListen(t *testing.T) string {
	t.Helper()
	port, err := testbed.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// waitFor polls cond until it holds; it fails the test when the command
// exits first or the time runs out.
func waitFor(t *testing.T, what string, timeout time.Duration, r *runWatched, cond func() bool) {
	t.Helper()
	testbed.Eventually(t, timeout, func() error {
		if cond() {
			return nil
		}
		select {
		case <-r.exited:
			return testbed.Halt(fmt.Errorf("%s exited waiting for %s: %v\n%s", r.spec.name, what, r.err, childout.Last(r.errb.String(), 20, "\n")))
		default:
		}
		return fmt.Errorf("%s: no %s\n%s", r.spec.name, what, childout.Last(r.errb.String(), 20, "\n"))
	})
}

// agentPages returns what the agent on listen serves on /status and /metrics.
func agentPages(t *testing.T, listen string) []byte {
	t.Helper()
	var out []byte
	c := http.Client{Timeout: 5 * time.Second}
	for _, page := range []string{"/status", "/metrics"} {
		resp, err := c.Get("http://" + listen + page)
		if err != nil {
			t.Fatalf("agent %s: %v", page, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || len(b) == 0 {
			t.Fatalf("agent %s: %s, %d bytes, %v", page, resp.Status, len(b), err)
		}
		out = append(out, b...)
	}
	return out
}

// waitAgentDurable waits until the agent on listen reports the archive
// durable up to the server's current end.
func waitAgentDurable(t *testing.T, listen string, db *testbed.MariaDB, r *runWatched) {
	t.Helper()
	file, pos := masterStatus(t, db)
	c := http.Client{Timeout: 2 * time.Second}
	waitFor(t, fmt.Sprintf("archive up to %s:%d", file, pos), time.Minute, r, func() bool {
		resp, err := c.Get("http://" + listen + "/status")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var st statusDoc
		if json.NewDecoder(resp.Body).Decode(&st) != nil {
			return false
		}
		d := st.Binlog.Durable
		return d.File > file || d.File == file && d.Pos >= pos
	})
}
