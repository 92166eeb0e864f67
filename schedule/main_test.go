package schedule

import (
	"os"
	"testing"

	"github.com/mysql-pitr/mysql-pitr/internal/testbed"
)

func TestMain(m *testing.M) { os.Exit(testbed.RunWithMariaDB(m, testbed.MariaDBOptions{})) }
