package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/mysql-pitr/mysql-pitr/bench/internal/benchkit"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// s3Gateway is a versitygw posix gateway on loopback with one bucket, for
// the optional S3 capture runs. testbed.StartS3 does the same for tests but
// needs a testing.TB, which a program does not have.
type s3Gateway struct {
	endpoint  string
	bucket    string
	region    string
	accessKey string
	secretKey string
	proc      *benchkit.Child
}

func startS3(dir string) (*s3Gateway, error) {
	bin, err := testbed.LookBinary("versitygw")
	if err != nil {
		return nil, fmt.Errorf("versitygw (run scripts/setup.sh): %w", err)
	}
	secret := make([]byte, 16)
	rand.Read(secret)
	g := &s3Gateway{bucket: "mysql-pitr-bench", region: "us-east-1",
		accessKey: "bench-access", secretKey: hex.EncodeToString(secret)}
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, err
	}
	port, err := testbed.FreePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	g.endpoint = "http://" + addr
	g.proc, err = benchkit.StartChild("versitygw", []string{bin, "--port", addr, "--region", g.region, "--quiet", "posix", data},
		[]string{"ROOT_ACCESS_KEY=" + g.accessKey, "ROOT_SECRET_KEY=" + g.secretKey}, filepath.Join(dir, "versitygw.log"))
	if err != nil {
		return nil, err
	}
	if err := g.waitReady(20 * time.Second); err != nil {
		g.close()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := s3.New(s3.Options{
		Region:       g.region,
		BaseEndpoint: aws.String(g.endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(g.accessKey, g.secretKey, ""),
	})
	if _, err := client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(g.bucket)}); err != nil {
		g.close()
		return nil, fmt.Errorf("create bucket: %w", err)
	}
	return g, nil
}

// waitReady polls until the gateway answers any HTTP request.
func (g *s3Gateway) waitReady(timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for {
		resp, err := client.Get(g.endpoint + "/")
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if done, _ := g.proc.Exited(); done {
			return fmt.Errorf("versitygw exited:\n%s", g.proc.LogTail(10))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("versitygw not answering after %s: %w", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// url is the --storage URL of an archive under prefix in the bucket.
func (g *s3Gateway) url(prefix string) string {
	q := url.Values{}
	q.Set("endpoint", g.endpoint)
	q.Set("region", g.region)
	q.Set("path-style", "true")
	u := url.URL{Scheme: "s3", Host: g.bucket, Path: "/" + prefix, RawQuery: q.Encode()}
	return u.String()
}

// env holds the credentials for the agent's AWS SDK, and keeps the
// machine's own AWS configuration out of the way.
func (g *s3Gateway) env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + g.accessKey,
		"AWS_SECRET_ACCESS_KEY=" + g.secretKey,
		"AWS_REGION=" + g.region,
		"AWS_SESSION_TOKEN=", "AWS_PROFILE=",
		"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

func (g *s3Gateway) close() {
	if g != nil && g.proc != nil {
		g.proc.Stop(5 * time.Second)
	}
}
