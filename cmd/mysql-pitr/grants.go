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

// grantsOptions are the settings of `mysql-pitr grants`, which prints the
// SQL that creates an account with the privileges some roles need.
type grantsOptions struct {
	log    cli.LogFlags
	role   string
	flavor string
	user   string
	output

	// Set by validate.
	roles   []preflight.Role
	flavorF binlog.Flavor
	account preflight.Account
}

func (o *grantsOptions) register(fs *flag.FlagSet) {
	o.log.Register(fs)
	fs.StringVar(&o.role, "role", "all", "what the account is for: streamer, logical, physical, restore, xtrabackup (a physical snapshot of MySQL with xtrabackup), "+
		"or all but xtrabackup (several: streamer,logical)")
	fs.StringVar(&o.flavor, "flavor", string(binlog.MariaDB), "server family: mariadb (10.6 and later) or mysql (8.0, 8.4)")
	fs.StringVar(&o.user, "user", "'pitr'@'%'", "the account, as 'user'@'host'")
}

// validate names the first bad setting.
func (o *grantsOptions) validate() (err error) {
	if err := o.log.Validate(); err != nil {
		return err
	}
	o.roles, o.flavorF, o.account, err = o.parse()
	return err
}

// parse returns the roles, the server family and the account the flags name.
func (o *grantsOptions) parse() (roles []preflight.Role, f binlog.Flavor, account preflight.Account, err error) {
	for _, r := range strings.Split(o.role, ",") {
		rs, err := preflight.ParseRole(r)
		if err != nil {
			return nil, "", account, cli.Usage(fmt.Errorf("--role: %w", err))
		}
		for _, r := range rs {
			if !slices.Contains(roles, r) {
				roles = append(roles, r)
			}
		}
	}
	f = binlog.Flavor(strings.ToLower(o.flavor))
	if f != binlog.MariaDB && f != binlog.MySQL {
		return nil, "", account, cli.Usage(fmt.Errorf("--flavor %q: want mariadb or mysql", o.flavor))
	}
	if account, err = preflight.ParseAccountName(o.user); err != nil {
		return nil, "", account, cli.Usage(fmt.Errorf("--user: %w", err))
	}
	return roles, f, account, nil
}

// run prints the SQL.
func (o *grantsOptions) run(context.Context) error {
	_, err := io.WriteString(o.stdout, preflight.Script(o.flavorF, o.roles, o.account))
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
