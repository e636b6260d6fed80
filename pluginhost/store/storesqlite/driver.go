package storesqlite

import (
	"context"
	"database/sql/driver"
	"fmt"
	"strings"

	"modernc.org/sqlite"
)

// lowerFunc is the SQL function, registered on every connection of a Store, that lowercases
// text with Go's Unicode rules (SQLite's own lower() only knows ASCII). It backs the
// case-insensitive log search.
const lowerFunc = "nexus_lower"

// connector opens connections of one Store through its own driver instance, so the SQL
// functions it registers reach only this package's connections and nothing is registered
// process-wide. It holds no mutable state.
type connector struct {
	drv *sqlite.Driver
	dsn string
}

// Connect implements driver.Connector.
func (c connector) Connect(ctx context.Context) (driver.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return c.drv.Open(c.dsn)
}

// Driver implements driver.Connector.
func (c connector) Driver() driver.Driver { return c.drv }

// newDriver returns a modernc.org/sqlite driver with this package's SQL functions.
func newDriver() (*sqlite.Driver, error) {
	drv := &sqlite.Driver{}
	if err := drv.RegisterDeterministicScalarFunction(lowerFunc, 1, lower); err != nil {
		return nil, fmt.Errorf("register %s: %w", lowerFunc, err)
	}
	return drv, nil
}

// lower implements nexus_lower(text): NULL stays NULL, blobs are read as UTF-8.
func lower(_ *sqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
	switch v := args[0].(type) {
	case nil:
		return nil, nil
	case string:
		return strings.ToLower(v), nil
	case []byte:
		return strings.ToLower(string(v)), nil
	default:
		return nil, fmt.Errorf("%s: want text, got %T", lowerFunc, v)
	}
}
