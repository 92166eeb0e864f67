package s3

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// TestOpenTimeout checks that RequestTimeout bounds the wait for a response
// but not the reading of its body: a hung server fails Open, a slow but
// live download of a large object is not cut off.
func TestOpenTimeout(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/hang"):
			<-r.Context().Done()
		case strings.HasSuffix(r.URL.Path, "/slow"):
			w.Header().Set("Content-Length", "10")
			w.WriteHeader(http.StatusOK)
			w.Write([]byte("01234"))
			w.(http.Flusher).Flush()
			// The scenario itself, not a wait for an event: the body takes
			// longer than RequestTimeout, which the store measures on the
			// wall clock.
			time.Sleep(300 * time.Millisecond)
			w.Write([]byte("56789"))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	cfg := Config{Bucket: "bucket", PathStyle: true, RequestTimeout: 100 * time.Millisecond}.withDefaults()
	s := &Store{cfg: cfg, client: s3.New(s3.Options{
		Region:           "us-east-1",
		BaseEndpoint:     aws.String(srv.URL),
		UsePathStyle:     true,
		Credentials:      credentials.NewStaticCredentialsProvider("ak", "sk", ""),
		RetryMaxAttempts: 1,
	})}

	start := time.Now()
	_, err := s.Open(t.Context(), "hang")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Open of a hung server: error = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Open of a hung server took %v", d)
	}

	rc, err := s.Open(t.Context(), "slow")
	if err != nil {
		t.Fatalf("Open of a slow body: %v", err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil || string(got) != "0123456789" {
		t.Errorf("read of a body slower than RequestTimeout = %q, %v; want all of it", got, err)
	}
}
