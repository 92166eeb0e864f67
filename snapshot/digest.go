package snapshot

import (
	"bytes"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/cespare/xxhash/v2"
	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/catalog"
)

// DigestAlgorithm names the row digest a logical snapshot records for each
// table (catalog.TableInfo.Digest): the sum, modulo 2^64, of the XXH64 hash
// (seed 0) of every row's line as the dump encodes it, newline included.
// A sum does not depend on the order the rows are read in or on how the
// table is split into chunks, and unlike XOR it does not cancel duplicate
// rows out. Because the lines are the dump's own encoding, NULL (\N), an
// empty string and the string "\N" (\\N) hash differently.
const DigestAlgorithm = "xxh64-sum"

// rowDigest accumulates the digest of a set of rows.
type rowDigest struct {
	rows int64
	sum  uint64
}

// add counts one encoded row line.
func (d *rowDigest) add(line []byte) {
	d.rows++
	d.sum += xxhash.Sum64(line)
}

// merge adds another set's digest: digests of disjoint sets of rows add up.
func (d *rowDigest) merge(o rowDigest) {
	d.rows += o.rows
	d.sum += o.sum
}

// String formats the digest as it is recorded: "xxh64-sum:" and 16 hex digits.
func (d rowDigest) String() string {
	return DigestAlgorithm + ":" + fmt.Sprintf("%016x", d.sum)
}

// digestOf returns the digest of data in the dump's format.
func digestOf(data []byte) rowDigest {
	var d rowDigest
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			i = len(data) - 1
		}
		d.add(data[:i+1])
		data = data[i+1:]
	}
	return d
}

// rowEncoder turns the driver's values into the dump's row lines. The
// driver's rows give each value as []byte (nil for NULL) without
// database/sql's conversions, so an empty string and NULL stay apart and
// nothing is copied.
type rowEncoder struct {
	vals    []driver.Value
	fields  [][]byte
	scratch [][]byte
	buf     []byte
}

// encodeRows reads every row and calls emit with its line, which is only
// valid until emit returns.
func encodeRows(rows driver.Rows, emit func(line []byte) error) error {
	n := len(rows.Columns())
	e := rowEncoder{vals: make([]driver.Value, n), fields: make([][]byte, n), scratch: make([][]byte, n)}
	for {
		if err := rows.Next(e.vals); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		for j, v := range e.vals {
			switch v := v.(type) {
			case nil:
				e.fields[j] = nil
			case []byte:
				if v == nil {
					v = []byte{}
				}
				e.fields[j] = v
			// The driver parses numeric columns; formatting them back is
			// exact for integers and gives the shortest text that reads
			// back as the same float.
			case int64:
				e.scratch[j] = strconv.AppendInt(e.scratch[j][:0], v, 10)
				e.fields[j] = e.scratch[j]
			case uint64:
				e.scratch[j] = strconv.AppendUint(e.scratch[j][:0], v, 10)
				e.fields[j] = e.scratch[j]
			case float32:
				e.scratch[j] = strconv.AppendFloat(e.scratch[j][:0], float64(v), 'g', -1, 32)
				e.fields[j] = e.scratch[j]
			case float64:
				e.scratch[j] = strconv.AppendFloat(e.scratch[j][:0], v, 'g', -1, 64)
				e.fields[j] = e.scratch[j]
			default:
				return fmt.Errorf("column %d: unexpected %T from the driver", j, v)
			}
		}
		e.buf = appendRow(e.buf[:0], e.fields)
		if err := emit(e.buf); err != nil {
			return err
		}
	}
}

// queryRows runs q with args on a dedicated connection and encodes its rows
// as the dump does.
func queryRows(ctx context.Context, c *sql.Conn, q string, args []driver.NamedValue, emit func(line []byte) error) error {
	return c.Raw(func(dc any) error {
		qc, ok := dc.(driver.QueryerContext)
		if !ok {
			return errors.New("mysql driver connection cannot query")
		}
		rows, err := qc.QueryContext(ctx, q, args)
		if err != nil {
			return err
		}
		defer rows.Close()
		return encodeRows(rows, emit)
	})
}

// ErrTableMissing is returned by DigestTables for a table the server does not have.
var ErrTableMissing = errors.New("table does not exist")

// DigestTables reads every row of each table on the server that cfg names
// and returns the tables with their row count and digest
// (DigestAlgorithm), in the order given. It selects and encodes the rows
// exactly as a logical snapshot dumps them, in the same session settings,
// so a table loaded from a snapshot yields the digest the snapshot
// recorded for it. A table that does not exist is an error wrapping
// ErrTableMissing.
func DigestTables(ctx context.Context, cfg *mysql.Config, tables []catalog.TableInfo) ([]catalog.TableInfo, error) {
	c := cfg.Clone()
	c.InterpolateParams = true
	withReadBuffer(c)
	conn, err := mysql.NewConnector(c)
	if err != nil {
		return nil, fmt.Errorf("mysql connection settings: %w", err)
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	sc, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", cfg.Addr, err)
	}
	defer sc.Close()
	for _, s := range dataSessionSettings {
		if _, err := sc.ExecContext(ctx, s); err != nil {
			return nil, fmt.Errorf("set up session (%s): %w", s, err)
		}
	}
	out := make([]catalog.TableInfo, 0, len(tables))
	for _, t := range tables {
		cols, err := tableColumns(ctx, sc, t.Schema, t.Name)
		if err != nil {
			return nil, err
		}
		if len(cols) == 0 {
			return nil, fmt.Errorf("table %s.%s: %w", t.Schema, t.Name, ErrTableMissing)
		}
		_, sel := selectColumns(cols)
		var d rowDigest
		err = queryRows(ctx, sc, "SELECT "+sel+" FROM "+quoteTable(t.Schema, t.Name), nil, func(line []byte) error {
			d.add(line)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("digest %s.%s: %w", t.Schema, t.Name, err)
		}
		out = append(out, catalog.TableInfo{Schema: t.Schema, Name: t.Name, Rows: d.rows, Digest: d.String()})
	}
	return out, nil
}

// tableColumns reads one table's columns as planTables does.
func tableColumns(ctx context.Context, c *sql.Conn, schema, table string) ([]columnInfo, error) {
	rows, err := c.QueryContext(ctx, "SELECT COLUMN_NAME, DATA_TYPE, IS_NULLABLE, EXTRA FROM information_schema.COLUMNS "+
		"WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION", schema, table)
	if err != nil {
		return nil, fmt.Errorf("columns of %s.%s: %w", schema, table, err)
	}
	defer rows.Close()
	var cols []columnInfo
	for rows.Next() {
		var ci columnInfo
		var nullable string
		if err := rows.Scan(&ci.name, &ci.dataType, &nullable, &ci.extra); err != nil {
			return nil, fmt.Errorf("columns of %s.%s: %w", schema, table, err)
		}
		ci.dataType = strings.ToLower(ci.dataType)
		ci.nullable = nullable == "YES"
		cols = append(cols, ci)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("columns of %s.%s: %w", schema, table, err)
	}
	return cols, nil
}
