// Command derivevalidate prints buf/validate/validate.proto back to source from the
// descriptor compiled into the pinned Go module
// buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go. No module or npm package
// ships that .proto source, so `make generate` derives it here; buf then compiles it to a
// descriptor identical to the original, and `git diff --exit-code` after generation proves
// the committed copy matches the pinned version.
//
// Usage: go run ./server/internal/tools/derivevalidate OUTPUT_DIR
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"github.com/jhump/protoreflect/desc"
	"github.com/jhump/protoreflect/desc/protoprint"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: derivevalidate OUTPUT_DIR")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "derivevalidate:", err)
		os.Exit(1)
	}
}

func run(outDir string) error {
	fd, err := desc.WrapFile(validate.File_buf_validate_validate_proto)
	if err != nil {
		return fmt.Errorf("wrap descriptor: %w", err)
	}
	printer := &protoprint.Printer{}
	target := filepath.Join(outDir, fd.GetName())
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	f, err := os.Create(target)
	if err != nil {
		return err
	}
	if err := printer.PrintProtoFile(fd, f); err != nil {
		f.Close()
		return fmt.Errorf("print %s: %w", fd.GetName(), err)
	}
	return f.Close()
}
