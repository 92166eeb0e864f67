package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/storage"
	"github.com/mysql-pitr/mysql-pitr/storage/storagetest"
)

// testPartSize is the smallest part S3 allows, so that multipart uploads
// stay cheap to test.
const testPartSize = MinPartSize

// gateway starts versitygw and points the SDK's default chain at it.
func gateway(t *testing.T) *testbed.S3 {
	t.Helper()
	gw := testbed.StartS3(t)
	gw.SetEnv(t)
	return gw
}

// newStore returns a Store on gw under prefix, with retries shortened so
// that failing tests fail fast.
func newStore(t *testing.T, gw *testbed.S3, prefix string) *Store {
	t.Helper()
	cfg, err := ParseURL(gw.URL(prefix) + "&part-size=" + fmt.Sprint(testPartSize))
	if err != nil {
		t.Fatalf("ParseURL: %v", err)
	}
	cfg.MaxAttempts = 3
	cfg.MaxBackoff = 200 * time.Millisecond
	s, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	gw := gateway(t)
	var n atomic.Int64
	storagetest.Run(t, func(t *testing.T) storage.Storage {
		// Stores share the bucket; a prefix each keeps them empty.
		return newStore(t, gw, fmt.Sprintf("conformance/%03d", n.Add(1)))
	}, storagetest.Options{
		LargeSize: 3*testPartSize + 1,
		Corrupt: func(t *testing.T, s storage.Storage, key string) {
			flipByte(t, gw.ObjectPath(s.(*Store).Config().Prefix+key))
		},
	})
}

// flipByte damages the gateway's file in place, leaving the checksums
// versitygw keeps in its extended attributes alone.
func flipByte(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("corrupt: %v", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		t.Fatalf("corrupt %s: size %d, %v", path, fi.Size(), err)
	}
	b := make([]byte, 1)
	off := fi.Size() / 2
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatalf("corrupt: %v", err)
	}
	b[0] ^= 0x80
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatalf("corrupt: %v", err)
	}
}

func TestParseURL(t *testing.T) {
	tests := []struct {
		raw     string
		want    Config
		wantErr string // substring of the error; "" means success
	}{
		{raw: "s3://bucket", want: Config{Bucket: "bucket"}},
		{raw: "s3://bucket/", want: Config{Bucket: "bucket"}},
		{raw: "s3://my.bucket-1/backups/db1", want: Config{Bucket: "my.bucket-1", Prefix: "backups/db1/"}},
		{raw: "s3://bucket/backups/db1/", want: Config{Bucket: "bucket", Prefix: "backups/db1/"}},
		{
			raw: "s3://bucket/p?region=eu-west-1&endpoint=https://minio.local:9000&path-style=true&sse=aws:kms&sse-kms-key-id=key-1&part-size=16MiB",
			want: Config{
				Bucket: "bucket", Prefix: "p/", Region: "eu-west-1", Endpoint: "https://minio.local:9000",
				PathStyle: true, SSE: SSEKMS, SSEKMSKeyID: "key-1", PartSize: 16 << 20,
			},
		},
		{raw: "s3://bucket?sse=AES256&part-size=5242880", want: Config{Bucket: "bucket", SSE: SSES3, PartSize: 5 << 20}},
		{raw: "s3://bucket?part-size=1GiB&path-style=false", want: Config{Bucket: "bucket", PartSize: 1 << 30}},
		// The units the flags take (--max-segment 1G) work here too.
		{raw: "s3://bucket?part-size=1G", want: Config{Bucket: "bucket", PartSize: 1 << 30}},
		{raw: "s3://bucket?part-size=64MB", want: Config{Bucket: "bucket", PartSize: 64e6}},

		{raw: "s3://", wantErr: "missing bucket"},
		{raw: "s3:///prefix", wantErr: "missing bucket"},
		{raw: "s3:bucket/prefix", wantErr: "want s3://BUCKET/PREFIX"},
		{raw: "https://bucket/prefix", wantErr: `scheme "https"`},
		{raw: "bucket/prefix", wantErr: `scheme ""`},
		{raw: "s3://Bucket_Upper/x", wantErr: "bucket"},
		{raw: "s3://ab", wantErr: "bucket"},
		{raw: "s3://bucket:9000/x", wantErr: "endpoint="},
		{raw: "s3://bucket/a/../b", wantErr: "prefix"},
		{raw: "s3://bucket/a//b", wantErr: "prefix"},
		{raw: "s3://bucket/x#frag", wantErr: "fragment"},
		{raw: "s3://bucket?regoin=x", wantErr: `unknown parameter "regoin"`},
		{raw: "s3://bucket?region=a&region=b", wantErr: "given 2 times"},
		{raw: "s3://bucket?path-style=yes", wantErr: "path-style"},
		{raw: "s3://bucket?region=eu%20west", wantErr: "region"},
		{raw: "s3://bucket?sse=DES", wantErr: `sse "DES"`},
		{raw: "s3://bucket?sse-kms-key-id=k", wantErr: "needs sse=aws:kms"},
		{raw: "s3://bucket?part-size=1MiB", wantErr: "part-size"},
		{raw: "s3://bucket?part-size=6GiB", wantErr: "part-size"},
		{raw: "s3://bucket?part-size=big", wantErr: "part-size"},
		{raw: "s3://bucket?part-size=-5MiB", wantErr: "part-size"},
		{raw: "s3://bucket?part-size=0", wantErr: "part-size"},
		{raw: "s3://bucket?part-size=99999999999999999999", wantErr: "part-size"},
		{raw: "s3://bucket?endpoint=ftp://host", wantErr: "http:// or https://"},
		{raw: "s3://bucket?endpoint=https://", wantErr: "no host"},
		{raw: "s3://bucket?endpoint=https://user:hunter2@host", wantErr: "without credentials"},
		{raw: "s3://AKIAEXAMPLE:hunter2@bucket/prefix", wantErr: "credentials are not accepted"},
		{raw: "s3://AKIAEXAMPLE@bucket/prefix", wantErr: "credentials are not accepted"},
		{raw: "s3://AKIAEXAMPLE:hun ter2@bucket/prefix", wantErr: "not shown"},
		{raw: "s3://AKIAEXAMPLE:hunter2/x@bucket/prefix", wantErr: "not shown"},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			got, err := ParseURL(tt.raw)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ParseURL: %v", err)
				}
				if got != tt.want {
					t.Errorf("ParseURL =\n%+v, want\n%+v", got, tt.want)
				}
				// String gives back a URL that parses to the same Config.
				again, err := ParseURL(got.String())
				if err != nil || again != got {
					t.Errorf("ParseURL(%q) = %+v, %v; want %+v", got.String(), again, err, got)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseURL = %+v, want an error containing %q", got, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseURL error = %q, want it to contain %q", err, tt.wantErr)
			}
			for _, secret := range []string{"hunter2", "hun ter2", "AKIAEXAMPLE"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("ParseURL error %q repeats the secret %q", err, secret)
				}
			}
		})
	}
}

