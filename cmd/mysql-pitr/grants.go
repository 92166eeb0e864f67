package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/go-sql-driver/mysql"

	"github.com/mysql-pitr/mysql-pitr/binlog"
	"github.com/mysql-pitr/mysql-pitr/internal/cli"
	"github.com/mysql-pitr/mysql-pitr/preflight"
)

// runGrants prints the SQL that creates an account with the privileges
// some roles need.
func runGrants(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var role, flavor, user string
	fs := flag.NewFlagSet("grants", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&role, "role", "all", "what the account is for: streamer, logical, physical, restore, xtrabackup (a physical snapshot of MySQL with xtrabackup), "+
		"or all but xtrabackup (several: streamer,logical)")
	fs.StringVar(&flavor, "flavor", string(binlog.MariaDB), "server family: mariadb (10.6 and later) or mysql (8.0, 8.4)")
	fs.StringVar(&user, "user", "'pitr'@'%'", "the account, as 'user'@'host'")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var roles []preflight.Role
	for _, r := range strings.Split(role, ",") {
		rs, err := preflight.ParseRole(r)
		if err != nil {
			return cli.Usage(fmt.Errorf("--role: %w", err))
		}
		for _, r := range rs {
			if !slices.Contains(roles, r) {
				roles = append(roles, r)
			}
		}
	}
	f := binlog.Flavor(strings.ToLower(flavor))
	if f != binlog.MariaDB && f != binlog.MySQL {
		return cli.Usage(fmt.Errorf("--flavor %q: want mariadb or mysql", flavor))
	}
	account, err := preflight.ParseAccountName(user)
	if err != nil {
		return cli.Usage(fmt.Errorf("--user: %w", err))
	}
	_, err = io.WriteString(stdout, preflight.Script(f, roles, account))
	return err
}

// preflightTarget checks that the account of a restore's target server
// holds what a restore needs, before anything is loaded.
func preflightTarget(ctx context.Context, cfg *mysql.Config) error {
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return fmt.Errorf("target server: %w", err)
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	err = preflight.Check(ctx, db, "", preflight.Restore)
	if err != nil && !errors.Is(err, preflight.ErrMissingPrivileges) {
		return fmt.Errorf("target server %s: %w", cfg.Addr, err)
	}
	return err
}
