package storepg

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/nexus-platform/nexus/pluginhost/store"
)

// tx is the store.Tx of one Read or Write. It is not safe for concurrent use: use it from
// the goroutine running the function it was passed to.
type tx struct {
	// ctx is the context of the Read or Write; every statement runs under it.
	ctx  context.Context
	pgTx pgx.Tx
	// writable is false for Read transactions, whose write methods fail.
	writable bool
	// done is set when the function the tx was passed to returns; from then on every
	// method fails. Atomic so that a stray goroutine's late call is not a data race.
	done atomic.Bool
	// notices are the change feed's notifications to send before the commit (feed.go).
	notices []string
}

var _ store.Tx = (*tx)(nil)

// errReadOnly is returned by write methods of a Read transaction.
var errReadOnly = errors.New("write in a read-only transaction")

// uniqueViolation is the SQLSTATE of a UNIQUE or PRIMARY KEY violation.
const uniqueViolation = "23505"

// use checks that the transaction may run operation op (a write when write is set).
func (t *tx) use(op string, write bool) error {
	if t.done.Load() {
		return fmt.Errorf("storepg: %s: transaction used after its function returned: %w", op, pgx.ErrTxClosed)
	}
	if write && !t.writable {
		return fmt.Errorf("storepg: %s: %w", op, errReadOnly)
	}
	return nil
}

// exec runs a statement and returns how many rows it changed.
func (t *tx) exec(op, query string, args ...any) (int64, error) {
	tag, err := t.pgTx.Exec(t.ctx, query, args...)
	if err != nil {
		return 0, wrap(op, err)
	}
	return tag.RowsAffected(), nil
}

// queryRow runs a query returning at most one row.
func (t *tx) queryRow(query string, args ...any) pgx.Row {
	return t.pgTx.QueryRow(t.ctx, query, args...)
}

// list runs a query and scans every row with scan.
func list[T any](t *tx, op, query string, args []any, scan func(rowScanner) (T, error)) ([]T, error) {
	rows, err := t.pgTx.Query(t.ctx, query, args...)
	if err != nil {
		return nil, wrap(op, err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, wrap(op, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(op, err)
	}
	return out, nil
}

// wrap adds the operation to a database error; a UNIQUE or PRIMARY KEY violation becomes
// store.ErrConflict (the database error stays in the chain too).
func wrap(op string, err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == uniqueViolation {
		return fmt.Errorf("storepg: %s: %w: %w", op, store.ErrConflict, err)
	}
	return fmt.Errorf("storepg: %s: %w", op, err)
}

// notFound returns store.ErrNotFound with what was looked for.
func notFound(what, key string) error {
	return fmt.Errorf("storepg: %s %q: %w", what, key, store.ErrNotFound)
}

// conflict returns store.ErrConflict with what was written.
func conflict(what, key string) error {
	return fmt.Errorf("storepg: %s %q: %w", what, key, store.ErrConflict)
}

// rowScanner is what pgx.Row and pgx.Rows have in common.
type rowScanner interface {
	Scan(dest ...any) error
}