func FuzzParseURL(f *testing.F) {
	f.Add("s3://bucket/prefix?region=r&endpoint=http://h:1&path-style=true&part-size=8MiB")
	f.Add("s3://user:pass@bucket/x")
	f.Add("s3://bucket?sse=aws:kms&sse-kms-key-id=k")
	f.Fuzz(func(t *testing.T, raw string) {
		c, err := ParseURL(raw)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("ParseURL(%q) accepted an invalid Config: %v", raw, err)
		}
		if again, err := ParseURL(c.String()); err != nil || again != c {
			t.Fatalf("round trip of %q: %+v, %v; want %+v", raw, again, err, c)
		}
	})
}

func TestNewChecksBucket(t *testing.T) {
	gw := gateway(t)
	base, err := ParseURL(gw.URL(""))
	if err != nil {
		t.Fatal(err)
	}
	base.MaxAttempts = 2

	t.Run("missing", func(t *testing.T) {
		cfg := base
		cfg.Bucket = "no-such-bucket"
		_, err := New(t.Context(), cfg)
		if err == nil || !strings.Contains(err.Error(), "bucket no-such-bucket does not exist") {
			t.Fatalf("New = %v, want bucket does not exist", err)
		}
	})
	t.Run("wrong-secret", func(t *testing.T) {
		const bad = "wrong-secret-value"
		t.Setenv("AWS_SECRET_ACCESS_KEY", bad)
		_, err := New(t.Context(), base)
		if err == nil || !strings.Contains(err.Error(), "access denied to bucket "+gw.Bucket) {
			t.Fatalf("New = %v, want access denied", err)
		}
		for _, secret := range []string{bad, gw.SecretKey} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q contains a secret", err)
			}
		}
	})
}

func TestMultipartAbortedOnFailure(t *testing.T) {
	gw := gateway(t)
	s := newStore(t, gw, "abort")
	data := bytes.Repeat([]byte("x"), 2*testPartSize+10)
	src := io.MultiReader(bytes.NewReader(data), errReader{})
	if _, err := s.Put(t.Context(), "big", src, storage.PutOptions{}); err == nil {
		t.Fatal("Put from a failing reader succeeded")
	}
	out, err := s.client.ListMultipartUploads(t.Context(), &s3.ListMultipartUploadsInput{Bucket: aws.String(gw.Bucket)})
	if err != nil {
		t.Fatalf("ListMultipartUploads: %v", err)
	}
	if len(out.Uploads) != 0 {
		t.Errorf("%d multipart uploads left behind, want 0", len(out.Uploads))
	}
}

