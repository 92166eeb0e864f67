package snapshot

import (
	"context"
	"database/sql"
	"fmt"
	"math/big"
	"regexp"
	"slices"
	"strings"
)

// plan is what a snapshot will dump, read before the lock is taken.
type plan struct {
	databases []databaseDef
	sequences []sequenceDef
	tables    []*tablePlan
	views     []objectDef
	routines  []objectDef
	triggers  []objectDef
	events    []objectDef
	users     []userDef
}

// tablePlan is one table to dump.
type tablePlan struct {
	def    tableDef
	create string
	// selectList selects def.Columns, encoded as they are dumped.
	selectList string
	// key is the unique key chunks are ranges of; nil when there is none.
	key    []keyColumn
	chunks []*chunkPlan
}

// chunkPlan is one key range of a table: lower <= key < upper, with a nil
// bound open. Consecutive chunks share a bound, so the ranges cover every
// key whatever rows exist when they are read.
type chunkPlan struct {
	object       string
	lower, upper []any
	// digest (and its row count) is set once the chunk is dumped.
	digest rowDigest
}

// keyColumn is a column of the chunking key.
type keyColumn struct {
	name string
	// integer keys are split arithmetically; other keys by walking the index.
	integer bool
	kind    literalKind
}

// literalKind says how a key value read back as text is put in a predicate.
type literalKind int

const (
	// literalString: a quoted string, which the server converts to the
	// column's type and collation, so it compares as ORDER BY sorts.
	literalString literalKind = iota
	// literalNumber: inlined, so it compares as a number rather than as a double.
	literalNumber
	// literalBinary: a binary string, compared bytewise.
	literalBinary
)

// numberLiteral is a numeric key value to inline.
type numberLiteral string

var numberRE = regexp.MustCompile(`^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$`)

// systemSchemas are never dumped as data; mysql only through users and grants.
var systemSchemas = []string{"mysql", "information_schema", "performance_schema", "sys"}

func isSystemSchema(s string) bool { return slices.Contains(systemSchemas, strings.ToLower(s)) }

