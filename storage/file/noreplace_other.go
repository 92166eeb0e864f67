//go:build !linux

package file

// renameNoReplace renames oldpath to newpath unless newpath exists, in which
// case the error wraps fs.ErrExist. Without renameat2 it links, which fails
// atomically when newpath exists.
func renameNoReplace(oldpath, newpath string) error {
	return linkNoReplace(oldpath, newpath)
}