func TestListPages(t *testing.T) {
	gw := gateway(t)
	s := newStore(t, gw, "pages")
	s.listPageSize = 2
	var want []string
	for i := range 7 {
		key := fmt.Sprintf("k/%d", i)
		want = append(want, key)
		if _, err := s.Put(t.Context(), key, strings.NewReader(key), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	list, err := s.List(t.Context(), "k/")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range list {
		got = append(got, o.Key)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("List over pages of 2 = %q, want %q", got, want)
	}
	// The server does page, so the loop above was exercised.
	page, err := s.client.ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{
		Bucket: aws.String(gw.Bucket), Prefix: aws.String("pages/k/"), MaxKeys: aws.Int32(2),
	})
	if err != nil || !aws.ToBool(page.IsTruncated) || len(page.Contents) != 2 {
		t.Errorf("first page of 2: %d keys, truncated %v, %v", len(page.Contents), aws.ToBool(page.IsTruncated), err)
	}
}

// TestMultipartIfNotExistsAtComplete covers the race that Put's early
// HeadObject cannot see: the key appears while the parts upload, and the
// conditional CompleteMultipartUpload must refuse.
func TestMultipartIfNotExistsAtComplete(t *testing.T) {
	gw := gateway(t)
	s := newStore(t, gw, "cond")
	ctx := t.Context()
	if _, err := s.Put(ctx, "k", strings.NewReader("first"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	first, second := s.getBuf(), s.getBuf()
	parts := []part{{buf: first, n: testPartSize}, {buf: second, n: 10}}
	_, err := s.putMultipart(ctx, aws.String("cond/k"), strings.NewReader(""), storage.PutOptions{IfNotExists: true}, parts, true)
	if !errors.Is(err, storage.ErrExist) {
		t.Fatalf("conditional complete onto an existing key: error = %v, want ErrExist", err)
	}
	rc, err := s.Open(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if got, err := io.ReadAll(rc); err != nil || string(got) != "first" {
		t.Errorf("content = %q, %v; want the first object", got, err)
	}
	out, err := s.client.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(gw.Bucket)})
	if err != nil || len(out.Uploads) != 0 {
		t.Errorf("multipart uploads left behind: %v, %v", out, err)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("source broke") }

func TestMultipartChecksumIsFullObject(t *testing.T) {
	gw := gateway(t)
	s := newStore(t, gw, "full")
	data := bytes.Repeat([]byte("0123456789abcdef"), (testPartSize+100)/16)
	info, err := s.Put(t.Context(), "obj", bytes.NewReader(data), storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	head, err := s.client.HeadObject(t.Context(), &s3.HeadObjectInput{
		Bucket: aws.String(gw.Bucket), Key: aws.String("full/obj"), ChecksumMode: "ENABLED",
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := aws.ToString(head.ChecksumCRC32C), aws.ToString(crcBase64(storage.CRC32C(data))); got != want {
		t.Errorf("server's CRC32C = %q, want the full object's %q", got, want)
	}
	if head.ChecksumType != "FULL_OBJECT" {
		t.Errorf("checksum type = %q, want FULL_OBJECT", head.ChecksumType)
	}
	if info.CRC32C != storage.CRC32C(data) {
		t.Errorf("Put CRC32C = %08x, want %08x", info.CRC32C, storage.CRC32C(data))
	}
}

func TestSSE(t *testing.T) {
	gw := gateway(t)
	cfg, err := ParseURL(gw.URL("sse") + "&sse=AES256")
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(t.Context(), "obj", strings.NewReader("secret data"), storage.PutOptions{}); err != nil {
		t.Fatalf("Put with sse=AES256: %v", err)
	}
}

func TestOutage(t *testing.T) {
	gw := gateway(t)
	s := newStore(t, gw, "outage")
	ctx := t.Context()
	if _, err := s.Put(ctx, "before", strings.NewReader("1"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := gw.Stop(); err != nil {
		t.Fatal(err)
	}
	dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, err := s.Put(dctx, "during", strings.NewReader("2"), storage.PutOptions{}); err == nil {
		t.Fatal("Put while the server is down succeeded")
	}
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	// The same Store recovers: dead pooled connections are retried.
	if _, err := s.Put(ctx, "after", strings.NewReader("3"), storage.PutOptions{}); err != nil {
		t.Fatalf("Put after the server came back: %v", err)
	}
	list, err := s.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range list {
		keys = append(keys, o.Key)
	}
	if got, want := strings.Join(keys, ","), "after,before"; got != want {
		t.Errorf("keys after the outage = %s, want %s", got, want)
	}
}

// TestPutMemoryBounded checks that a Put holds at most three parts however
// large the object: everything it allocates, part buffers and the SDK's
// overhead together, stays under three and a half parts.
func TestPutMemoryBounded(t *testing.T) {
	gw := gateway(t)
	s := newStore(t, gw, "memory")
	const parts = 8
	data := bytes.Repeat([]byte("m"), parts*testPartSize+1)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	info, err := s.Put(t.Context(), "big", bytes.NewReader(data), storage.PutOptions{})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != int64(len(data)) {
		t.Errorf("size = %d, want %d", info.Size, len(data))
	}
	got := float64(after.TotalAlloc-before.TotalAlloc) / testPartSize
	t.Logf("Put of %d parts allocated %.2f parts' worth", parts+1, got)
	if limit := partsInFlight + 1.5; got > limit {
		t.Errorf("Put of %d parts allocated %.2f parts' worth of memory, want at most %.1f", parts+1, got, limit)
	}
	if kept := len(s.free); kept > partsInFlight+1 {
		t.Errorf("%d buffers kept after the Put, want at most %d", kept, partsInFlight+1)
	}
}
