package storepg

import "time"

// Now implements store.ClockTx: the database server's clock, now (not the transaction's
// start).
func (t *tx) Now() (time.Time, error) {
	const op = "now"
	if err := t.use(op, false); err != nil {
		return time.Time{}, err
	}
	var now time.Time
	if err := t.queryRow(`SELECT clock_timestamp()`).Scan(&now); err != nil {
		return time.Time{}, wrap(op, err)
	}
	return now.UTC(), nil
}
