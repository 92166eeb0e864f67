package binlog

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/mysqltls"
)

// TestReplicationConnectionTLS connects the replication client as the
// streamer does, with each TLS mode, to a server without TLS and to one with
// require_secure_transport=ON (where a connection that works is encrypted).
// The replication client has no plaintext fallback of its own: the modes
// that require TLS must fail on the plain server, preferred must go without
// TLS there and with TLS on the secure one (verified with a CA file).
func TestReplicationConnectionTLS(t *testing.T) {
	ca := testbed.NewCA(t, "test CA")
	wrongCA := testbed.NewCA(t, "another CA")
	cert, key := ca.ServerCert(t, "localhost", "127.0.0.1")
	plain := testbed.NewMariaDB(t, testbed.MariaDBOptions{})
	secure := testbed.NewMariaDB(t, testbed.MariaDBOptions{ServerID: 2,
		TLS: &testbed.ServerTLS{CAFile: ca.CertFile, CertFile: cert, KeyFile: key, RequireSecureTransport: true}})
	for _, db := range []*testbed.MariaDB{plain, secure} {
		db.Exec(t, "CREATE DATABASE app") // something in the binlog
	}

	for _, tt := range []struct {
		name      string
		db        *testbed.MariaDB
		s         mysqltls.Settings
		wantTLS   bool   // the replication client was given TLS
		wantError string // "" when it must stream
	}{
		{"plain server, verify-full", plain, mysqltls.Settings{Mode: mysqltls.VerifyFull, CAFile: ca.CertFile}, true, "does not support TLS"},
		{"plain server, skip-verify", plain, mysqltls.Settings{Mode: mysqltls.SkipVerify}, true, "does not support TLS"},
		{"plain server, preferred goes without", plain, mysqltls.Settings{Mode: mysqltls.Preferred, CAFile: ca.CertFile}, false, ""},
		{"plain server, off", plain, mysqltls.Settings{Mode: mysqltls.Off}, false, ""},
		{"secure server, verify-full", secure, mysqltls.Settings{Mode: mysqltls.VerifyFull, CAFile: ca.CertFile}, true, ""},
		{"secure server, verify-ca", secure, mysqltls.Settings{Mode: mysqltls.VerifyCA, CAFile: ca.CertFile}, true, ""},
		{"secure server, skip-verify", secure, mysqltls.Settings{Mode: mysqltls.SkipVerify}, true, ""},
		{"secure server, preferred verifies", secure, mysqltls.Settings{Mode: mysqltls.Preferred, CAFile: ca.CertFile}, true, ""},
		{"secure server, preferred without CA encrypts", secure, mysqltls.Settings{}, true, ""},
		{"plain server, preferred without CA goes without", plain, mysqltls.Settings{}, false, ""},
		{"secure server, verify-full wrong CA", secure, mysqltls.Settings{Mode: mysqltls.VerifyFull, CAFile: wrongCA.CertFile}, true, "not signed by the CA in"},
		{"secure server, off", secure, mysqltls.Settings{Mode: mysqltls.Off}, false, "Access denied"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			cfg, err := mysql.ParseDSN(tt.db.PitrDSN())
			if err != nil {
				t.Fatal(err)
			}
			if err := tt.s.Apply(cfg); err != nil {
				t.Fatal(err)
			}
			src, err := NewSource(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			first := filepath.Base(tt.db.BinlogFiles(t)[0])
			err = streamFirstEvent(ctx, t, src, first, tt.wantTLS)
			if tt.wantError == "" && err != nil {
				t.Fatalf("replication: %v; want it to stream", err)
			}
			if tt.wantError != "" && (err == nil || !strings.Contains(err.Error(), tt.wantError)) {
				t.Fatalf("replication: %v; want an error mentioning %q", err, tt.wantError)
			}
		})
	}

	// Preferred never takes a certificate that fails verification as a
	// reason to go without TLS: the streamer's decision fails instead.
	t.Run("secure server, preferred wrong CA", func(t *testing.T) {
		cfg, _ := mysql.ParseDSN(secure.PitrDSN())
		if err := (mysqltls.Settings{Mode: mysqltls.Preferred, CAFile: wrongCA.CertFile}).Apply(cfg); err != nil {
			t.Fatal(err)
		}
		src, err := NewSource(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		_, err = src.replicationTLS(t.Context())
		var ve *mysqltls.VerifyError
		if !errors.As(err, &ve) {
			t.Fatalf("replicationTLS: %v; want a certificate verification error", err)
		}
	})
}

// streamFirstEvent connects for replication as Streamer.session does and
// reads one event.
func streamFirstEvent(ctx context.Context, t *testing.T, src *Source, file string, wantTLS bool) error {
	t.Helper()
	tlsCfg, err := src.replicationTLS(ctx)
	if err != nil {
		return err
	}
	if (tlsCfg != nil) != wantTLS {
		t.Fatalf("replication TLS config set: %v, want %v", tlsCfg != nil, wantTLS)
	}
	d, err := src.dialDump(ctx, dumpOptions{flavor: MariaDB, serverID: 4242, heartbeat: time.Second, tls: tlsCfg,
		dial: (&net.Dialer{Timeout: 10 * time.Second}).DialContext}, catalog.Position{File: file, Pos: 4})
	if err != nil {
		return src.classifyStream(err)
	}
	defer d.close()
	_, _, err = d.next()
	return err
}
