package secrets_test

import "os"

// exampleDir returns a temporary directory for examples, which have no testing.T.
func exampleDir() (string, func()) {
	dir, err := os.MkdirTemp("", "secrets-example-*")
	if err != nil {
		return os.TempDir(), func() {}
	}
	return dir, func() { os.RemoveAll(dir) }
}
