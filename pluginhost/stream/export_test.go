package stream

// SessionSendBytes is sessionSendBytes, for the tests of the queue's bound.
const SessionSendBytes = sessionSendBytes

// RunControl is the bookkeeping of a session's delivery runs (startRun, runEnds,
// stopDeliveries), on a session of its own, for the tests of its rules.
type RunControl struct{ s *session }

func NewRunControl() RunControl { return RunControl{s: &session{}} }

func (r RunControl) Start(run func()) { r.s.startRun(run) }
func (r RunControl) Ends() bool       { return r.s.runEnds() }
func (r RunControl) Stop()            { r.s.stopDeliveries() }

// Running reports whether a run is going (or was started).
func (r RunControl) Running() bool {
	r.s.runMu.Lock()
	defer r.s.runMu.Unlock()
	return r.s.running
}
