package testbed

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// versitygwInstall is how to get the gateway binary the S3 tests run against.
const versitygwInstall = "GOBIN=/usr/local/bin go install github.com/versity/versitygw/cmd/versitygw@v1.8.0"

// s3StartTimeout bounds how long StartS3 and Start wait for the gateway to answer.
const s3StartTimeout = 20 * time.Second

// S3 is a running versitygw S3 gateway backed by a throwaway directory, with
// one empty bucket. It listens on loopback only and speaks plain HTTP, or
// HTTPS when started with a certificate (S3Options).
type S3 struct {
	// Endpoint is the gateway's base URL, e.g. "http://127.0.0.1:40123"
	// (https:// with a certificate).
	Endpoint string
	// Bucket is the bucket created for the test.
	Bucket string
	// Region is the region the gateway reports.
	Region string
	// AccessKey and SecretKey are the gateway's root credentials.
	AccessKey, SecretKey string
	// DataDir is the posix backend's root: object KEY of Bucket is the file
	// DataDir/Bucket/KEY, so tests can damage objects behind the gateway's back.
	DataDir string

	bin     string
	addr    string
	logPath string
	opts    S3Options

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// S3Options configures a test gateway.
type S3Options struct {
	// CertFile and KeyFile, when set, make the gateway serve HTTPS with this
	// certificate (see CA.ServerCert; issue it for 127.0.0.1).
	CertFile, KeyFile string
}

// StartS3 starts a versitygw posix gateway on a free loopback port, waits until
// it answers and creates a bucket. The gateway is stopped when the test ends.
// A missing versitygw binary skips the test (fails it under CI=true).
func StartS3(tb testing.TB) *S3 {
	tb.Helper()
	return StartS3With(tb, S3Options{})
}

// StartS3With is StartS3 with options.
func StartS3With(tb testing.TB, opts S3Options) *S3 {
	tb.Helper()
	Binary(tb, "versitygw", versitygwInstall)
	s, err := NewS3(tb.TempDir(), opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Stop(); err != nil {
			tb.Errorf("stop versitygw: %v", err)
		}
	})
	return s
}

// NewS3 is StartS3 for a program, which has no testing.TB: the gateway
// keeps its data and log in dir, and the caller must Stop it. A missing
// versitygw binary is an error that says how to install it.
func NewS3(dir string, opts S3Options) (*S3, error) {
	bin, err := LookBinary("versitygw")
	if err != nil {
		return nil, fmt.Errorf("%w (install it with %s, or run scripts/setup.sh)", err, versitygwInstall)
	}
	s := &S3{
		Bucket:    "mysql-pitr-test",
		Region:    "us-east-1",
		AccessKey: "testbed-access",
		SecretKey: "testbed-secret-" + strconv.FormatInt(time.Now().UnixNano(), 36),
		DataDir:   filepath.Join(dir, "data"),
		bin:       bin,
		logPath:   filepath.Join(dir, "versitygw.log"),
		opts:      opts,
	}
	if err := os.MkdirAll(s.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("create versitygw data dir: %w", err)
	}
	// FreePort can race with another process taking the port before the
	// gateway binds it, so a gateway that dies at once gets a fresh port.
	for range 3 {
		var port int
		if port, err = FreePort(); err != nil {
			return nil, fmt.Errorf("versitygw port: %w", err)
		}
		s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		s.Endpoint = "http://" + s.addr
		if opts.CertFile != "" {
			s.Endpoint = "https://" + s.addr
		}
		if err = s.Start(); err == nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("start versitygw: %w", err)
	}
	if err := s.createBucket(); err != nil {
		s.Stop()
		return nil, fmt.Errorf("create bucket %s: %w", s.Bucket, err)
	}
	return s, nil
}

// Start (re)starts the gateway on the same address and data directory, and
// waits until it answers. It is a no-op when the gateway is running. Tests
// use Stop and Start to simulate a storage outage.
func (s *S3) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return nil
	}
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open versitygw log: %w", err)
	}
	defer logf.Close() // the child holds its own descriptor

	args := []string{"--port", s.addr, "--region", s.Region, "--quiet"}
	if s.opts.CertFile != "" {
		args = append(args, "--cert", s.opts.CertFile, "--key", s.opts.KeyFile)
	}
	cmd := exec.Command(s.bin, append(args, "posix", s.DataDir)...)
	// Credentials go through the environment so they never show in argv;
	// versitygw reads either name of each, the _ID ones first.
	cmd.Env = append(os.Environ(),
		"ROOT_ACCESS_KEY="+s.AccessKey, "ROOT_SECRET_KEY="+s.SecretKey,
		"ROOT_ACCESS_KEY_ID="+s.AccessKey, "ROOT_SECRET_ACCESS_KEY="+s.SecretKey)
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Pdeathsig: a test binary that dies without running its cleanups
	// must not leave gateways behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %s: %w", s.bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()

	if err := waitHTTP(s.Endpoint, done, s3StartTimeout); err != nil {
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("versitygw on %s: %w; log:\n%s", s.addr, err, s.logTail())
	}
	s.cmd, s.done = cmd, done
	return nil
}

