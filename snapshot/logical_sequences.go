package snapshot

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Sequences are MariaDB's (10.3+): MySQL has none, so a MySQL snapshot
// never lists one and none of this runs against it.
//
// A sequence's state is the single row of its table (SELECT * FROM seq:
// next_not_cached_value, its options and cycle_count). A server hands out
// values from a cache in memory and writes the row only when it refills
// the cache, so the row is what a restart, a replica and a binlog replay
// continue from. FLUSH TABLES WITH READ LOCK, which takes the snapshot's
// position, empties every cache, and a refill, which writes the row, waits
// for the lock: read while the lock is held, the row is exactly what the
// source hands out next at the snapshot's position. (Read later, inside
// the dumping transactions, it would not be: a sequence's row is read as
// it is now, not as of the transaction's read view.)

// sequenceStateBatch is how many sequences one query reads while writes
// are blocked.
const sequenceStateBatch = 100

// readSequences reads the definitions of sequences (SHOW CREATE SEQUENCE),
// with the tables, before the lock.
func readSequences(ctx context.Context, c *sql.Conn, names [][2]string) ([]sequenceDef, error) {
	var out []sequenceDef
	for _, n := range names {
		s := sequenceDef{Schema: n[0], Name: n[1]}
		var name string
		if err := c.QueryRowContext(ctx, "SHOW CREATE SEQUENCE "+quoteTable(s.Schema, s.Name)).Scan(&name, &s.Create); err != nil {
			return nil, fmt.Errorf("show create sequence %s.%s: %w", s.Schema, s.Name, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// readSequenceStates reads the row of every sequence into its State, a
// batch of them per query; c must hold the global read lock.
func readSequenceStates(ctx context.Context, c *sql.Conn, seqs []sequenceDef) error {
	for from := 0; from < len(seqs); from += sequenceStateBatch {
		batch := seqs[from:min(from+sequenceStateBatch, len(seqs))]
		parts := make([]string, len(batch))
		for i, s := range batch {
			parts[i] = "SELECT " + strconv.Itoa(from+i) + " AS mysql_pitr_i, s.* FROM " + quoteTable(s.Schema, s.Name) + " AS s"
		}
		if err := readSequenceRows(ctx, c, strings.Join(parts, " UNION ALL "), seqs); err != nil {
			return fmt.Errorf("read the state of sequences %s.%s and on: %w", batch[0].Schema, batch[0].Name, err)
		}
	}
	for _, s := range seqs {
		if len(s.State) == 0 {
			return fmt.Errorf("sequence %s.%s: no state read", s.Schema, s.Name)
		}
	}
	return nil
}

func readSequenceRows(ctx context.Context, c *sql.Conn, q string, seqs []sequenceDef) error {
	rows, err := c.QueryContext(ctx, q)
	if err != nil {
		return err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return err
	}
	for rows.Next() {
		var i int
		vals := make([]sql.NullString, len(cols)-1)
		ptrs := []any{&i}
		for j := range vals {
			ptrs = append(ptrs, &vals[j])
		}
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		if i < 0 || i >= len(seqs) || seqs[i].State != nil {
			return fmt.Errorf("unexpected row %d", i)
		}
		seqs[i].State = map[string]string{}
		for j, v := range vals {
			if !v.Valid {
				return fmt.Errorf("sequence %s.%s: %s is NULL", seqs[i].Schema, seqs[i].Name, cols[j+1])
			}
			seqs[i].State[cols[j+1]] = v.String
		}
	}
	return rows.Err()
}

// createSequence creates a sequence and gives it its state by writing its
// row, which sets every field as it was (SETVAL could not move it below
// its start, nor back after ALTER SEQUENCE … RESTART).
func createSequence(ctx context.Context, c *sql.Conn, s sequenceDef) error {
	if _, err := c.ExecContext(ctx, "USE "+quoteIdent(s.Schema)); err != nil {
		return fmt.Errorf("use %s: %w", s.Schema, err)
	}
	if _, err := c.ExecContext(ctx, s.Create); err != nil {
		return fmt.Errorf("create sequence %s.%s: %w", s.Schema, s.Name, err)
	}
	if len(s.State) == 0 {
		return fmt.Errorf("sequence %s.%s: the snapshot holds no state", s.Schema, s.Name)
	}
	cols := make([]string, 0, len(s.State))
	for col := range s.State {
		cols = append(cols, col)
	}
	slices.Sort(cols)
	args := make([]any, len(cols))
	for i, col := range cols {
		args[i] = s.State[col]
		cols[i] = quoteIdent(col)
	}
	q := "INSERT INTO " + quoteTable(s.Schema, s.Name) + " (" + strings.Join(cols, ", ") + ") VALUES (" +
		strings.TrimSuffix(strings.Repeat("?, ", len(cols)), ", ") + ")"
	if _, err := c.ExecContext(ctx, q, args...); err != nil {
		return fmt.Errorf("set the state of sequence %s.%s: %w", s.Schema, s.Name, err)
	}
	return nil
}
