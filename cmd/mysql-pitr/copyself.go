package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/mysql-pitr/mysql-pitr/internal/cli"
)

// runCopySelf copies this binary to a path, for the chart's init container
// that hands mysql-pitr to the server image's restore step: the image has no
// shell or cp, only this static binary.
func runCopySelf(args []string, stdout io.Writer) error {
	if len(args) != 1 || args[0] == "" {
		return cli.Usage(errors.New("copy-self: give the destination path"))
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("copy-self: %w", err)
	}
	src, err := os.Open(self)
	if err != nil {
		return fmt.Errorf("copy-self: %w", err)
	}
	defer src.Close()
	dst := args[0]
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".mysql-pitr-")
	if err != nil {
		return fmt.Errorf("copy-self: %w", err)
	}
	_, err = io.Copy(tmp, src)
	if err == nil {
		err = tmp.Chmod(0o755)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("copy-self to %s: %w", dst, err)
	}
	fmt.Fprintln(stdout, "copied", self, "to", dst)
	return nil
}
