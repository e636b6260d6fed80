// @connectrpc/connect's declarations name the fetch API type `HeadersInit`, which the DOM library
// declares but @types/node 20 does not (it declares Headers, Request, Response and fetch only).
// This build uses "types": ["node"] and no DOM library, so the missing global is declared here,
// exactly as Node's own Headers constructor accepts it. Compile-time only; nothing is emitted.
type HeadersInit = ConstructorParameters<typeof Headers>[0];
