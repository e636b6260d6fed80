package archive_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nexus-platform/nexus/pluginhost/archive"
)

func Example() {
	work, err := os.MkdirTemp("", "archive-example-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(work)

	// A plugin source tree.
	src := filepath.Join(work, "src")
	_ = os.MkdirAll(filepath.Join(src, "bin"), 0o755)
	_ = os.WriteFile(filepath.Join(src, "plugin.json"), []byte(`{"id":"analytics-plugin"}`), 0o644)
	_ = os.WriteFile(filepath.Join(src, "bin", "analytics-plugin"), []byte("#!/bin/sh\n"), 0o755)

	// Package it, check its manifest, then install it.
	var pkg bytes.Buffer
	if err := archive.Create(&pkg, src); err != nil {
		fmt.Println(err)
		return
	}
	manifest, _, err := archive.ReadManifest(bytes.NewReader(pkg.Bytes()), archive.DefaultLimits())
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("manifest: %s\n", manifest)

	dest := filepath.Join(work, "plugins", "analytics-plugin")
	_ = os.MkdirAll(filepath.Dir(dest), 0o755)
	res, err := archive.Extract(context.Background(), bytes.NewReader(pkg.Bytes()), dest, archive.DefaultLimits())
	if err != nil {
		fmt.Println(err)
		return
	}
	info, _ := os.Stat(filepath.Join(dest, "bin", "analytics-plugin"))
	fmt.Printf("files: %d, entry point mode: %v\n", res.Files, info.Mode())

	// A hostile package is refused, with an error that names the entry.
	_, err = archive.Extract(context.Background(), bytes.NewReader(evilPackage()), dest+"-evil", archive.DefaultLimits())
	fmt.Println(err)
	// Output:
	// manifest: {"id":"analytics-plugin"}
	// files: 2, entry point mode: -rwxr-xr-x
	// archive: entry "../../etc/cron.d/evil": unsafe path: name contains ".."
}

// evilPackage returns a package that tries to write outside its destination.
func evilPackage() []byte {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "../../etc/cron.d/evil", Mode: 0o644, Size: 5})
	_, _ = tw.Write([]byte("evil\n"))
	_ = tw.Close()
	_ = gz.Close()
	return buf.Bytes()
}
