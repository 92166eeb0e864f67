package testbed

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	os.Exit(RunWithMariaDB(m, MariaDBOptions{ServerID: 100}))
}
