package binlog

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/replication"
	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/mysqltls"
)

// Flavor is the server family. Every difference between MySQL and MariaDB
// that this package depends on is decided by a Flavor method in this file.
type Flavor string

// Flavors.
const (
	MySQL   Flavor = "mysql"
	MariaDB Flavor = "mariadb"
)

// FlavorOf tells the flavor from a version string such as "10.11.6-MariaDB-0+deb12u1".
func FlavorOf(version string) Flavor {
	if strings.Contains(strings.ToLower(version), "mariadb") {
		return MariaDB
	}
	return MySQL
}

// gtidStateQuery returns the query for the server's GTID state: what its
// binlog holds (MariaDB gtid_binlog_pos, MySQL gtid_executed).
func (f Flavor) gtidStateQuery() string {
	if f == MariaDB {
		return "SELECT @@global.gtid_binlog_pos"
	}
	return "SELECT @@global.gtid_executed"
}

// uuidQuery returns the query for the server's UUID; MariaDB has none.
func (f Flavor) uuidQuery() string {
	if f == MariaDB {
		return ""
	}
	return "SELECT @@server_uuid"
}

// dumpFlags are the COM_BINLOG_DUMP flags: MariaDB leaves Annotate_rows
// events out of the stream unless asked, and they are part of the file.
func (f Flavor) dumpFlags() uint16 {
	if f == MariaDB {
		return replication.BINLOG_SEND_ANNOTATE_ROWS_EVENT
	}
	return 0
}

// Source is the MySQL or MariaDB server whose binlog is archived.
type Source struct {
	// Config is the connection configuration, password included. Its TLS
	// (see mysqltls.Settings.Apply) applies to the replication connection
	// too.
	Config *mysql.Config

	db *sql.DB
}

// NewSource opens (lazily) a connection pool to the server.
func NewSource(cfg *mysql.Config) (*Source, error) {
	c := cfg.Clone()
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = 60 * time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 60 * time.Second
	}
	conn, err := mysql.NewConnector(c)
	if err != nil {
		return nil, fmt.Errorf("mysql connection settings: %w", err)
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(4)
	db.SetConnMaxIdleTime(time.Minute)
	return &Source{Config: c, db: db}, nil
}

// DB returns the connection pool.
func (s *Source) DB() *sql.DB { return s.db }

// Close closes the pool.
func (s *Source) Close() error { return s.db.Close() }

// Address describes the server for messages, without credentials.
func (s *Source) Address() string {
	return s.Config.Net + "(" + s.Config.Addr + ")"
}

// ServerInfo is what the archive needs to know about the server.
type ServerInfo struct {
	Flavor         Flavor
	Version        string
	ServerID       uint32
	UUID           string
	LogBin         bool
	BinlogFormat   string
	BinlogChecksum string
	GTIDState      string
}

// Sentinel errors about the server's configuration.
var (
	ErrBinlogDisabled = errors.New("binary logging is disabled on the server")
	ErrUnreachable    = errors.New("server is unreachable")
	ErrAccessDenied   = errors.New("access denied by the server")
)

// Info queries the server's identity and binlog settings.
func (s *Source) Info(ctx context.Context) (ServerInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var si ServerInfo
	var logBin int
	err := s.db.QueryRowContext(ctx, "SELECT @@version, @@server_id, @@log_bin, @@binlog_format, @@binlog_checksum").
		Scan(&si.Version, &si.ServerID, &logBin, &si.BinlogFormat, &si.BinlogChecksum)
	if err != nil {
		return si, s.classify(err)
	}
	si.LogBin = logBin == 1
	si.Flavor = FlavorOf(si.Version)
	if q := si.Flavor.uuidQuery(); q != "" {
		if err := s.db.QueryRowContext(ctx, q).Scan(&si.UUID); err != nil {
			return si, s.classify(err)
		}
	}
	if err := s.db.QueryRowContext(ctx, si.Flavor.gtidStateQuery()).Scan(&si.GTIDState); err != nil {
		return si, s.classify(err)
	}
	return si, nil
}

