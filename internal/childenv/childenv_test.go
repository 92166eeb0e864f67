package childenv

import (
	"slices"
	"strings"
	"testing"
)

func TestFilter(t *testing.T) {
	for _, c := range []struct {
		name string
		env  []string
		want []string
	}{
		{"keeps what tools need", []string{"PATH=/usr/bin", "HOME=/root", "TZ=UTC", "LANG=C.UTF-8", "TMPDIR=/tmp/x"},
			[]string{"PATH=/usr/bin", "HOME=/root", "TZ=UTC", "LANG=C.UTF-8", "TMPDIR=/tmp/x"}},
		{"MySQL password of the client tools", []string{"PATH=/usr/bin", "MYSQL_PWD=secret"}, []string{"PATH=/usr/bin"}},
		{"mysql-pitr's own variables", []string{"MYSQL_PITR_PASSWORD=secret", "MYSQL_PITR_TARGET_PASSWORD=secret",
			"MYSQL_PITR_DSN=pitr:secret@tcp(db:3306)/", "MYSQL_PITR_STORAGE=s3://b/p", "USER=root"}, []string{"USER=root"}},
		{"S3 credential chain", []string{"AWS_ACCESS_KEY_ID=AKIA", "AWS_SECRET_ACCESS_KEY=secret", "AWS_SESSION_TOKEN=secret",
			"AWS_WEB_IDENTITY_TOKEN_FILE=/var/run/token", "AWS_REGION=eu-west-1", "LC_ALL=C"}, []string{"LC_ALL=C"}},
		{"names that only look alike", []string{"MYSQL_PWD_HINT=x", "MYSQL_HOST=db", "XAWS_KEY=x", "MYSQL_PITRX=x"},
			[]string{"MYSQL_PWD_HINT=x", "MYSQL_HOST=db", "XAWS_KEY=x", "MYSQL_PITRX=x"}},
		{"an entry without a value", []string{"MYSQL_PWD", "PATH"}, []string{"PATH"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := Filter(c.env)
			if !slices.Equal(got, c.want) {
				t.Errorf("Filter(%q)\n got %q\nwant %q", c.env, got, c.want)
			}
		})
	}
}

func TestEnviron(t *testing.T) {
	t.Setenv("MYSQL_PITR_PASSWORD", "canary-environ")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "canary-environ")
	t.Setenv("MYSQL_PWD", "canary-environ")
	t.Setenv("CHILDENV_KEPT", "yes")
	env := Environ()
	for _, kv := range env {
		if strings.Contains(kv, "canary-environ") {
			t.Errorf("Environ() holds %s", kv)
		}
	}
	if !slices.Contains(env, "CHILDENV_KEPT=yes") {
		t.Error("Environ() dropped an ordinary variable")
	}
}