// plan reads the server's schemas, tables and other objects, and splits
// the tables into chunks.
func (d *dumper) plan(ctx context.Context, c *sql.Conn) (*plan, error) {
	p := &plan{}
	schemas, err := d.listSchemas(ctx, c)
	if err != nil {
		return nil, err
	}
	for _, s := range schemas {
		var name, create string
		if err := c.QueryRowContext(ctx, "SHOW CREATE DATABASE "+quoteIdent(s)).Scan(&name, &create); err != nil {
			return nil, fmt.Errorf("show create database %s: %w", s, err)
		}
		p.databases = append(p.databases, databaseDef{Name: s, Create: create})
	}
	if len(schemas) > 0 {
		if err := d.planTables(ctx, c, p, schemas); err != nil {
			return nil, err
		}
		if err := d.readObjects(ctx, c, p, schemas); err != nil {
			return nil, err
		}
	}
	if !d.opts.SkipUsers {
		if p.users, err = d.readUsers(ctx, c); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (d *dumper) listSchemas(ctx context.Context, c *sql.Conn) ([]string, error) {
	rows, err := c.QueryContext(ctx, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA ORDER BY SCHEMA_NAME")
	if err != nil {
		return nil, fmt.Errorf("list schemas: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, fmt.Errorf("list schemas: %w", err)
		}
		if isSystemSchema(s) || (len(d.opts.Databases) > 0 && !slices.Contains(d.opts.Databases, s)) {
			continue
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list schemas: %w", err)
	}
	for _, want := range d.opts.Databases {
		if !slices.Contains(out, want) {
			return nil, fmt.Errorf("database %q: not found on the server (or a system schema)", want)
		}
	}
	return out, nil
}

// schemaFilter is an IN list with its arguments.
func schemaFilter(col string, schemas []string) (string, []any) {
	args := make([]any, len(schemas))
	for i, s := range schemas {
		args[i] = s
	}
	return col + " IN (" + strings.TrimSuffix(strings.Repeat("?,", len(schemas)), ",") + ")", args
}

type columnInfo struct {
	name, dataType, extra string
	nullable              bool
}

type indexInfo struct {
	name    string
	columns []string
	usable  bool
}

// tableKey names a table in the information_schema listings.
type tableKey struct{ schema, name string }

// listedTable is a base table to dump, with the statistics its chunks are
// estimated from.
type listedTable struct {
	tableKey
	rows, avgLen int64
}

// planTables lists the schemas' tables, reads their sequences, and plans
// every base table: its definition, the columns dumped, its chunking key
// and chunks.
func (d *dumper) planTables(ctx context.Context, c *sql.Conn, p *plan, schemas []string) error {
	tables, sequences, err := d.listTables(ctx, c, schemas)
	if err != nil {
		return err
	}
	if p.sequences, err = readSequences(ctx, c, sequences); err != nil {
		return err
	}
	cols, err := listColumns(ctx, c, schemas)
	if err != nil {
		return err
	}
	idx, err := listIndexes(ctx, c, schemas)
	if err != nil {
		return err
	}
	for _, lt := range tables {
		t, err := d.planTable(ctx, c, lt, cols[lt.tableKey], idx[lt.tableKey])
		if err != nil {
			return err
		}
		p.tables = append(p.tables, t)
	}
	return nil
}

// listTables returns the schemas' base tables and sequences in name order,
// warning of tables not dumped as of the snapshot's position and failing on
// a table type the snapshot cannot hold.
func (d *dumper) listTables(ctx context.Context, c *sql.Conn, schemas []string) ([]listedTable, [][2]string, error) {
	where, args := schemaFilter("TABLE_SCHEMA", schemas)
	rows, err := c.QueryContext(ctx, "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE, COALESCE(ENGINE, ''), "+
		"COALESCE(TABLE_ROWS, 0), COALESCE(AVG_ROW_LENGTH, 0) FROM information_schema.TABLES WHERE "+where+
		" ORDER BY TABLE_SCHEMA, TABLE_NAME", args...)
	if err != nil {
		return nil, nil, fmt.Errorf("list tables: %w", err)
	}
	defer rows.Close()
	var tables []listedTable
	var sequences [][2]string
	for rows.Next() {
		var t listedTable
		var typ, engine string
		if err := rows.Scan(&t.schema, &t.name, &typ, &engine, &t.rows, &t.avgLen); err != nil {
			return nil, nil, fmt.Errorf("list tables: %w", err)
		}
		switch typ {
		case "BASE TABLE", "SYSTEM VERSIONED":
			if typ == "SYSTEM VERSIONED" {
				d.log.Warn("system-versioned table: only current rows are dumped", "schema", t.schema, "table", t.name)
			}
			if !strings.EqualFold(engine, "InnoDB") {
				d.log.Warn("table is not InnoDB: its rows are read as they are when dumped, not as of the snapshot's position",
					"schema", t.schema, "table", t.name, "engine", engine)
			}
			tables = append(tables, t)
		case "VIEW":
			// Read with the other objects.
		case "SEQUENCE":
			sequences = append(sequences, [2]string{t.schema, t.name})
		default:
			// A snapshot holds everything a restore needs, or fails.
			return nil, nil, fmt.Errorf("table %s.%s: type %q is not supported by logical snapshots (a physical snapshot copies it)",
				t.schema, t.name, typ)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("list tables: %w", err)
	}
	return tables, sequences, nil
}

// listColumns returns the columns of the schemas' tables in table order.
func listColumns(ctx context.Context, c *sql.Conn, schemas []string) (map[tableKey][]columnInfo, error) {
	where, args := schemaFilter("TABLE_SCHEMA", schemas)
	rows, err := c.QueryContext(ctx, "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, DATA_TYPE, IS_NULLABLE, EXTRA "+
		"FROM information_schema.COLUMNS WHERE "+where+" ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION", args...)
	if err != nil {
		return nil, fmt.Errorf("list columns: %w", err)
	}
	defer rows.Close()
	cols := map[tableKey][]columnInfo{}
	for rows.Next() {
		var k tableKey
		var ci columnInfo
		var nullable string
		if err := rows.Scan(&k.schema, &k.name, &ci.name, &ci.dataType, &nullable, &ci.extra); err != nil {
			return nil, fmt.Errorf("list columns: %w", err)
		}
		ci.dataType = strings.ToLower(ci.dataType)
		ci.nullable = nullable == "YES"
		cols[k] = append(cols[k], ci)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list columns: %w", err)
	}
	return cols, nil
}

// listIndexes returns the indexes of the schemas' tables with their
// columns in order; an index is usable as a chunking key if it is a unique
// BTREE index on whole columns.
func listIndexes(ctx context.Context, c *sql.Conn, schemas []string) (map[tableKey][]*indexInfo, error) {
	where, args := schemaFilter("TABLE_SCHEMA", schemas)
	rows, err := c.QueryContext(ctx, "SELECT TABLE_SCHEMA, TABLE_NAME, INDEX_NAME, NON_UNIQUE, COLUMN_NAME, SUB_PART, INDEX_TYPE "+
		"FROM information_schema.STATISTICS WHERE "+where+" ORDER BY TABLE_SCHEMA, TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX", args...)
	if err != nil {
		return nil, fmt.Errorf("list indexes: %w", err)
	}
	defer rows.Close()
	idx := map[tableKey][]*indexInfo{}
	for rows.Next() {
		var k tableKey
		var name, col, typ string
		var nonUnique int
		var subPart sql.NullInt64
		if err := rows.Scan(&k.schema, &k.name, &name, &nonUnique, &col, &subPart, &typ); err != nil {
			return nil, fmt.Errorf("list indexes: %w", err)
		}
		list := idx[k]
		if len(list) == 0 || list[len(list)-1].name != name {
			list = append(list, &indexInfo{name: name, usable: nonUnique == 0 && typ == "BTREE"})
			idx[k] = list
		}
		ix := list[len(list)-1]
		ix.columns = append(ix.columns, col)
		if subPart.Valid {
			ix.usable = false
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list indexes: %w", err)
	}
	return idx, nil
}

// planTable reads one table's CREATE statement and plans its dump from its
// columns and indexes.
func (d *dumper) planTable(ctx context.Context, c *sql.Conn, lt listedTable, cols []columnInfo, indexes []*indexInfo) (*tablePlan, error) {
	t := &tablePlan{def: tableDef{Schema: lt.schema, Name: lt.name, SchemaObject: tableSchemaObject(lt.schema, lt.name)}}
	var name string
	if err := c.QueryRowContext(ctx, "SHOW CREATE TABLE "+quoteTable(lt.schema, lt.name)).Scan(&name, &t.create); err != nil {
		return nil, fmt.Errorf("show create table %s.%s: %w", lt.schema, lt.name, err)
	}
	t.def.Columns, t.selectList = selectColumns(cols)
	if len(t.def.Columns) == 0 {
		return nil, fmt.Errorf("table %s.%s: no columns to dump", lt.schema, lt.name)
	}
	t.key = chooseKey(indexes, cols)
	if err := d.planChunks(ctx, c, t, lt.rows, lt.avgLen); err != nil {
		return nil, err
	}
	return t, nil
}

// selectColumns returns the columns a dump holds and the select list that
// reads them, encoded as they are dumped: generated columns are left out,
// BIT columns read as numbers.
func selectColumns(cols []columnInfo) ([]columnDef, string) {
	var defs []columnDef
	var sel []string
	for _, ci := range cols {
		if isGenerated(ci.extra) {
			continue
		}
		cd := columnDef{Name: ci.name}
		expr := quoteIdent(ci.name)
		switch {
		case ci.dataType == "bit":
			cd.Encoding = encodingBit
			expr += "+0"
		case isSpatial(ci.dataType):
			cd.Encoding = encodingGeometry
		case ci.dataType == "json":
			cd.Encoding = encodingJSON
		}
		defs = append(defs, cd)
		sel = append(sel, expr)
	}
	return defs, strings.Join(sel, ", ")
}

// isGenerated reports a column whose value the server computes, which
// cannot be loaded (EXTRA as MariaDB and MySQL report it).
func isGenerated(extra string) bool {
	e := strings.ToUpper(extra)
	for _, s := range []string{"VIRTUAL GENERATED", "STORED GENERATED", "PERSISTENT GENERATED", "ROW START", "ROW END"} {
		if strings.Contains(e, s) {
			return true
		}
	}
	return false
}

func isSpatial(dataType string) bool {
	switch dataType {
	case "geometry", "point", "linestring", "polygon", "multipoint", "multilinestring", "multipolygon",
		"geometrycollection", "geomcollection":
		return true
	}
	return false
}

// chooseKey returns the primary key, or else the narrowest unique BTREE key
// of NOT NULL columns, if its columns all compare as they sort.
func chooseKey(indexes []*indexInfo, cols []columnInfo) []keyColumn {
	byName := map[string]columnInfo{}
	for _, c := range cols {
		byName[c.name] = c
	}
	var best []keyColumn
	for _, ix := range indexes {
		if !ix.usable {
			continue
		}
		key := make([]keyColumn, 0, len(ix.columns))
		for _, name := range ix.columns {
			ci, ok := byName[name]
			if !ok || ci.nullable {
				key = nil
				break
			}
			kc, ok := keyColumnOf(ci)
			if !ok {
				key = nil
				break
			}
			key = append(key, kc)
		}
		if key == nil {
			continue
		}
		if ix.name == "PRIMARY" {
			return key
		}
		if best == nil || len(key) < len(best) {
			best = key
		}
	}
	return best
}

// keyColumnOf says how a key column's values go into predicates, and
// whether it can be a chunking key at all: ENUM and SET sort by their index
// but compare with a string as strings, so ranges of them would overlap.
func keyColumnOf(ci columnInfo) (keyColumn, bool) {
	kc := keyColumn{name: ci.name}
	switch ci.dataType {
	case "tinyint", "smallint", "mediumint", "int", "integer", "bigint":
		kc.integer, kc.kind = true, literalNumber
	case "decimal", "numeric", "float", "double", "year":
		kc.kind = literalNumber
	case "binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob":
		kc.kind = literalBinary
	case "enum", "set", "bit", "json":
		return kc, false
	default:
		if isSpatial(ci.dataType) {
			return kc, false
		}
		kc.kind = literalString
	}
	return kc, true
}

// planChunks splits a table into key ranges of about rowsPerChunk rows.
func (d *dumper) planChunks(ctx context.Context, c *sql.Conn, t *tablePlan, estRows, avgLen int64) error {
	perChunk := d.opts.ChunkRows
	if avgLen > 0 {
		perChunk = min(perChunk, max(1, d.opts.ChunkBytes/avgLen))
	}
	var bounds [][]any
	var err error
	switch {
	case t.key == nil || estRows <= perChunk:
	case len(t.key) == 1 && t.key[0].integer:
		bounds, err = d.integerBounds(ctx, c, t, (estRows+perChunk-1)/perChunk)
	default:
		bounds, err = d.walkBounds(ctx, c, t, perChunk)
	}
	if err != nil {
		return fmt.Errorf("split table %s.%s into chunks: %w", t.def.Schema, t.def.Name, err)
	}
	var lower []any
	for i := 0; i <= len(bounds); i++ {
		var upper []any
		if i < len(bounds) {
			upper = bounds[i]
		}
		t.chunks = append(t.chunks, &chunkPlan{
			object: tableDataObject(t.def.Schema, t.def.Name, i+1),
			lower:  lower,
			upper:  upper,
		})
		lower = upper
	}
	return nil
}

// integerBounds splits [MIN, MAX] of an integer key into n equal ranges.
func (d *dumper) integerBounds(ctx context.Context, c *sql.Conn, t *tablePlan, n int64) ([][]any, error) {
	k := quoteIdent(t.key[0].name)
	var lo, hi sql.NullString
	q := fmt.Sprintf("SELECT MIN(%s), MAX(%s) FROM %s", k, k, quoteTable(t.def.Schema, t.def.Name))
	if err := c.QueryRowContext(ctx, q).Scan(&lo, &hi); err != nil {
		return nil, err
	}
	if !lo.Valid || !hi.Valid {
		return nil, nil
	}
	a, ok1 := new(big.Int).SetString(lo.String, 10)
	b, ok2 := new(big.Int).SetString(hi.String, 10)
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("key range %q..%q is not integer", lo.String, hi.String)
	}
	span := new(big.Int).Sub(b, a)
	span.Add(span, big.NewInt(1))
	step := new(big.Int).Div(span, big.NewInt(n))
	if step.Sign() <= 0 {
		return nil, nil
	}
	var bounds [][]any
	for i := int64(1); i < n; i++ {
		v := new(big.Int).Mul(step, big.NewInt(i))
		v.Add(v, a)
		bounds = append(bounds, []any{numberLiteral(v.String())})
	}
	return bounds, nil
}

// walkBounds finds the key of every perChunk-th row by walking the key in
// order; it works for any key type and composite keys.
func (d *dumper) walkBounds(ctx context.Context, c *sql.Conn, t *tablePlan, perChunk int64) ([][]any, error) {
	names := make([]string, len(t.key))
	for i, k := range t.key {
		names[i] = quoteIdent(k.name)
	}
	cols := strings.Join(names, ", ")
	var bounds [][]any
	var prev []any
	for {
		q := "SELECT " + cols + " FROM " + quoteTable(t.def.Schema, t.def.Name)
		var args []any
		if prev != nil {
			pred, pargs := keyPredicate(t.key, prev, ">=")
			q += " WHERE " + pred
			args = pargs
		}
		q += fmt.Sprintf(" ORDER BY %s LIMIT 1 OFFSET %d", cols, perChunk)
		vals := make([]sql.RawBytes, len(t.key))
		ptrs := make([]any, len(vals))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		rows, err := c.QueryContext(ctx, q, args...)
		if err != nil {
			return nil, err
		}
		found := rows.Next()
		if found {
			err = rows.Scan(ptrs...)
		}
		var b []any
		if found && err == nil {
			b, err = boundOf(t.key, vals)
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
		if err != nil {
			return nil, err
		}
		if !found {
			return bounds, nil
		}
		bounds = append(bounds, b)
		prev = b
	}
}

// boundOf turns a key's values, read as text, into predicate arguments.
func boundOf(key []keyColumn, vals []sql.RawBytes) ([]any, error) {
	b := make([]any, len(key))
	for i, k := range key {
		switch k.kind {
		case literalNumber:
			if !numberRE.Match(vals[i]) {
				return nil, fmt.Errorf("key column %s: value %q is not a number", k.name, vals[i])
			}
			b[i] = numberLiteral(vals[i])
		case literalBinary:
			b[i] = []byte(string(vals[i]))
		default:
			b[i] = string(vals[i])
		}
	}
	return b, nil
}

// keyPredicate is "key op bound" for op ">=" or "<", expanded for a
// composite key into (k1 > v1) OR (k1 = v1 AND k2 > v2) OR ... so that the
// server can use the index as a range.
func keyPredicate(key []keyColumn, bound []any, op string) (string, []any) {
	strict := ">"
	if op == "<" {
		strict = "<"
	}
	var args []any
	lit := func(i int) string {
		if n, ok := bound[i].(numberLiteral); ok {
			return string(n)
		}
		args = append(args, bound[i])
		return "?"
	}
	var ors []string
	for i := range key {
		var ands []string
		for j := 0; j < i; j++ {
			ands = append(ands, quoteIdent(key[j].name)+" = "+lit(j))
		}
		o := strict
		if i == len(key)-1 {
			o = op
		}
		ands = append(ands, quoteIdent(key[i].name)+" "+o+" "+lit(i))
		ors = append(ors, "("+strings.Join(ands, " AND ")+")")
	}
	return "(" + strings.Join(ors, " OR ") + ")", args
}