// Check returns an error for settings that make archiving impossible, and a
// list of warnings for settings that weaken it.
func (si ServerInfo) Check() (warnings []string, err error) {
	if !si.LogBin {
		return nil, fmt.Errorf("%w (log_bin=OFF): start the server with log_bin enabled", ErrBinlogDisabled)
	}
	if !strings.EqualFold(si.BinlogFormat, "ROW") {
		warnings = append(warnings, fmt.Sprintf("binlog_format=%s: point-in-time replay of statement-based events can differ from the original "+
			"for non-deterministic statements; set binlog_format=ROW", si.BinlogFormat))
	}
	return warnings, nil
}

// classify wraps connection errors with a sentinel and never includes the password.
func (s *Source) classify(err error) error {
	var me *mysql.MySQLError
	if errors.As(err, &me) && (me.Number == 1045 || me.Number == 1044 || me.Number == 1227 || me.Number == 1142) {
		return fmt.Errorf("%w: %s (user %q at %s)", ErrAccessDenied, me.Message, s.Config.User, s.Address())
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, mysql.ErrInvalidConn) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %s: %v", ErrUnreachable, s.Address(), err)
	}
	return fmt.Errorf("query %s: %w", s.Address(), err)
}

// BinaryLog is one of the server's binlog files.
type BinaryLog struct {
	Name string
	Size uint64
}

// Now returns the server's clock, in UTC.
func (s *Source) Now(ctx context.Context) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var v string
	if err := s.db.QueryRowContext(ctx, "SELECT UTC_TIMESTAMP(6)").Scan(&v); err != nil {
		return time.Time{}, s.classify(err)
	}
	t, err := time.Parse("2006-01-02 15:04:05.999999", v)
	if err != nil {
		return time.Time{}, fmt.Errorf("server time %q: %w", v, err)
	}
	return t.UTC(), nil
}

// BinaryLogs lists the server's binlog files, oldest first.
func (s *Source) BinaryLogs(ctx context.Context) ([]BinaryLog, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	rows, err := s.db.QueryContext(ctx, "SHOW BINARY LOGS")
	if err != nil {
		return nil, s.classify(err)
	}
	var logs []BinaryLog
	err = eachRow(rows, func(vals []string, _ []string) bool {
		size, _ := strconv.ParseUint(vals[1], 10, 64)
		logs = append(logs, BinaryLog{Name: vals[0], Size: size})
		return true
	})
	return logs, err
}

// eachRow calls row with each row's values and the column names, until it
// returns false, and closes rows. For SHOW statements, whose columns
// differ between releases.
func eachRow(rows *sql.Rows, row func(vals, cols []string) bool) error {
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return err
	}
	for rows.Next() {
		raw := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range raw {
			ptrs[i] = &raw[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		vals := make([]string, len(cols))
		for i, v := range raw {
			vals[i] = v.String
		}
		if !row(vals, cols) {
			return nil
		}
	}
	return rows.Err()
}

// replicationTLS returns the replication connection's TLS config: the
// pool's, so it verifies (or, for mysqltls.Preferred without a CA file,
// accepts and reports) the certificate exactly as the pool does. The
// replication client has no plaintext fallback: a TLS config makes it
// refuse a server without TLS. So with a fallback allowed
// (mysqltls.Preferred) it asks the pool whether the server speaks TLS and
// goes without only when it does not; a certificate that fails
// verification is never a reason to go without.
func (s *Source) replicationTLS(ctx context.Context) (*tls.Config, error) {
	if s.Config.TLS == nil {
		return nil, nil
	}
	if s.Config.AllowFallbackToPlaintext {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		cipher, err := mysqltls.Cipher(ctx, s.db)
		if err != nil {
			return nil, s.classify(err)
		}
		if cipher == "" {
			return nil, nil
		}
	}
	return s.Config.TLS.Clone(), nil
}
