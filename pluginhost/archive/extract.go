package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Extract reads a package from r and unpacks it into dest, which must not exist yet; its
// parent must. It unpacks into a new temporary directory next to dest (".extract-*") and
// renames that to dest only when the whole package was read and found valid, so that on any
// error, cancellation included, nothing is left at dest and the temporary directory is
// removed. r is read to its end, so that Result.SHA256 covers all of it.
//
// Extract checks ctx before every read of r. Errors are *Error values (see the Err* kinds),
// except for a cancelled or expired ctx, which is returned wrapped.
//
// Two extractions racing for the same dest cannot both succeed: renaming onto a non-empty
// directory fails. An empty directory created at dest while Extract runs is replaced.
func Extract(ctx context.Context, r io.Reader, dest string, lim Limits) (res *Result, err error) {
	lim = lim.withDefaults()
	if dest == "" {
		return nil, newError(ErrIO, "", "no destination given")
	}
	dest = filepath.Clean(dest)
	if err := checkAbsent(dest); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dest), ".extract-*")
	if err != nil {
		return nil, ioError("", "creating a temporary directory", err)
	}
	defer func() {
		if err != nil {
			// Best effort: the error that matters is already being returned.
			_ = os.RemoveAll(tmp)
		}
	}()
	root, err := os.OpenRoot(tmp)
	if err != nil {
		return nil, ioError("", "opening the temporary directory", err)
	}
	sum, err := scan(ctx, r, lim, diskSink{root: root})
	if closeErr := root.Close(); err == nil && closeErr != nil {
		err = ioError("", "closing the temporary directory", closeErr)
	}
	if err != nil {
		return nil, err
	}
	if err := install(tmp, sum.strippedDir, dest); err != nil {
		return nil, err
	}
	return &Result{
		Manifest:    sum.manifest,
		SHA256:      sum.sha256,
		Size:        sum.size,
		Files:       sum.files,
		TotalBytes:  sum.total,
		StrippedDir: sum.strippedDir,
	}, nil
}

// checkAbsent returns an error unless nothing exists at dest.
func checkAbsent(dest string) error {
	_, err := os.Lstat(dest)
	switch {
	case err == nil:
		return &Error{Kind: ErrIO, Reason: "destination already exists", Err: fs.ErrExist}
	case !errors.Is(err, fs.ErrNotExist):
		return ioError("", "checking the destination", err)
	}
	return nil
}

// install moves the extracted tree, or its stripped top-level directory, from tmp to dest.
// On success tmp no longer exists.
func install(tmp, strippedDir, dest string) error {
	src := tmp
	if strippedDir != "" {
		src = filepath.Join(tmp, filepath.FromSlash(strippedDir))
	} else if err := os.Chmod(tmp, 0o755); err != nil { // os.MkdirTemp made it 0700
		return ioError("", "setting the mode of the temporary directory", err)
	}
	if err := checkAbsent(dest); err != nil {
		return err
	}
	if err := os.Rename(src, dest); err != nil {
		return ioError("", "moving the package into place", err)
	}
	if strippedDir != "" {
		// tmp is empty now; failing to remove it leaves an empty ".extract-*" directory.
		_ = os.Remove(tmp)
	}
	return nil
}

// diskSink writes entries below a root directory. Methods of os.Root never leave the root,
// which backs up the scanner's own checks.
type diskSink struct {
	root *os.Root
}

func (d diskSink) mkdir(name string) error {
	path := filepath.FromSlash(name)
	if err := d.root.Mkdir(path, 0o755); err != nil {
		return ioError(name, "creating a directory", err)
	}
	// The umask may have removed bits.
	if err := d.root.Chmod(path, 0o755); err != nil {
		return ioError(name, "setting the mode of a directory", err)
	}
	return nil
}

func (d diskSink) create(name string, mode fs.FileMode) (io.WriteCloser, error) {
	// O_EXCL also refuses to follow a symlink in the last element.
	f, err := d.root.OpenFile(filepath.FromSlash(name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, ioError(name, "creating a file", err)
	}
	if err := f.Chmod(mode); err != nil {
		_ = f.Close()
		return nil, ioError(name, "setting the mode of a file", err)
	}
	return &fileWriter{f: f, name: name}, nil
}

func (d diskSink) symlink(name, target string) error {
	if err := d.root.Symlink(filepath.FromSlash(target), filepath.FromSlash(name)); err != nil {
		return ioError(name, "creating a symlink", err)
	}
	return nil
}

func (d diskSink) copyFile(name, src string, mode fs.FileMode, size int64) (err error) {
	in, err := d.root.Open(filepath.FromSlash(src))
	if err != nil {
		return ioError(name, "opening the hard link target", err)
	}
	defer func() { _ = in.Close() }() // read-only: nothing to lose
	out, err := d.create(name, mode)
	if err != nil {
		return err
	}
	n, err := io.Copy(out, io.LimitReader(in, size+1))
	if closeErr := out.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		var ae *Error
		if errors.As(err, &ae) {
			return ae
		}
		return ioError(name, "copying the hard link target", err)
	}
	if n != size {
		return newError(ErrIO, name, fmt.Sprintf("hard link target changed size to %d bytes", n))
	}
	return nil
}

// fileWriter writes an extracted file and reports failures without host paths.
type fileWriter struct {
	f    *os.File
	name string
}

func (w *fileWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	if err != nil {
		return n, ioError(w.name, "writing a file", err)
	}
	return n, nil
}

func (w *fileWriter) Close() error {
	if err := w.f.Close(); err != nil {
		return ioError(w.name, "closing a file", err)
	}
	return nil
}
