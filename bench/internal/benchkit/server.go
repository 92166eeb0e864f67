package benchkit

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"

	"github.com/mysql-pitr/mysql-pitr/catalog"
)

// MasterStatus is SHOW MASTER STATUS: where the next event will be written.
func MasterStatus(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}) (catalog.Position, error) {
	var p catalog.Position
	var doDB, ignoreDB sql.NullString
	err := q.QueryRowContext(ctx, "SHOW MASTER STATUS").Scan(&p.File, &p.Pos, &doDB, &ignoreDB)
	if err != nil {
		return p, fmt.Errorf("show master status: %w", err)
	}
	return p, nil
}

// BinaryLog is a row of SHOW BINARY LOGS: a file and its size.
type BinaryLog struct {
	Name string
	Size int64
}

// BinaryLogs is SHOW BINARY LOGS: the server's files and their sizes.
func BinaryLogs(ctx context.Context, db *sql.DB) ([]BinaryLog, error) {
	rows, err := db.QueryContext(ctx, "SHOW BINARY LOGS")
	if err != nil {
		return nil, fmt.Errorf("show binary logs: %w", err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	var logs []BinaryLog
	for rows.Next() {
		vals := make([]sql.RawBytes, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, fmt.Errorf("show binary logs: %w", err)
		}
		size, err := strconv.ParseInt(string(vals[1]), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("show binary logs: size %q: %w", vals[1], err)
		}
		logs = append(logs, BinaryLog{Name: string(vals[0]), Size: size})
	}
	return logs, rows.Err()
}

// PosAtLeast reports whether a is at or after b. Positions in different
// files compare by file number; an empty a is at b only when b is empty.
func PosAtLeast(a, b catalog.Position) bool {
	if a.File == "" {
		return b.File == ""
	}
	if a.File != b.File {
		na, errA := catalog.FileNumber(a.File)
		nb, errB := catalog.FileNumber(b.File)
		if errA != nil || errB != nil {
			return false
		}
		return na > nb
	}
	return a.Pos >= b.Pos
}
