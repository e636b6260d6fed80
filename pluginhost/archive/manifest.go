package archive

import (
	"context"
	"io"
	"io/fs"
)

// ReadManifest reads a package from r without extracting it and returns the raw content of
// its plugin.json, with the lower-case hex SHA-256 digest of the compressed input. It reads
// r to its end and applies every rule and limit that Extract applies, so a package that
// ReadManifest accepts is one that Extract accepts, host failures aside. Errors are *Error
// values (see the Err* kinds).
func ReadManifest(r io.Reader, lim Limits) (manifest []byte, sha256hex string, err error) {
	sum, err := scan(context.Background(), r, lim.withDefaults(), discardSink{})
	if err != nil {
		return nil, "", err
	}
	return sum.manifest, sum.sha256, nil
}

// discardSink accepts entries and keeps nothing; the scanner does all the checking.
type discardSink struct{}

func (discardSink) mkdir(string) error { return nil }

func (discardSink) create(string, fs.FileMode) (io.WriteCloser, error) {
	return nopWriteCloser{io.Discard}, nil
}

func (discardSink) symlink(string, string) error { return nil }

func (discardSink) copyFile(string, string, fs.FileMode, int64) error { return nil }

// nopWriteCloser adds a Close that does nothing to a Writer.
type nopWriteCloser struct {
	io.Writer
}

func (nopWriteCloser) Close() error { return nil }
