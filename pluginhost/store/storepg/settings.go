package storepg

import (
	"errors"

	"github.com/jackc/pgx/v5"
)

// Setting implements store.Tx.
func (t *tx) Setting(key string) ([]byte, error) {
	const op = "setting"
	if err := t.use(op, false); err != nil {
		return nil, err
	}
	var v []byte
	err := t.queryRow(`SELECT value FROM settings WHERE key = $1`, key).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, notFound("setting", key)
	}
	if err != nil {
		return nil, wrap(op, err)
	}
	return v, nil
}

// PutSetting implements store.Tx.
func (t *tx) PutSetting(key string, value []byte) error {
	const op = "put setting"
	if err := t.use(op, true); err != nil {
		return err
	}
	_, err := t.exec(op, `INSERT INTO settings (key, value) VALUES ($1, $2)
	ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
	if err == nil {
		t.notify(noticeSetting + key)
	}
	return err
}
