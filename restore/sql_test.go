package restore

import (
	"database/sql"
	"database/sql/driver"
)

func sqlOpen(c driver.Connector) *sql.DB { return sql.OpenDB(c) }
