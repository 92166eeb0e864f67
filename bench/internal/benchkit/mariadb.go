package benchkit

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	_ "github.com/go-sql-driver/mysql" // the root pool's driver

	"github.com/mysql-pitr/mysql-pitr/catalog"
	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

// Server is a MariaDB under a benchmark with a root pool for the
// benchmark's own queries.
type Server struct {
	*testbed.MariaDB
	DB *sql.DB
}

// StartServer starts a throwaway MariaDB with the testbed's settings plus
// opts and opens its root pool.
func StartServer(opts testbed.MariaDBOptions) (*Server, error) {
	m, err := testbed.StartMariaDB(opts)
	if err != nil {
		return nil, err
	}
	db, err := sql.Open("mysql", m.DSN())
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("open root pool: %w", err)
	}
	return &Server{MariaDB: m, DB: db}, nil
}

// Close closes the pool and stops the server.
func (s *Server) Close() error {
	s.DB.Close()
	return s.MariaDB.Close()
}

// CPU is the CPU time mariadbd has used so far; 0 if it cannot be read.
func (s *Server) CPU() time.Duration {
	b, err := os.ReadFile(filepath.Join(filepath.Dir(s.DataDir()), "mysqld.pid"))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return PidCPU(pid)
}

// PidCPU is the CPU time process pid has used so far; 0 if it cannot be read.
func PidCPU(pid int) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	d, _ := ParseStatCPU(string(stat))
	return d
}

// WaitIdle waits until the server's binlog end has not moved for quiet, and
// returns it.
func (s *Server) WaitIdle(ctx context.Context, quiet time.Duration) (catalog.Position, error) {
	last, err := MasterStatus(ctx, s.DB)
	if err != nil {
		return last, err
	}
	since := time.Now()
	for time.Since(since) < quiet {
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		p, err := MasterStatus(ctx, s.DB)
		if err != nil {
			return last, err
		}
		if p != last {
			last, since = p, time.Now()
		}
	}
	return last, nil
}
