package archive

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"strings"
)

const (
	// manifestName is the manifest's file name.
	manifestName = "plugin.json"
	// entryAllowance is what each entry may add to the uncompressed stream beyond its file
	// data: its header blocks, PAX or GNU long-name records, and padding.
	entryAllowance = 16 << 10
	// streamAllowance is what the uncompressed stream may add beyond its entries: the end
	// marker and the record padding that tar tools write (up to 1 MiB with tar -b 2048).
	streamAllowance = 1 << 20
)

// sink receives the entries that scan accepts. Names are clean, slash-separated and relative
// to the package root; their parents have been made, as directories, before.
type sink interface {
	// mkdir creates a directory.
	mkdir(name string) error
	// create creates a regular file that the caller writes and closes.
	create(name string, mode fs.FileMode) (io.WriteCloser, error)
	// symlink creates a symlink to a checked target.
	symlink(name, target string) error
	// copyFile creates name as a copy of src, an earlier regular file of size bytes.
	copyFile(name, src string, mode fs.FileMode, size int64) error
}

// summary is what scan learns about a valid package.
type summary struct {
	manifest    []byte
	strippedDir string
	sha256      string
	size        int64
	files       int
	total       int64
}

// scan reads a package from r, checks every entry against the package's rules and lim, and
// hands the accepted ones to s. It reads r to its end, so that the digest covers it all.
func scan(ctx context.Context, r io.Reader, lim Limits, s sink) (summary, error) {
	in := &input{ctx: ctx, r: r, max: lim.MaxPackageBytes, hash: sha256.New()}
	sc := &scanner{lim: lim, sink: s, nodes: make(map[string]node)}
	sum, err := sc.run(in)
	if err != nil {
		return summary{}, sc.classify(in, err)
	}
	return sum, nil
}

// nodeKind is what a path of the package is.
type nodeKind uint8

const (
	kindImplicitDir nodeKind = iota + 1 // a directory only implied by deeper names
	kindDir
	kindFile
	kindSymlink
)

// node is one path of the package.
type node struct {
	kind nodeKind
	mode fs.FileMode // of a file
	size int64       // of a file
}

// scanner holds the state of one scan; it is used by one goroutine.
type scanner struct {
	lim  Limits
	sink sink

	stream  *boundedReader  // the uncompressed stream
	current string          // name of the entry being read, for errors
	nodes   map[string]node // every path made so far, by clean name
	count   int             // entries and implied directories seen
	files   int
	total   int64

	topName     string // the first top-level name
	topCount    int    // how many top-level names there are
	rootLink    string // the first symlink whose target climbs to the root
	manifest    *capture
	wrapped     *capture // topName/plugin.json, in case topName wraps the package
	wrappedName string
}

