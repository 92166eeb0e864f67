package restore

import (
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
	"github.com/mysql-pitr/mysql-pitr/mysqld"
	"github.com/mysql-pitr/mysql-pitr/mysqltls"
)

// TestMysqlbinlogReplayTLS replays a binlog through the mariadb client with
// each TLS mode into a server with require_secure_transport=ON and into one
// without TLS. MariaDB's client, told to use TLS without checking the host
// name, connects in plaintext to a server without TLS; the replay must
// refuse that before a single event is applied.
func TestMysqlbinlogReplayTLS(t *testing.T) {
	ca := testbed.NewCA(t, "test CA")
	cert, key := ca.ServerCert(t, "localhost", "127.0.0.1")
	// Separate GTID domains: each server's binlog replays into the other.
	secure := testbed.NewMariaDB(t, testbed.MariaDBOptions{ServerID: 11, ExtraArgs: []string{"--gtid-domain-id=11"},
		TLS: &testbed.ServerTLS{CAFile: ca.CertFile, CertFile: cert, KeyFile: key, RequireSecureTransport: true}})
	plain := testbed.NewMariaDB(t, testbed.MariaDBOptions{ServerID: 12, ExtraArgs: []string{"--gtid-domain-id=12"}})
	other := testbed.NewMariaDB(t, testbed.MariaDBOptions{ServerID: 13, ExtraArgs: []string{"--gtid-domain-id=13"}})
	secure.Exec(t, "CREATE DATABASE from_secure")
	plain.Exec(t, "CREATE DATABASE from_plain")
	other.Exec(t, "CREATE DATABASE from_other")

	// stopOf replays all of db's current binlog file.
	stopOf := func(db *testbed.MariaDB) *Stop {
		files := db.BinlogFiles(t)
		path := files[len(files)-1]
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return &Stop{Transactions: 1, Files: []ReplayFile{{Name: "binlog", Path: path, From: 4, To: uint64(fi.Size())}}}
	}
	target := func(db *testbed.MariaDB) *mysql.Config {
		cfg, err := mysql.ParseDSN(db.DSN())
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	hasDB := func(db *testbed.MariaDB, name string) bool {
		var n int
		if err := db.DB(t).QueryRow("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = ?", name).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	}

	for _, tt := range []struct {
		name string
		s    mysqltls.Settings
		into *testbed.MariaDB
		from *testbed.MariaDB
		want string // "" for a replay that applies
	}{
		// Before anything is applied to the TLS server.
		{"off into the TLS server", mysqltls.Settings{Mode: mysqltls.Off}, secure, plain, "Access denied"},
		{"verify-ca into the TLS server", mysqltls.Settings{Mode: mysqltls.VerifyCA, CAFile: ca.CertFile}, secure, plain, ""},
		{"verify-ca into a server without TLS", mysqltls.Settings{Mode: mysqltls.VerifyCA, CAFile: ca.CertFile}, plain, secure, "is not encrypted"},
		{"skip-verify into a server without TLS", mysqltls.Settings{Mode: mysqltls.SkipVerify}, plain, secure, "is not encrypted"},
		{"verify-full into a server without TLS", mysqltls.Settings{Mode: mysqltls.VerifyFull, CAFile: ca.CertFile}, plain, secure, "does not support it"},
		// The default mode, settled by the restore's own connection: TLS
		// without verification where that connection was encrypted
		// without a CA file, plaintext where the server offers no TLS.
		{"preferred into the TLS server", mysqltls.Settings{}.Effective(true), secure, other, ""},
		{"preferred into a server without TLS", mysqltls.Settings{}.Effective(false), plain, other, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rep := &mysqlbinlogReplay{target: target(tt.into), tls: clientTLS{tt.s, mysqld.MariaDB}, tools: binlogTools{flavor: mysqld.MariaDB},
				work: t.TempDir(), log: slog.New(slog.DiscardHandler)}
			err := rep.replay(t.Context(), stopOf(tt.from))
			applied := hasDB(tt.into, map[*testbed.MariaDB]string{secure: "from_secure", plain: "from_plain", other: "from_other"}[tt.from])
			if tt.want == "" {
				if err != nil || !applied {
					t.Fatalf("replay: %v, applied %v; want it applied", err, applied)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("replay: %v; want an error mentioning %q", err, tt.want)
			}
			if applied {
				t.Fatal("the binlog was applied over a connection that was refused")
			}
		})
	}
}
