package chart_test

import (
	"bufio"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestStaticBinary builds the binary the way the Dockerfile does and checks
// that it is static: the image has no libc, so a dynamically linked binary
// would not start.
func TestStaticBinary(t *testing.T) {
	out := filepath.Join(t.TempDir(), "mysql-pitr")
	cmd := exec.CommandContext(t.Context(), "go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=test", "-o", out, "./cmd/mysql-pitr")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	f, err := elf.Open(out)
	if err != nil {
		t.Fatalf("open binary: %v", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_INTERP:
			t.Error("binary has a PT_INTERP program header: it needs a dynamic loader")
		case elf.PT_DYNAMIC:
			t.Error("binary has a PT_DYNAMIC program header: it is dynamically linked")
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) != 0 {
		t.Errorf("binary imports libraries %v (err %v)", libs, err)
	}
	v, err := exec.CommandContext(t.Context(), out, "version").Output()
	if err != nil || strings.TrimSpace(string(v)) != "mysql-pitr test" {
		t.Errorf("%s version = %q, %v; want the version from -ldflags", out, v, err)
	}
}

// stage is one FROM … section of a Dockerfile.
type stage struct {
	from  string
	lines []string // instructions, continuation lines joined
}

// parseDockerfile splits a Dockerfile into stages, joining continuation
// lines and dropping comments.
func parseDockerfile(t *testing.T, name string) []stage {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, name))
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	defer f.Close()
	var stages []stage
	var cur strings.Builder
	flush := func() {
		l := strings.TrimSpace(cur.String())
		cur.Reset()
		if l == "" {
			return
		}
		if strings.EqualFold(strings.Fields(l)[0], "FROM") {
			stages = append(stages, stage{from: l})
			return
		}
		if len(stages) > 0 {
			stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, l)
		}
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(l), "#") {
			continue
		}
		if s, ok := strings.CutSuffix(l, `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(l)
		flush()
	}
	flush()
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return stages
}

func TestDockerfiles(t *testing.T) {
	tests := []struct {
		file string
		// wantBase matches the final stage's FROM image.
		wantBase *regexp.Regexp
	}{
		{"Dockerfile", regexp.MustCompile(`^(scratch|gcr\.io/distroless/static)`)},
		{"Dockerfile.physical", regexp.MustCompile(`.`)},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			stages := parseDockerfile(t, tc.file)
			if len(stages) < 2 {
				t.Fatalf("%d stages, want a builder and a final stage", len(stages))
			}
			builder := strings.Join(stages[0].lines, "\n")
			for _, w := range []string{"CGO_ENABLED=0", "-trimpath", "-s -w", "-X main.version="} {
				if !strings.Contains(builder, w) {
					t.Errorf("builder stage does not build with %s", w)
				}
			}
			if !strings.Contains(stages[0].from, "golang:1.26") {
				t.Errorf("builder stage is %q, want golang:1.26", stages[0].from)
			}
			final := stages[len(stages)-1]
			if base := strings.Fields(final.from)[1]; !tc.wantBase.MatchString(base) {
				t.Errorf("final stage is FROM %s, want %s", base, tc.wantBase)
			}
			var user, entrypoint string
			for _, l := range final.lines {
				f := strings.Fields(l)
				switch strings.ToUpper(f[0]) {
				case "USER":
					user = f[1]
				case "ENTRYPOINT":
					entrypoint = strings.TrimSpace(strings.TrimPrefix(l, f[0]))
				}
			}
			uid, _, _ := strings.Cut(user, ":")
			if n, err := strconv.Atoi(uid); err != nil || n == 0 {
				t.Errorf("final stage USER %q: want a numeric non-root uid (runAsNonRoot cannot check a name)", user)
			}
			if entrypoint != `["/mysql-pitr"]` {
				t.Errorf("final stage ENTRYPOINT %s, want [\"/mysql-pitr\"]", entrypoint)
			}
		})
	}
}
