package testbed

import (
	"bytes"
	"context"
	"io"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// s3Client builds a client the way production code does: credentials and
// region from the SDK's default chain, which SetEnv points at gw.
func s3Client(t *testing.T, gw *S3) *s3.Client {
	t.Helper()
	cfg, err := config.LoadDefaultConfig(t.Context())
	if err != nil {
		t.Fatalf("load AWS config: %v", err)
	}
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(gw.Endpoint)
		o.UsePathStyle = true
		o.RetryMaxAttempts = 1
	})
}

func TestS3StartStop(t *testing.T) {
	gw := StartS3(t)
	gw.SetEnv(t)
	client := s3Client(t, gw)
	ctx := t.Context()

	u, err := url.Parse(gw.URL("backups/db1"))
	if err != nil {
		t.Fatalf("URL: %v", err)
	}
	if u.Scheme != "s3" || u.Host != gw.Bucket || u.Path != "/backups/db1" ||
		u.Query().Get("endpoint") != gw.Endpoint || u.Query().Get("path-style") != "true" {
		t.Errorf("URL = %s", u)
	}
	if u.User != nil || bytes.Contains([]byte(u.String()), []byte(gw.SecretKey)) {
		t.Errorf("URL %s carries credentials", u)
	}

	put := func(ctx context.Context, key, body string) error {
		_, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(gw.Bucket), Key: aws.String(key), Body: bytes.NewReader([]byte(body))})
		return err
	}
	if err := put(ctx, "a/b", "hello"); err != nil {
		t.Fatalf("PutObject: %v", err)
	}
	// The object is a plain file in DataDir, for tests to damage.
	if got, err := os.ReadFile(gw.ObjectPath("a/b")); err != nil || string(got) != "hello" {
		t.Errorf("object file = %q, %v; want %q", got, err, "hello")
	}

	if err := gw.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := put(sctx, "a/c", "down"); err == nil {
		t.Fatal("PutObject succeeded while the gateway was stopped")
	}
	if err := gw.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	// Same port, same data.
	out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(gw.Bucket), Key: aws.String("a/b")})
	if err != nil {
		t.Fatalf("GetObject after restart: %v", err)
	}
	defer out.Body.Close()
	if got, err := io.ReadAll(out.Body); err != nil || string(got) != "hello" {
		t.Errorf("after restart read %q, %v; want %q", got, err, "hello")
	}
	if err := gw.Start(); err != nil {
		t.Errorf("Start of a running gateway: %v", err)
	}
}

func TestS3Env(t *testing.T) {
	gw := &S3{AccessKey: "ak", SecretKey: "sk", Region: "r1"}
	want := []string{"AWS_ACCESS_KEY_ID=ak", "AWS_SECRET_ACCESS_KEY=sk", "AWS_REGION=r1"}
	got := gw.Env()
	if len(got) != len(want) {
		t.Fatalf("Env = %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Env[%d] = %q, want %q", i, got[i], want[i])
		}
	}
}
