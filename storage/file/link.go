package file

import "os"

// linkNoReplace publishes oldpath as newpath with link(2), which refuses an
// existing newpath atomically, then drops the old name. Once the link exists
// the object is published, so a failure to drop the old name is left to
// New's sweep of stale temporary files rather than reported.
func linkNoReplace(oldpath, newpath string) error {
	if err := os.Link(oldpath, newpath); err != nil {
		return err
	}
	_ = os.Remove(oldpath)
	return nil
}
