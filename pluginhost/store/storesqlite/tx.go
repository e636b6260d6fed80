package storesqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

// tx is the store.Tx of one Read or Write. It is not safe for concurrent use: use it from
// the goroutine running the function it was passed to.
type tx struct {
	// ctx is the context of the Read or Write; every statement runs under it.
	ctx   context.Context
	sqlTx *sql.Tx
	// writable is false for Read transactions, whose write methods fail.
	writable bool
	// done is set when the function the tx was passed to returns; from then on every
	// method fails. Atomic so that a stray goroutine's late call is not a data race.
	done atomic.Bool
}

var _ store.Tx = (*tx)(nil)

// errReadOnly is returned by write methods of a Read transaction.
var errReadOnly = errors.New("write in a read-only transaction")

// use checks that the transaction may run operation op (a write when write is set).
func (t *tx) use(op string, write bool) error {
	if t.done.Load() {
		return fmt.Errorf("storesqlite: %s: transaction used after its function returned: %w", op, sql.ErrTxDone)
	}
	if write && !t.writable {
		return fmt.Errorf("storesqlite: %s: %w", op, errReadOnly)
	}
	return nil
}

// exec runs a statement and returns how many rows it changed.
func (t *tx) exec(op, query string, args ...any) (int64, error) {
	res, err := t.sqlTx.ExecContext(t.ctx, query, args...)
	if err != nil {
		return 0, wrap(op, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, wrap(op, err)
	}
	return n, nil
}

// wrap adds the operation to a driver error; a UNIQUE or PRIMARY KEY violation becomes
// store.ErrConflict (the driver error stays in the chain too).
func wrap(op string, err error) error {
	if isConstraintUnique(err) {
		return fmt.Errorf("storesqlite: %s: %w: %w", op, store.ErrConflict, err)
	}
	return fmt.Errorf("storesqlite: %s: %w", op, err)
}

// notFound returns store.ErrNotFound with what was looked for.
func notFound(what, key string) error {
	return fmt.Errorf("storesqlite: %s %q: %w", what, key, store.ErrNotFound)
}

// rowScanner is what *sql.Row and *sql.Rows have in common.
type rowScanner interface {
	Scan(dest ...any) error
}
