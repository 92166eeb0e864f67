package snapshot

// layoutVersion is the version of the layout format this package writes.
// It reads every version from 1 up: version 2 added userDef.Rows and
// Sequences, which a loader of version 1 would not restore.
const layoutVersion = 2

// layout is the logical snapshot's table of contents, stored as
// layoutObject: everything the loader creates, in the order it creates it.
// It is written after every data object and before the manifest.
type layout struct {
	Version   int           `json:"version"`
	Databases []databaseDef `json:"databases"`
	// Sequences are created after the databases and before the tables,
	// whose columns may take their default from one.
	Sequences []sequenceDef `json:"sequences,omitempty"`
	Tables    []tableDef    `json:"tables"`
	// Views, Routines (packages included), Triggers and Events are created
	// after the data, in this order; Users last.
	Views    []objectDef `json:"views,omitempty"`
	Routines []objectDef `json:"routines,omitempty"`
	Triggers []objectDef `json:"triggers,omitempty"`
	Events   []objectDef `json:"events,omitempty"`
	Users    []userDef   `json:"users,omitempty"`
}

// databaseDef is a schema and its SHOW CREATE DATABASE statement.
type databaseDef struct {
	Name   string `json:"name"`
	Create string `json:"create"`
}

// sequenceDef is a MariaDB sequence: its definition and its state at the
// snapshot's position (see logical_sequences.go).
type sequenceDef struct {
	Schema string `json:"schema"`
	Name   string `json:"name"`
	// Create is SHOW CREATE SEQUENCE.
	Create string `json:"create"`
	// State is the sequence's row, column by column, as read while the
	// snapshot's position held.
	State map[string]string `json:"state"`
}

// tableDef is one table: its CREATE TABLE object and data chunks.
type tableDef struct {
	Schema string `json:"schema"`
	Name   string `json:"name"`
	// SchemaObject holds SHOW CREATE TABLE, AUTO_INCREMENT counter included.
	SchemaObject string `json:"schema_object"`
	// Columns are the dumped columns, in the order of the fields of a row;
	// generated columns are not dumped.
	Columns []columnDef `json:"columns"`
	Chunks  []chunkDef  `json:"chunks"`
	Rows    int64       `json:"rows"`
	// Digest is the rows' digest (DigestAlgorithm); empty in snapshots
	// taken before it was recorded.
	Digest string `json:"digest,omitempty"`
}

// Column encodings other than the plain text of the value.
const (
	// encodingBit: BIT columns are dumped as their unsigned integer value
	// (col+0), since LOAD DATA would read a BIT field's raw bytes as the
	// digits of a number.
	encodingBit = "bit"
	// encodingGeometry: spatial columns are dumped as the server's internal
	// value (4-byte little-endian SRID followed by WKB) and assigned from a
	// user variable, which the server accepts as it accepts it in INSERT.
	encodingGeometry = "geometry"
	// encodingJSON: MySQL's JSON type refuses values in the binary
	// character set; it is loaded through CONVERT(... USING utf8mb4).
	encodingJSON = "json"
)

// columnDef is one dumped column.
type columnDef struct {
	Name string `json:"name"`
	// Encoding is "" for the value's text, or one of the encoding constants.
	Encoding string `json:"encoding,omitempty"`
}

// chunkDef is one data object of a table.
type chunkDef struct {
	Object string `json:"object"`
	Rows   int64  `json:"rows"`
}

// Kinds of objectDef.
const (
	kindView      = "VIEW"
	kindProcedure = "PROCEDURE"
	kindFunction  = "FUNCTION"
	kindTrigger   = "TRIGGER"
	kindEvent     = "EVENT"
	// MariaDB's packages (sql_mode=ORACLE), created as routines are.
	kindPackage     = "PACKAGE"
	kindPackageBody = "PACKAGE BODY"
)

// objectDef is a view, routine, package, trigger or event: its SHOW CREATE statement
// and the session settings it must be created under.
type objectDef struct {
	Kind   string `json:"kind"`
	Schema string `json:"schema"`
	Name   string `json:"name"`
	Create string `json:"create"`
	// SQLMode, CharacterSetClient, CollationConnection and TimeZone are the
	// session settings the object was created with ("" when SHOW CREATE
	// does not report one).
	SQLMode             string `json:"sql_mode,omitempty"`
	CharacterSetClient  string `json:"character_set_client,omitempty"`
	CollationConnection string `json:"collation_connection,omitempty"`
	TimeZone            string `json:"time_zone,omitempty"`
}

// userDef is an account or role with its CREATE statement and grants, or,
// for an account the server ignores, its rows in the grant tables.
type userDef struct {
	User string `json:"user"`
	Host string `json:"host"`
	Role bool   `json:"role,omitempty"`
	// Create is SHOW CREATE USER (password hash included) or CREATE ROLE;
	// empty for MariaDB's PUBLIC, which every server has.
	Create string `json:"create"`
	// Grants is SHOW GRANTS FOR the account, role memberships and default
	// roles included.
	Grants []string `json:"grants"`
	// Rows, set instead of Create and Grants for an account the server
	// has not loaded (accountIgnored), are the account's rows in the
	// grant tables (grantTables), restored as they are.
	Rows []grantRow `json:"rows,omitempty"`
}

// grantRow is one row of a table of the mysql schema: its columns and
// their values as the server's bytes, nil for NULL (bytes, so that an
// authentication string that is not UTF-8 survives JSON).
type grantRow struct {
	Table   string   `json:"table"`
	Columns []string `json:"columns"`
	Values  [][]byte `json:"values"`
}