// run reads the whole input.
func (sc *scanner) run(in *input) (summary, error) {
	zr, err := gzip.NewReader(bufio.NewReaderSize(in, 64<<10))
	if err != nil {
		return summary{}, err
	}
	sc.stream = &boundedReader{
		r:   zr,
		max: sc.lim.MaxTotalBytes + int64(sc.lim.MaxFiles)*entryAllowance + streamAllowance,
	}
	tr := tar.NewReader(sc.stream)
	for {
		if err := in.ctx.Err(); err != nil {
			return summary{}, err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil && !(hdr != nil && errors.Is(err, tar.ErrInsecurePath)) {
			// tar.ErrInsecurePath comes with the header; the name checks below decide.
			return summary{}, err
		}
		sc.current = hdr.Name
		if err := sc.entry(hdr, tr); err != nil {
			return summary{}, err
		}
	}
	sc.current = ""
	if err := drainPadding(sc.stream); err != nil {
		if errors.Is(err, gzip.ErrHeader) { // what follows the last gzip member is not one
			return summary{}, &Error{Kind: ErrCorrupt, Reason: "data after the end of the gzip stream", Err: err}
		}
		return summary{}, err
	}
	manifest, stripped, err := sc.finish()
	if err != nil {
		return summary{}, err
	}
	return summary{
		manifest:    manifest,
		strippedDir: stripped,
		sha256:      hex.EncodeToString(in.hash.Sum(nil)),
		size:        in.n,
		files:       sc.files,
		total:       sc.total,
	}, nil
}

// entry checks one entry and hands it to the sink.
func (sc *scanner) entry(hdr *tar.Header, data io.Reader) error {
	if err := sc.countEntry(hdr.Name); err != nil {
		return err
	}
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil // PAX global metadata, nothing to extract
	}
	name, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink:
	default:
		return newError(ErrUnsupportedType, hdr.Name, typeName(hdr.Typeflag))
	}
	if name == "" {
		if hdr.Typeflag == tar.TypeDir {
			return nil // "./", the root itself
		}
		return newError(ErrUnsafePath, hdr.Name, "name denotes the package root")
	}
	if err := sc.makeParents(hdr.Name, name); err != nil {
		return err
	}
	if n, ok := sc.nodes[name]; ok {
		if hdr.Typeflag == tar.TypeDir && n.kind == kindImplicitDir {
			sc.nodes[name] = node{kind: kindDir}
			return nil
		}
		return newError(ErrDuplicateEntry, hdr.Name, "path already used by an earlier entry")
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := sc.sink.mkdir(name); err != nil {
			return err
		}
		sc.record(name, node{kind: kindDir})
		return nil
	case tar.TypeSymlink:
		return sc.symlink(hdr, name)
	case tar.TypeLink:
		return sc.hardLink(hdr, name)
	default:
		return sc.file(hdr, name, data)
	}
}

// countEntry counts an entry or an implied directory against MaxFiles.
func (sc *scanner) countEntry(entry string) error {
	sc.count++
	if sc.count > sc.lim.MaxFiles {
		return newError(ErrTooManyFiles, entry, fmt.Sprintf("more than %d entries", sc.lim.MaxFiles))
	}
	return nil
}

// makeParents makes the directories that name implies and that no entry made yet, and
// refuses a name below anything but a directory.
func (sc *scanner) makeParents(entry, name string) error {
	for i := strings.IndexByte(name, '/'); i >= 0; i = nextSlash(name, i) {
		parent := name[:i]
		n, ok := sc.nodes[parent]
		switch {
		case !ok:
			if err := sc.countEntry(entry); err != nil {
				return err
			}
			if err := sc.sink.mkdir(parent); err != nil {
				return err
			}
			sc.record(parent, node{kind: kindImplicitDir})
		case n.kind == kindSymlink:
			return newError(ErrUnsafePath, entry, fmt.Sprintf("parent %s is a symlink", quoteName(parent)))
		case n.kind == kindFile:
			return newError(ErrUnsafePath, entry, fmt.Sprintf("parent %s is a file", quoteName(parent)))
		}
	}
	return nil
}

// record notes a path that was made.
func (sc *scanner) record(name string, n node) {
	sc.nodes[name] = n
	if !strings.Contains(name, "/") {
		sc.topCount++
		if sc.topName == "" {
			sc.topName = name
		}
	}
}

// file extracts a regular file, counting the bytes actually copied.
func (sc *scanner) file(hdr *tar.Header, name string, data io.Reader) error {
	if err := sc.checkSize(hdr.Name, hdr.Size); err != nil {
		return err
	}
	capture := sc.manifestCapture(name)
	if capture != nil && name == manifestName && hdr.Size > sc.lim.MaxManifestBytes {
		return newError(ErrTooLarge, hdr.Name,
			fmt.Sprintf("manifest is larger than %d bytes", sc.lim.MaxManifestBytes))
	}
	mode := fileMode(hdr.Mode)
	w, err := sc.sink.create(name, mode)
	if err != nil {
		return err
	}
	var dst io.Writer = w
	if capture != nil {
		dst = io.MultiWriter(w, capture)
	}
	limit := min(sc.lim.MaxFileBytes, sc.lim.MaxTotalBytes-sc.total)
	n, err := io.Copy(dst, io.LimitReader(data, limit+1))
	closeErr := w.Close()
	switch {
	case err != nil:
		return err
	case closeErr != nil:
		return closeErr
	case n > limit:
		return sc.sizeError(hdr.Name, n)
	}
	sc.record(name, node{kind: kindFile, mode: mode, size: n})
	sc.files++
	sc.total += n
	return nil
}

