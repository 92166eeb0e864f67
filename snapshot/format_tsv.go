package snapshot

import (
	"encoding/binary"
	"fmt"
	"net/url"
	"strings"
)

// The data objects of a logical snapshot are rows in the text format that
// LOAD DATA reads back byte-exactly with
//
//	CHARACTER SET binary FIELDS TERMINATED BY '\t' ESCAPED BY '\\' LINES TERMINATED BY '\n'
//
// and no ENCLOSED BY: one line per row, fields separated by a tab, NULL
// written as \N, and in values the bytes backslash, tab, newline, carriage
// return and NUL written as \\, \t, \n, \r and \0. Every other byte is
// written as it is: with CHARACTER SET binary the server copies it into the
// column unconverted, so values are dumped in the column's own character set
// (character_set_results is NULL on the dumping connections).
const loadDataFormat = `CHARACTER SET binary FIELDS TERMINATED BY '\t' ESCAPED BY '\\' LINES TERMINATED BY '\n'`

// tsvNull is how a NULL field is written.
const tsvNull = `\N`

// needsEscape marks the bytes appendField escapes.
var needsEscape = [256]bool{'\\': true, '\t': true, '\n': true, '\r': true, 0: true}

// appendField appends v, escaped, to dst; a nil v is NULL.
func appendField(dst, v []byte) []byte {
	if v == nil {
		return append(dst, tsvNull...)
	}
	// Most fields need no escape: skip them eight bytes at a time, down
	// to the first word that may hold one.
	i := 0
	for ; i+8 <= len(v); i += 8 {
		if mayNeedEscape(binary.LittleEndian.Uint64(v[i:])) {
			break
		}
	}
	start := 0
	for ; i < len(v); i++ {
		c := v[i]
		if !needsEscape[c] {
			continue
		}
		dst = append(dst, v[start:i]...)
		switch c {
		case '\\':
			dst = append(dst, '\\', '\\')
		case '\t':
			dst = append(dst, '\\', 't')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case 0:
			dst = append(dst, '\\', '0')
		}
		start = i + 1
	}
	return append(dst, v[start:]...)
}

// mayNeedEscape reports whether any byte of w is a backslash or below
// 0x0e (which holds every other byte appendField escapes). False
// positives only cost the byte-wise loop.
func mayNeedEscape(w uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	below := (w - 0x0e*ones) &^ w & highs
	x := w ^ ('\\' * ones)
	backslash := (x - ones) &^ x & highs
	return below|backslash != 0
}

// appendRow appends one row, fields escaped and tab-separated, with its newline.
func appendRow(dst []byte, row [][]byte) []byte {
	for i, v := range row {
		if i > 0 {
			dst = append(dst, '\t')
		}
		dst = appendField(dst, v)
	}
	return append(dst, '\n')
}

// parseRows splits data written by appendRow back into rows, undoing the
// escaping as LOAD DATA does. It exists to test the format; the loader
// leaves the parsing to the server.
func parseRows(data []byte) ([][][]byte, error) {
	var rows [][][]byte
	var row [][]byte
	var field []byte
	null := false
	inField := false
	for i := 0; i < len(data); i++ {
		c := data[i]
		switch c {
		case '\\':
			if i+1 >= len(data) {
				return nil, fmt.Errorf("byte %d: escape at end of data", i)
			}
			i++
			switch e := data[i]; e {
			case 'N':
				if inField {
					return nil, fmt.Errorf("byte %d: \\N inside a value", i)
				}
				null = true
			case 't':
				field = append(field, '\t')
			case 'n':
				field = append(field, '\n')
			case 'r':
				field = append(field, '\r')
			case '0':
				field = append(field, 0)
			default:
				field = append(field, e)
			}
			inField = true
		case '\t', '\n':
			if null {
				row = append(row, nil)
			} else {
				if field == nil {
					field = []byte{}
				}
				row = append(row, field)
			}
			field, null, inField = nil, false, false
			if c == '\n' {
				rows = append(rows, row)
				row = nil
			}
		default:
			if null {
				return nil, fmt.Errorf("byte %d: value after \\N", i)
			}
			field = append(field, c)
			inField = true
		}
	}
	if inField || row != nil {
		return nil, fmt.Errorf("data does not end with a newline")
	}
	return rows, nil
}

// Object names inside a logical snapshot, relative to the snapshot's prefix:
//
//	logical.json.zst                         the layout: what the loader creates and loads, in order
//	tables/<db>/<table>/schema.sql.zst       SHOW CREATE TABLE
//	tables/<db>/<table>/data-000001.tsv.zst  rows, in loadDataFormat
//
// Database and table names are escaped with nameSegment so that any name
// MySQL allows is one key segment.
const layoutObject = "logical.json.zst"

// nameSegment escapes a database or table name into one key segment: path
// escaping (which also escapes '/', '\\' and '%'), plus the dots of the
// segments "." and ".." that keys refuse.
func nameSegment(name string) string {
	s := url.PathEscape(name)
	if strings.Trim(s, ".") == "" {
		s = strings.ReplaceAll(s, ".", "%2E")
	}
	return s
}

// tableDir is the object name prefix of a table's objects.
func tableDir(schema, table string) string {
	return "tables/" + nameSegment(schema) + "/" + nameSegment(table) + "/"
}

// tableSchemaObject is the object name of a table's CREATE TABLE statement.
func tableSchemaObject(schema, table string) string {
	return tableDir(schema, table) + "schema.sql.zst"
}

// tableDataObject is the object name of a table's n-th data chunk, from 1.
func tableDataObject(schema, table string, n int) string {
	return fmt.Sprintf("%sdata-%06d.tsv.zst", tableDir(schema, table), n)
}

// quoteIdent quotes a MySQL identifier with backticks.
func quoteIdent(name string) string {
	return "`" + strings.ReplaceAll(name, "`", "``") + "`"
}

// quoteTable quotes schema.table.
func quoteTable(schema, table string) string {
	return quoteIdent(schema) + "." + quoteIdent(table)
}