// Stop stops the gateway, leaving its data in place for a later Start. It is
// a no-op when the gateway is not running.
func (s *S3) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return nil
	}
	cmd, done := s.cmd, s.done
	s.cmd, s.done = nil, nil
	_ = cmd.Process.Signal(syscall.SIGCONT) // a frozen gateway cannot stop
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return nil
	case <-time.After(5 * time.Second):
	}
	if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill versitygw: %w", err)
	}
	<-done
	return nil
}

// Another starts a second gateway serving the same data directory, bucket
// and credentials on another port: two paths to one store, as two nodes of
// a cluster have. It is stopped when the test ends.
func (s *S3) Another(tb testing.TB) *S3 {
	tb.Helper()
	o := &S3{Bucket: s.Bucket, Region: s.Region, AccessKey: s.AccessKey, SecretKey: s.SecretKey, DataDir: s.DataDir,
		bin: s.bin, logPath: filepath.Join(tb.TempDir(), "versitygw.log"), opts: s.opts}
	tb.Cleanup(func() {
		if err := o.Stop(); err != nil {
			tb.Errorf("stop versitygw: %v", err)
		}
	})
	var err error
	for range 3 {
		var port int
		if port, err = FreePort(); err != nil {
			tb.Fatalf("versitygw port: %v", err)
		}
		o.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		o.Endpoint = "http://" + o.addr
		if o.opts.CertFile != "" {
			o.Endpoint = "https://" + o.addr
		}
		if err = o.Start(); err == nil {
			return o
		}
	}
	tb.Fatalf("start a second versitygw: %v", err)
	return nil
}

// Freeze stops the gateway's process (SIGSTOP) without closing anything:
// requests through it hang, as across a network partition, until Thaw. A
// frozen gateway keeps the locks it holds on the data directory (versitygw
// serialises publishing objects with file locks), so the gateways Another
// started may hang with it: to cut one client off while others go on, put a
// Proxy on that client's path instead.
func (s *S3) Freeze() error { return s.signal(syscall.SIGSTOP) }

// Thaw lets a frozen gateway go on: requests that hung complete.
func (s *S3) Thaw() error { return s.signal(syscall.SIGCONT) }

func (s *S3) signal(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return errors.New("versitygw is not running")
	}
	return s.cmd.Process.Signal(sig)
}

// URL returns an s3:// URL for the bucket under prefix, with the endpoint,
// region and path-style parameters a client needs to reach this gateway.
// Credentials are not in it: use SetEnv.
func (s *S3) URL(prefix string) string {
	q := url.Values{}
	q.Set("endpoint", s.Endpoint)
	q.Set("region", s.Region)
	q.Set("path-style", "true")
	u := url.URL{Scheme: "s3", Host: s.Bucket, Path: "/" + prefix, RawQuery: q.Encode()}
	return u.String()
}

// ObjectPath returns the file in DataDir that holds key of Bucket.
func (s *S3) ObjectPath(key string) string {
	return filepath.Join(s.DataDir, s.Bucket, filepath.FromSlash(key))
}

// Env returns the environment variables through which the AWS SDK's default
// credential chain finds this gateway's credentials and region.
func (s *S3) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
		"AWS_REGION=" + s.Region,
	}
}

// SetEnv sets Env in the test's environment (restored when it ends) and
// hides the machine's own AWS configuration, so the SDK's default chain
// resolves to this gateway. Like t.Setenv, it cannot be used in parallel tests.
func (s *S3) SetEnv(tb testing.TB) {
	tb.Helper()
	for _, kv := range s.Env() {
		k, v, _ := strings.Cut(kv, "=")
		tb.Setenv(k, v)
	}
	none := filepath.Join(tb.TempDir(), "none")
	tb.Setenv("AWS_SESSION_TOKEN", "")
	tb.Setenv("AWS_PROFILE", "")
	tb.Setenv("AWS_CONFIG_FILE", none)
	tb.Setenv("AWS_SHARED_CREDENTIALS_FILE", none)
	tb.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

// createBucket creates s.Bucket through the S3 API, so the gateway records
// the bucket's owner and ACL as it would for any client.
func (s *S3) createBucket() error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := s3.New(s3.Options{
		Region:       s.Region,
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
		HTTPClient:   selfClient(20 * time.Second),
	})
	_, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(s.Bucket)})
	return err
}

// waitHTTP polls endpoint until it gives any HTTP answer (an unsigned request
// gets 403, which proves the gateway serves), the process exits or the time
// runs out.
func waitHTTP(endpoint string, exited <-chan struct{}, timeout time.Duration) error {
	client := selfClient(time.Second)
	deadline := time.Now().Add(timeout)
	for {
		resp, err := client.Get(endpoint + "/")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		select {
		case <-exited:
			return errors.New("exited before answering")
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer after %s: %w", timeout, err)
		}
	}
}

// selfClient is the HTTP client of the testbed's own requests to its
// gateway; it does not verify a TLS gateway's certificate, which is the
// code under test's job.
func selfClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
}

// logTail returns the end of the gateway's log, for error messages.
func (s *S3) logTail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(bytes.TrimSpace(b))
}