// symlink checks and makes a symlink.
func (sc *scanner) symlink(hdr *tar.Header, name string) error {
	target, reachesRoot, err := checkSymlink(hdr.Name, name, hdr.Linkname)
	if err != nil {
		return err
	}
	if err := sc.sink.symlink(name, target); err != nil {
		return err
	}
	if reachesRoot && sc.rootLink == "" {
		sc.rootLink = hdr.Name
	}
	sc.record(name, node{kind: kindSymlink})
	return nil
}

// hardLink makes a copy of an earlier regular file.
func (sc *scanner) hardLink(hdr *tar.Header, name string) error {
	target, reason := splitClean(hdr.Linkname)
	if reason != "" {
		return newError(ErrLinkEscape, hdr.Name, "hard link target: "+reason)
	}
	src, ok := sc.nodes[target]
	if !ok || src.kind != kindFile {
		return newError(ErrLinkEscape, hdr.Name, fmt.Sprintf(
			"hard link target %s is not an earlier regular file of the package", quoteName(hdr.Linkname)))
	}
	if err := sc.checkSize(hdr.Name, src.size); err != nil {
		return err
	}
	if err := sc.sink.copyFile(name, target, src.mode, src.size); err != nil {
		return err
	}
	sc.record(name, node{kind: kindFile, mode: src.mode, size: src.size})
	sc.files++
	sc.total += src.size
	return nil
}

// checkSize refuses a file of size bytes before it is copied.
func (sc *scanner) checkSize(entry string, size int64) error {
	if size > sc.lim.MaxFileBytes || size > sc.lim.MaxTotalBytes-sc.total {
		return sc.sizeError(entry, size)
	}
	return nil
}

// sizeError explains which size limit a file of size bytes breaks.
func (sc *scanner) sizeError(entry string, size int64) error {
	if size > sc.lim.MaxFileBytes {
		return newError(ErrTooLarge, entry,
			fmt.Sprintf("file is larger than %d bytes", sc.lim.MaxFileBytes))
	}
	return newError(ErrTooLarge, entry,
		fmt.Sprintf("extracted files would exceed %d bytes", sc.lim.MaxTotalBytes))
}

// manifestCapture returns where to keep the content of name if it may be the manifest:
// plugin.json at the root, or in the first top-level directory in case that one wraps the
// whole package.
func (sc *scanner) manifestCapture(name string) *capture {
	switch {
	case name == manifestName:
		sc.manifest = &capture{max: sc.lim.MaxManifestBytes}
		return sc.manifest
	case sc.wrapped == nil && name == sc.topName+"/"+manifestName:
		sc.wrapped = &capture{max: sc.lim.MaxManifestBytes}
		sc.wrappedName = name
		return sc.wrapped
	}
	return nil
}

// finish finds the manifest once every entry was read, and decides whether a top-level
// directory is stripped.
func (sc *scanner) finish() (manifest []byte, strippedDir string, err error) {
	if _, ok := sc.nodes[manifestName]; ok {
		if sc.manifest == nil {
			return nil, "", newError(ErrNoManifest, manifestName, "manifest is not a regular file")
		}
		m, err := sc.manifest.bytes(manifestName)
		return m, "", err
	}
	if sc.topCount == 1 && sc.wrapped != nil {
		if sc.rootLink != "" {
			return nil, "", newError(ErrLinkEscape, sc.rootLink,
				"symlink target leaves the top-level directory that is stripped")
		}
		m, err := sc.wrapped.bytes(sc.wrappedName)
		if err != nil {
			return nil, "", err
		}
		return m, sc.topName, nil
	}
	return nil, "", newError(ErrNoManifest, "", "plugin.json is not at the root of the package")
}

