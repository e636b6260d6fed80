package archive

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"
)

// Create writes a package holding the contents of srcDir, which must have a plugin.json at
// its root, to w. The output depends only on the names, contents, types and execute bits of
// the files: entries are written in lexical order, directories before their contents, with
// zero modification times, owners and group names, mode 0755 for directories and for files
// with any execute bit, 0644 for other files. Symlinks are kept and must follow the rules
// that Extract applies; other file types are refused. Errors are *Error values whose entry
// names are relative to srcDir.
func Create(w io.Writer, srcDir string) error {
	root, err := os.OpenRoot(srcDir)
	if err != nil {
		return ioError("", "opening the source directory", err)
	}
	defer func() { _ = root.Close() }() // read-only: nothing to lose
	info, err := root.Lstat(manifestName)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return newError(ErrNoManifest, "", "the source directory has no plugin.json")
	case err != nil:
		return ioError(manifestName, "reading the manifest", err)
	case !info.Mode().IsRegular():
		return newError(ErrNoManifest, manifestName, "manifest is not a regular file")
	}

	zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return ioError("", "starting compression", err)
	}
	tw := tar.NewWriter(zw)
	fsys := root.FS()
	err = fs.WalkDir(fsys, ".", func(name string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return ioError(name, "reading the source directory", err)
		case name == ".":
			return nil
		}
		return addEntry(tw, fsys, name, d)
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return ioError("", "writing the package", err)
	}
	if err := zw.Close(); err != nil {
		return ioError("", "writing the package", err)
	}
	return nil
}

// addEntry writes one file of the source directory to tw.
func addEntry(tw *tar.Writer, fsys fs.FS, name string, d fs.DirEntry) error {
	if _, err := cleanName(name); err != nil {
		return err
	}
	hdr := &tar.Header{Name: name, ModTime: time.Unix(0, 0)}
	var size int64
	switch d.Type() {
	case fs.ModeDir:
		hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, name+"/", 0o755
	case fs.ModeSymlink:
		target, err := fs.ReadLink(fsys, name)
		if err != nil {
			return ioError(name, "reading a symlink", err)
		}
		clean, _, err := checkSymlink(name, name, target)
		if err != nil {
			return err
		}
		hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, clean, 0o777
	case 0:
		info, err := d.Info()
		if err != nil {
			return ioError(name, "reading a file", err)
		}
		size = info.Size()
		hdr.Typeflag, hdr.Size, hdr.Mode = tar.TypeReg, size, int64(fileMode(int64(info.Mode().Perm())))
	default:
		return newError(ErrUnsupportedType, name, fmt.Sprintf("file mode %v", d.Type()))
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return ioError(name, "writing the package", err)
	}
	if hdr.Typeflag != tar.TypeReg {
		return nil
	}
	return copyFileTo(tw, fsys, name, size)
}

// copyFileTo writes the size bytes of the file name to tw.
func copyFileTo(tw *tar.Writer, fsys fs.FS, name string, size int64) error {
	f, err := fsys.Open(name)
	if err != nil {
		return ioError(name, "opening a file", err)
	}
	defer func() { _ = f.Close() }() // read-only: nothing to lose
	n, err := io.Copy(tw, io.LimitReader(f, size))
	if err != nil {
		return ioError(name, "packaging a file", err)
	}
	if n != size {
		return newError(ErrIO, name, "file changed while it was being packaged")
	}
	return nil
}
