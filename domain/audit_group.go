package domain

import (
	"context"
	"sync"
	"time"
)

// auditGroup combines concurrent single appends into shared transactions
// (group commit): while one transaction commits, the events that arrive
// wait, and go together in the next, whichever logs they belong to (the
// audit log appends to many logs in about the statements of one). Each
// caller still hears of its own event only once the transaction holding
// it committed. When a shared transaction fails, each of its events is
// appended again in a transaction of its own, so an error belongs to the
// event that caused it and no other event is lost to it.
//
// At most one goroutine commits at a time, started by the first event to
// find none running; batches are at most MaxAuditBatch events.
//
// Callers a transaction answered often append again at once (a product
// that records as it works, at a steady concurrency). Were the next
// transaction to start with only those that waited meanwhile, the callers
// coming back would wait for the one after it, and the appends in flight
// would settle into two halves taking turns. So after a transaction the
// committer waits, for at most half as long as that transaction took (and
// maxAuditLinger), until as many appends are pending as it answered and
// found waiting: the appends in flight share one transaction, twice the
// size, while the database would otherwise have been idle. A lone caller
// that comes back starts its transaction on arrival, and one that does
// not delays nobody.
type auditGroup struct {
	store Store

	mu      sync.Mutex
	pending []*pendingAppend
	running bool
	arrived chan struct{} // told, without waiting, of each append that joins; made with the first
}

type pendingAppend struct {
	ctx   context.Context
	event *AuditEvent
	done  chan error // buffered: the committer never waits on a caller
}

// append appends e, sharing a transaction with the appends in flight,
// and returns once it is committed, refused, or ctx ends. An append whose
// ctx ended may still be committed: a retry with the same external id
// then returns the stored event.
func (g *auditGroup) append(ctx context.Context, e *AuditEvent) error {
	p := &pendingAppend{ctx: ctx, event: e, done: make(chan error, 1)}
	g.mu.Lock()
	g.pending = append(g.pending, p)
	if g.arrived == nil {
		g.arrived = make(chan struct{}, 1)
	}
	arrived := g.arrived
	if !g.running {
		g.running = true
		go g.commitLoop()
	}
	g.mu.Unlock()
	select {
	case arrived <- struct{}{}:
	default: // the committer has a wake-up to find this one with already
	}
	select {
	case err := <-p.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// commitLoop commits the pending appends, a batch at a time, until none
// are left.
func (g *auditGroup) commitLoop() {
	expected, linger := 0, time.Duration(0)
	for {
		batch := g.next(expected, linger)
		if batch == nil {
			return
		}
		start := time.Now()
		if !g.commit(batch) {
			expected = 0 // each event went alone: no count to wait for
			continue
		}
		linger = min(time.Since(start)/2, maxAuditLinger)
		g.mu.Lock()
		expected = len(batch) + len(g.pending)
		g.mu.Unlock()
	}
}

// next takes the next batch once expected appends are pending, or linger
// has passed, or returns nil when none are pending then.
func (g *auditGroup) next(expected int, linger time.Duration) []*pendingAppend {
	g.mu.Lock()
	if len(g.pending) < min(expected, MaxAuditBatch) {
		timeout := time.NewTimer(linger)
		defer timeout.Stop()
	wait:
		for len(g.pending) < min(expected, MaxAuditBatch) {
			g.mu.Unlock()
			select {
			case <-g.arrived:
				g.mu.Lock()
			case <-timeout.C:
				g.mu.Lock()
				break wait
			}
		}
	}
	n := min(len(g.pending), MaxAuditBatch)
	if n == 0 {
		g.running = false
		g.mu.Unlock()
		return nil
	}
	batch := g.pending[:n:n]
	g.pending = g.pending[n:]
	g.mu.Unlock()
	return batch
}

// maxAuditLinger bounds the wait after a transaction, so that one slowed
// by the database (a lock, a stalled disk) does not make the next wait
// as long: a transaction of a few dozen events takes a few milliseconds.
const maxAuditLinger = 5 * time.Millisecond

// commit appends the batch's live events and answers their callers. It
// reports whether they went in one transaction (false when a shared one
// failed and each event went in its own).
func (g *auditGroup) commit(batch []*pendingAppend) bool {
	live := batch[:0]
	for _, p := range batch {
		if err := p.ctx.Err(); err != nil {
			p.done <- err // gave up while waiting: not appended
			continue
		}
		live = append(live, p)
	}
	if len(live) == 0 {
		return true
	}
	if len(live) > 1 {
		ctx, cancel := groupContext(live)
		events := make([]*AuditEvent, len(live))
		for i, p := range live {
			events[i] = p.event
		}
		// Record found each tenant before the event joined, and tenants
		// are never deleted: no need to read them again here.
		err := g.store.Atomically(ctx, func(r Repositories) error { return r.Audit().Append(ctx, events) })
		cancel()
		if err == nil {
			for _, p := range live {
				p.done <- nil
			}
			return true
		}
		for _, p := range live { // undo what the failed transaction set
			p.event.Seq, p.event.Hash = 0, ""
		}
	}
	for _, p := range live {
		p.done <- g.store.Atomically(p.ctx, func(r Repositories) error { return r.Audit().Append(p.ctx, []*AuditEvent{p.event}) })
	}
	return len(live) == 1
}

// groupContext is the shared transaction's context: the first caller's
// values, and the latest of the callers' deadlines, so that no caller's
// deadline cuts short the others' transaction. Every call has a deadline
// (the server's request timeout); without one, a minute bounds it.
func groupContext(batch []*pendingAppend) (context.Context, context.CancelFunc) {
	latest := time.Time{}
	for _, p := range batch {
		d, ok := p.ctx.Deadline()
		if !ok {
			d = time.Now().Add(time.Minute)
		}
		if d.After(latest) {
			latest = d
		}
	}
	return context.WithDeadline(context.WithoutCancel(batch[0].ctx), latest)
}