// classify turns a failure of run into the error that scan returns.
func (sc *scanner) classify(in *input, err error) error {
	var ae *Error
	switch {
	case errors.As(err, &ae):
		return ae
	case in.ctxErr != nil:
		return fmt.Errorf("archive: reading the package stopped: %w", in.ctxErr)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("archive: reading the package stopped: %w", err)
	case in.exceeded:
		return newError(ErrTooLarge, "",
			fmt.Sprintf("package is larger than %d bytes", in.max))
	case sc.stream != nil && sc.stream.exceeded:
		return newError(ErrTooLarge, sc.current,
			fmt.Sprintf("uncompressed package is larger than %d bytes", sc.stream.max))
	case in.err != nil:
		return ioError("", "reading the package", in.err)
	case in.n == 0:
		return newError(ErrCorrupt, "", "empty input")
	}
	return &Error{Kind: ErrCorrupt, Entry: sc.current, Err: err}
}

// drainPadding reads the uncompressed stream after the tar end marker to its end, which
// also makes gzip check its trailer, and refuses anything but zeros.
func drainPadding(r io.Reader) error {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		for _, c := range buf[:n] {
			if c != 0 {
				return newError(ErrCorrupt, "", "data after the end of the tar archive")
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// typeName names a tar entry type for an error message.
func typeName(flag byte) string {
	switch flag {
	case tar.TypeChar:
		return "character device"
	case tar.TypeBlock:
		return "block device"
	case tar.TypeFifo:
		return "FIFO"
	case tar.TypeCont:
		return "contiguous file"
	case tar.TypeGNUSparse:
		return "GNU sparse file"
	}
	return fmt.Sprintf("type %q", string(rune(flag)))
}

// nextSlash returns the index of the next '/' in name after i, or -1.
func nextSlash(name string, i int) int {
	j := strings.IndexByte(name[i+1:], '/')
	if j < 0 {
		return -1
	}
	return i + 1 + j
}

// capture keeps the first max+1 bytes written to it; it never fails.
type capture struct {
	max  int64
	data []byte
}

func (c *capture) Write(p []byte) (int, error) {
	if room := c.max + 1 - int64(len(c.data)); room > 0 {
		c.data = append(c.data, p[:min(int64(len(p)), room)]...)
	}
	return len(p), nil
}

// bytes returns the captured manifest, or an error if it is beyond the limit.
func (c *capture) bytes(entry string) ([]byte, error) {
	if int64(len(c.data)) > c.max {
		return nil, newError(ErrTooLarge, entry,
			fmt.Sprintf("manifest is larger than %d bytes", c.max))
	}
	return c.data, nil
}

// input reads the compressed package: it checks the context before every read, stops after
// max+1 bytes, and hashes and counts what it reads. It is used by one goroutine.
type input struct {
	ctx  context.Context
	r    io.Reader
	max  int64
	hash hash.Hash

	n        int64 // bytes read
	exceeded bool  // more than max bytes were offered
	ctxErr   error // the context's error, once it stopped a read
	err      error // the first error of r other than io.EOF
}

// errInputTooLarge stops the decompressor when the input exceeds its limit; classify turns
// it into ErrTooLarge.
var errInputTooLarge = errors.New("package too large")

func (in *input) Read(p []byte) (int, error) {
	if err := in.ctx.Err(); err != nil {
		in.ctxErr = err
		return 0, err
	}
	if in.exceeded {
		return 0, errInputTooLarge
	}
	if room := in.max + 1 - in.n; int64(len(p)) > room {
		p = p[:room]
	}
	n, err := in.r.Read(p)
	in.n += int64(n)
	if in.n > in.max {
		in.exceeded = true
		in.n = in.max
		return 0, errInputTooLarge
	}
	in.hash.Write(p[:n])
	if err != nil && !errors.Is(err, io.EOF) && in.err == nil {
		in.err = err
	}
	return n, err
}

// boundedReader fails once more than max bytes were read through it. It is used by one
// goroutine.
type boundedReader struct {
	r        io.Reader
	max      int64
	n        int64
	exceeded bool
}

// errStreamTooLarge stops the tar reader when the uncompressed stream exceeds its limit;
// classify turns it into ErrTooLarge.
var errStreamTooLarge = errors.New("uncompressed package too large")

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.exceeded {
		return 0, errStreamTooLarge
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	if b.n > b.max {
		b.exceeded = true
		return 0, errStreamTooLarge
	}
	return n, err
}
