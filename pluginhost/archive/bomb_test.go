package archive_test

import (
	"archive/tar"
	"compress/gzip"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nexus-platform/nexus/pluginhost/archive"
)

// producer writes an uncompressed package to w, adding what it wrote to produced.
type producer func(w io.Writer, produced *atomic.Int64) error

// withTar adapts a producer that writes tar entries.
func withTar(write func(tw *tar.Writer, produced *atomic.Int64) error) producer {
	return func(w io.Writer, produced *atomic.Int64) error {
		tw := tar.NewWriter(w)
		if err := write(tw, produced); err != nil {
			return err
		}
		return tw.Close()
	}
}

// streamPackage returns a reader of a package that write produces on the fly, compressed at
// level, and a counter of the uncompressed bytes produced. The producer stops when the
// reader is closed, which happens when the test ends.
func streamPackage(t *testing.T, level int, write producer) (io.Reader, *atomic.Int64) {
	t.Helper()
	pr, pw := io.Pipe()
	var produced atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		zw, err := gzip.NewWriterLevel(pw, level)
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		if err := write(zw, &produced); err != nil {
			pw.CloseWithError(err)
			return
		}
		pw.CloseWithError(zw.Close())
	}()
	t.Cleanup(func() {
		_ = pr.Close() // stops the producer
		<-done
	})
	return pr, &produced
}

// writeZeros writes n zero bytes to w, counting them.
func writeZeros(w io.Writer, n int64, produced *atomic.Int64) error {
	chunk := make([]byte, 1<<20)
	for n > 0 {
		c := min(n, int64(len(chunk)))
		if _, err := w.Write(chunk[:c]); err != nil {
			return err
		}
		produced.Add(c)
		n -= c
	}
	return nil
}

func TestExtractDecompressionBombs(t *testing.T) {
	// Not parallel: it measures allocations.
	const gib = 1 << 30
	manifestHeader := func(tw *tar.Writer) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "plugin.json", Mode: 0o644, Size: int64(len(manifest))}); err != nil {
			return err
		}
		_, err := tw.Write([]byte(manifest))
		return err
	}
	tests := []struct {
		name  string
		level int
		lim   archive.Limits
		write producer
	}{{
		name:  "one file of 1 GiB of zeros",
		level: gzip.BestSpeed,
		lim:   archive.Limits{MaxFileBytes: 8 << 20},
		write: withTar(func(tw *tar.Writer, produced *atomic.Int64) error {
			if err := manifestHeader(tw); err != nil {
				return err
			}
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "zeros", Mode: 0o644, Size: gib}); err != nil {
				return err
			}
			return writeZeros(tw, gib, produced)
		}),
	}, {
		name:  "1 GiB of zeros in 1 MiB files",
		level: gzip.BestSpeed,
		lim:   archive.Limits{MaxTotalBytes: 8 << 20, MaxFileBytes: 2 << 20},
		write: withTar(func(tw *tar.Writer, produced *atomic.Int64) error {
			if err := manifestHeader(tw); err != nil {
				return err
			}
			for i := range 1024 {
				name := "zeros/" + string(rune('a'+i/26/26%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i%26))
				if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: 1 << 20}); err != nil {
					return err
				}
				if err := writeZeros(tw, 1<<20, produced); err != nil {
					return err
				}
			}
			return nil
		}),
	}, {
		name:  "endless compressed input",
		level: gzip.NoCompression,
		lim:   archive.Limits{MaxPackageBytes: 4 << 20},
		write: withTar(func(tw *tar.Writer, produced *atomic.Int64) error {
			if err := manifestHeader(tw); err != nil {
				return err
			}
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "noise", Mode: 0o644, Size: 200 << 20}); err != nil {
				return err
			}
			rng := rand.NewChaCha8([32]byte{2})
			chunk := make([]byte, 1<<20)
			for {
				_, _ = rng.Read(chunk)
				if _, err := tw.Write(chunk); err != nil {
					return err
				}
				produced.Add(int64(len(chunk)))
			}
		}),
	}, {
		name:  "endless chain of PAX headers",
		level: gzip.BestSpeed,
		lim:   archive.Limits{MaxTotalBytes: 1 << 20, MaxFiles: 64},
		write: func(w io.Writer, produced *atomic.Int64) error {
			// Metadata headers are no entries and carry no file data: only the bound on the
			// uncompressed stream stops them.
			rec := []byte(paxRecord("comment", strings.Repeat("a", 512<<10)))
			block := append(rawHeader("PaxHeaders/x", 'x', int64(len(rec))), padBlock(rec)...)
			for range 2048 {
				if _, err := w.Write(block); err != nil {
					return err
				}
				produced.Add(int64(len(block)))
			}
			return nil
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, produced := streamPackage(t, tc.level, tc.write)
			parent, dest := newDest(t)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := archive.Extract(t.Context(), r, dest, tc.lim)
			runtime.ReadMemStats(&after)
			assertArchiveError(t, err, archive.ErrTooLarge, parent)
			assertFailedCleanly(t, parent, dest)
			if p := produced.Load(); p > 64<<20 {
				t.Errorf("the producer made %d MiB before Extract gave up, want it to stop soon after the limit", p>>20)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
				t.Errorf("allocated %d MiB, want memory bounded by the limits", alloc>>20)
			}
		})
	}
}

func TestReadManifestBomb(t *testing.T) {
	// A package bigger than its limits fails ReadManifest too, without extracting.
	r, produced := streamPackage(t, gzip.BestSpeed, withTar(func(tw *tar.Writer, produced *atomic.Int64) error {
		for i := range 1024 {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "z" + string(rune('a'+i%26)) + string(rune('a'+i/26)), Mode: 0o644, Size: 1 << 20}); err != nil {
				return err
			}
			if err := writeZeros(tw, 1<<20, produced); err != nil {
				return err
			}
		}
		return nil
	}))
	_, _, err := archive.ReadManifest(r, archive.Limits{MaxTotalBytes: 4 << 20})
	assertArchiveError(t, err, archive.ErrTooLarge, "")
	if p := produced.Load(); p > 64<<20 {
		t.Errorf("the producer made %d MiB before ReadManifest gave up", p>>20)
	}
}
