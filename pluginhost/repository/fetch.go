package repository

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nexus-platform/nexus/pluginhost/errs"
)

// Defaults of Fetch.
const (
	// DefaultMaxPackageBytes is 64 MiB, the package size archive.DefaultLimits allows.
	DefaultMaxPackageBytes = 64 << 20
	// DefaultFetchTimeout bounds one download.
	DefaultFetchTimeout = 2 * time.Minute
)

// ErrDownloadTooLarge and ErrDownloadTimeout are the causes of the errors Fetch returns when a
// limit is hit; match them with errors.Is.
var (
	ErrDownloadTooLarge = errors.New("download too large")
	ErrDownloadTimeout  = errors.New("download timed out")
)

// Fetch downloads ref, resolved against the repository at baseURL, and returns its bytes.
//
// baseURL is a file://, http:// or https:// URL of either the index ("…/index.json": its last
// path element ends in ".json") or the repository directory (with or without a final slash);
// ref is a relative reference below that directory (the rules of Version.URL) or an absolute
// http(s) URL. Other schemes are refused, as is a file:// ref that leaves the repository
// directory, even through a symlink.
//
// At most maxBytes are read (a Content-Length beyond it only fails early), and the whole
// download, body included, must finish within timeout, so a server that trickles bytes fails
// by the deadline. A maxBytes or timeout of zero or less means DefaultMaxPackageBytes or
// DefaultFetchTimeout. HTTP redirects are followed (at most 10, to http(s) only).
//
// Errors are *errs.Error values with code errs.PluginInstallationFailed ("download exceeds N
// bytes", "download timed out after T", the HTTP status, ...), except that a cancelled ctx is
// returned as ctx.Err() wrapped.
func Fetch(ctx context.Context, baseURL, ref string, maxBytes int64, timeout time.Duration) ([]byte, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxPackageBytes
	}
	if timeout <= 0 {
		timeout = DefaultFetchTimeout
	}
	base, err := repositoryDir(baseURL)
	if err != nil {
		return nil, err
	}
	if err := checkRef(ref); err != nil {
		return nil, errs.New(errs.PluginInstallationFailed, "invalid package URL %q: %v", ref, err)
	}
	r, err := url.Parse(ref)
	if err != nil {
		return nil, errs.New(errs.PluginInstallationFailed, "invalid package URL %q", ref)
	}
	target := base.ResolveReference(r)

	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var data []byte
	switch target.Scheme {
	case "file":
		data, err = fetchFile(ctx, base, r, maxBytes)
	default:
		data, err = fetchHTTP(ctx, target, maxBytes)
	}
	if err != nil {
		return nil, limitError(parent, ctx, err, target, maxBytes, timeout)
	}
	return data, nil
}

// repositoryDir parses baseURL and returns the URL of the repository directory, with a final
// slash.
func repositoryDir(baseURL string) (*url.URL, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, errs.New(errs.PluginInstallationFailed, "invalid repository URL %q", baseURL)
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" {
			return nil, errs.New(errs.PluginInstallationFailed, "repository URL %q has no host", baseURL)
		}
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return nil, errs.New(errs.PluginInstallationFailed, "repository URL %q: file URLs must not name a host", baseURL)
		}
		if !strings.HasPrefix(u.Path, "/") {
			return nil, errs.New(errs.PluginInstallationFailed, "repository URL %q: file URLs must hold an absolute path", baseURL)
		}
	default:
		return nil, errs.New(errs.PluginInstallationFailed,
			"repository URL %q: unsupported scheme %q (use file, http or https)", baseURL, u.Scheme)
	}
	u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = "", false, "", ""
	if strings.HasSuffix(u.Path, ".json") {
		u.Path = path.Dir(u.Path)
		u.RawPath = ""
	}
	if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
		u.RawPath = ""
	}
	return u, nil
}

// fetchFile reads ref (relative, checked by checkRef) below the file:// directory base.
func fetchFile(ctx context.Context, base, ref *url.URL, maxBytes int64) ([]byte, error) {
	root, err := os.OpenRoot(filepath.FromSlash(base.Path))
	if err != nil {
		return nil, errs.Wrap(errs.PluginInstallationFailed, err, "repository directory %s cannot be opened", base.Path)
	}
	defer root.Close()
	// os.Root refuses names that leave the directory, through ".." or symlinks.
	f, err := root.Open(filepath.FromSlash(ref.Path))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, errs.New(errs.PluginInstallationFailed, "%s not found in the repository", ref.Path)
		}
		return nil, errs.Wrap(errs.PluginInstallationFailed, err, "%s cannot be read from the repository", ref.Path)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, errs.Wrap(errs.PluginInstallationFailed, err, "%s cannot be read from the repository", ref.Path)
	}
	if !fi.Mode().IsRegular() {
		return nil, errs.New(errs.PluginInstallationFailed, "%s is not a file", ref.Path)
	}
	if fi.Size() > maxBytes {
		return nil, ErrDownloadTooLarge
	}
	return readLimited(ctx, f, maxBytes)
}

