// Command openapidoc writes the OpenAPI document the server serves (server/openapi) from the
// one gnostic's protoc-gen-openapi generated: `openapidoc GENERATED.yaml OUT.json`. `make
// generate` runs it after buf generate.
package main

import (
	"fmt"
	"os"

	"github.com/nexus-platform/nexus/server"
	"github.com/nexus-platform/nexus/server/openapi"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: openapidoc GENERATED.yaml OUT.json")
		os.Exit(2)
	}
	generated, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "openapidoc:", err)
		os.Exit(1)
	}
	var codes []openapi.ErrorCode
	for _, c := range server.ErrorCodes() {
		codes = append(codes, openapi.ErrorCode{Code: c.Code, HTTPStatus: c.HTTPStatus})
	}
	doc, err := openapi.Build(generated, codes)
	if err != nil {
		fmt.Fprintln(os.Stderr, "openapidoc:", err)
		os.Exit(1)
	}
	if err := os.WriteFile(os.Args[2], doc, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "openapidoc:", err)
		os.Exit(1)
	}
}
