package archive

import (
	"errors"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// Sentinel errors name the kind of a failure; match them with errors.Is. Every error returned
// by this package, except a context error after cancellation, is an *Error whose Kind is one
// of them. All kinds but ErrIO blame the package's content.
var (
	// ErrUnsafePath reports an entry name that is absolute, climbs with "..", uses a
	// backslash or drive letter, is empty, holds a NUL byte, is too long, or would be written
	// through something that is not a directory of the package (a symlink or a file).
	ErrUnsafePath = errors.New("unsafe path")
	// ErrLinkEscape reports a symlink whose target is absolute or leaves the package, or a
	// hard link that does not name an earlier regular file of the package.
	ErrLinkEscape = errors.New("link escapes the package")
	// ErrUnsupportedType reports an entry that is not a regular file, a directory, a symlink
	// or a hard link (devices, FIFOs, old GNU sparse files, ...).
	ErrUnsupportedType = errors.New("unsupported entry type")
	// ErrDuplicateEntry reports a path that appears twice, or an entry that would replace
	// another one (a file where a directory already is, for example).
	ErrDuplicateEntry = errors.New("duplicate entry")
	// ErrTooLarge reports a package, a file, a manifest or an extracted total beyond Limits.
	ErrTooLarge = errors.New("too large")
	// ErrTooManyFiles reports a package with more entries than Limits.MaxFiles.
	ErrTooManyFiles = errors.New("too many entries")
	// ErrNoManifest reports a package without a regular plugin.json at its root.
	ErrNoManifest = errors.New("no plugin.json manifest")
	// ErrCorrupt reports input that is not a well-formed gzip-compressed tar archive.
	ErrCorrupt = errors.New("corrupt package")
	// ErrIO reports a failure of the host rather than of the package: reading the input,
	// writing the destination, or a destination that already exists.
	ErrIO = errors.New("i/o error")
)

// maxNameInMessage bounds how much of an entry name an error message quotes.
const maxNameInMessage = 200

// Error is a failure to read, extract or create a package. Its message names the offending
// entry as the archive spells it and never contains host paths, so it may be shown to the
// caller that supplied the package.
type Error struct {
	// Kind is one of the package's sentinel errors.
	Kind error
	// Entry is the entry name from the archive (or the file name relative to the source
	// directory, for Create); empty when the failure is not about one entry.
	Entry string
	// Reason explains the failure in a few words; it may be empty.
	Reason string
	// Err is the underlying cause, if any, stripped of host paths.
	Err error
}

// Error implements error.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("archive: ")
	if e.Entry != "" {
		b.WriteString("entry ")
		b.WriteString(quoteName(e.Entry))
		b.WriteString(": ")
	}
	if e.Kind != nil {
		b.WriteString(e.Kind.Error())
	} else {
		b.WriteString("error")
	}
	if e.Reason != "" {
		b.WriteString(": ")
		b.WriteString(e.Reason)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the kind and the cause, so that errors.Is matches either.
func (e *Error) Unwrap() []error {
	errs := make([]error, 0, 2)
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// newError returns an *Error of kind about entry.
func newError(kind error, entry, reason string) *Error {
	return &Error{Kind: kind, Entry: entry, Reason: reason}
}

// ioError returns an ErrIO *Error about entry. The cause loses any path it carries (those
// are host paths), keeping what matches with errors.Is (fs.ErrExist, syscall.ENOSPC, ...).
func ioError(entry, reason string, cause error) *Error {
	return &Error{Kind: ErrIO, Entry: entry, Reason: reason, Err: stripPath(cause)}
}

// stripPath removes the file names from the os package's error types.
func stripPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}

// quoteName quotes an entry name for a message, shortening a very long one.
func quoteName(name string) string {
	if len(name) > maxNameInMessage {
		return strconv.Quote(name[:maxNameInMessage]) + "..."
	}
	return strconv.Quote(name)
}