func fetchHTTP(ctx context.Context, u *url.URL, maxBytes int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, errs.Wrap(errs.PluginInstallationFailed, err, "invalid URL %s", u.Redacted())
	}
	client := &http.Client{
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return errors.New("too many redirects")
			}
			if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
				return fmt.Errorf("redirect to unsupported scheme %q", req.URL.Scheme)
			}
			return nil
		},
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, errs.New(errs.PluginInstallationFailed, "%s answered HTTP %s", u.Redacted(), resp.Status)
	}
	if resp.ContentLength > maxBytes {
		return nil, ErrDownloadTooLarge
	}
	return readLimited(ctx, resp.Body, maxBytes)
}

// readLimited reads r to its end, failing with ErrDownloadTooLarge beyond maxBytes.
func readLimited(ctx context.Context, r io.Reader, maxBytes int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(&ctxReader{ctx: ctx, r: r}, maxBytes+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > maxBytes {
		return nil, ErrDownloadTooLarge
	}
	return data, nil
}

// limitError turns a failure of a download into the error Fetch returns.
func limitError(parent, ctx context.Context, err error, u *url.URL, maxBytes int64, timeout time.Duration) error {
	var e *errs.Error
	switch {
	case errors.Is(err, ErrDownloadTooLarge):
		return errs.Wrap(errs.PluginInstallationFailed, err, "download of %s exceeds %d bytes", u.Redacted(), maxBytes)
	case parent.Err() != nil:
		return fmt.Errorf("download of %s: %w", u.Redacted(), parent.Err())
	case ctx.Err() != nil:
		return errs.Wrap(errs.PluginInstallationFailed, ErrDownloadTimeout, "download of %s timed out after %s", u.Redacted(), timeout)
	case errors.As(err, &e):
		return e
	default:
		return errs.Wrap(errs.PluginInstallationFailed, err, "download of %s failed: %s", u.Redacted(), downloadFailure(err))
	}
}

// downloadFailure says what failed in a download that got no HTTP answer: the name lookup,
// the connection, TLS, or the transfer, in the admin's words. It never repeats the URL
// (net/http's errors quote it whole, credentials included).
func downloadFailure(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var (
		dnsErr     *net.DNSError
		hostErr    x509.HostnameError
		authErr    x509.UnknownAuthorityError
		invalidErr x509.CertificateInvalidError
		verifyErr  *tls.CertificateVerificationError
		recordErr  tls.RecordHeaderError
		opErr      *net.OpError
	)
	switch {
	case errors.As(err, &dnsErr):
		switch {
		case dnsErr.IsNotFound:
			return fmt.Sprintf("DNS: no such host %q", dnsErr.Name)
		case dnsErr.IsTimeout:
			return fmt.Sprintf("DNS: the lookup of %q timed out", dnsErr.Name)
		}
		return fmt.Sprintf("DNS: the lookup of %q failed: %s", dnsErr.Name, dnsErr.Err)
	case errors.As(err, &hostErr):
		return fmt.Sprintf("TLS: the server's certificate is not valid for %s", hostErr.Host)
	case errors.As(err, &authErr):
		return "TLS: the server's certificate is signed by an unknown authority"
	case errors.As(err, &invalidErr):
		return "TLS: the server's certificate is invalid: " + invalidErr.Error()
	case errors.As(err, &verifyErr):
		return "TLS: the server's certificate cannot be verified: " + verifyErr.Err.Error()
	case errors.Is(err, http.ErrSchemeMismatch):
		return "TLS: the server answered in plain HTTP to an https URL"
	case errors.As(err, &recordErr):
		return "TLS: the server did not answer in TLS"
	case errors.As(err, &opErr) && opErr.Op == "dial":
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			return fmt.Sprintf("connect: %s refused the connection", opErr.Addr)
		case opErr.Timeout():
			return fmt.Sprintf("connect: %s did not answer in time", opErr.Addr)
		}
		return fmt.Sprintf("connect: %v", opErr.Err)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.As(err, &opErr):
		return "the connection broke during the transfer: " + err.Error()
	}
	return err.Error()
}

// ctxReader fails reads once ctx is done, for readers (files) that do not watch it.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
