package s3

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/storage"
)

// TestPrivateCAEndpoint runs against versitygw serving HTTPS with a
// certificate from a private CA: the store works with that CA's bundle and
// refuses the endpoint without it or with another CA's.
func TestPrivateCAEndpoint(t *testing.T) {
	ca := testbed.NewCA(t, "storage CA")
	other := testbed.NewCA(t, "another CA")
	cert, key := ca.ServerCert(t, "127.0.0.1", "localhost")
	gw := testbed.StartS3With(t, testbed.S3Options{CertFile: cert, KeyFile: key})
	gw.SetEnv(t)
	if !strings.HasPrefix(gw.Endpoint, "https://") {
		t.Fatalf("gateway endpoint %s, want https", gw.Endpoint)
	}
	config := func(caFile string) Config {
		cfg, err := ParseURL(gw.URL("tls"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.CAFile = caFile
		cfg.MaxAttempts = 2
		cfg.MaxBackoff = 100 * time.Millisecond
		return cfg
	}

	t.Run("with the CA bundle", func(t *testing.T) {
		s, err := New(t.Context(), config(ca.CertFile))
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		want := bytes.Repeat([]byte("encrypted in transit "), 1000)
		if _, err := s.Put(t.Context(), "a/object", bytes.NewReader(want), storage.PutOptions{}); err != nil {
			t.Fatalf("Put: %v", err)
		}
		r, err := s.Open(t.Context(), "a/object")
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("read back %d bytes, err %v; want the %d bytes written", len(got), err, len(want))
		}
	})
	for _, tt := range []struct{ name, caFile, want string }{
		{"without the CA bundle", "", "not trusted by the system's roots"},
		{"with another CA's bundle", other.CertFile, "not trusted by the CA file " + other.CertFile},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(t.Context(), config(tt.caFile))
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "--s3-ca-file") {
				t.Fatalf("New = %v; want a refusal saying the certificate is %s", err, tt.want)
			}
		})
	}
}

func TestCAFileConfig(t *testing.T) {
	for _, tt := range []struct {
		name, endpoint, caFile, want string
	}{
		{"https endpoint", "https://minio.internal:9000", "/etc/ca.pem", ""},
		{"AWS", "", "/etc/ca.pem", ""},
		{"plain http endpoint", "http://minio.internal:9000", "/etc/ca.pem", "plain http"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := Config{Bucket: "backups", Endpoint: tt.endpoint, CAFile: tt.caFile}.Validate()
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("Validate = %v; want %q", err, tt.want)
			}
		})
	}
	_, err := New(t.Context(), Config{Bucket: "backups", Endpoint: "https://127.0.0.1:1", CAFile: "/nonexistent/ca.pem"})
	if err == nil || !strings.Contains(err.Error(), "s3 CA file") {
		t.Fatalf("New with a missing CA file = %v; want an error naming it", err)
	}
}

func TestPlaintextEndpoint(t *testing.T) {
	for endpoint, want := range map[string]bool{
		"":                           false,
		"https://minio.internal":     false,
		"http://minio.internal:9000": true,
		"http://10.0.0.7:9000":       true,
		"HTTP://minio.internal":      true,
		"http://127.0.0.1:9000":      false,
		"http://localhost:9000":      false,
		"http://[::1]:9000":          false,
	} {
		if got := (Config{Endpoint: endpoint}).PlaintextEndpoint(); got != want {
			t.Errorf("PlaintextEndpoint(%q) = %v, want %v", endpoint, got, want)
		}
	}
}
