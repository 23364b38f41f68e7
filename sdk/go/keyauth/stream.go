package keyauth

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	registryv1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
)

// Timing of the change stream. The registry sends a heartbeat every
// 200 ms: a stream silent for streamSilence is given up and opened anew,
// after a pause that grows from backoffMin to backoffMax while attempts
// fail.
const (
	streamSilence = time.Second
	backoffMin    = 50 * time.Millisecond
	backoffMax    = 2 * time.Second
	stateEvery    = 50 * time.Millisecond
)

// Run watches the registry's change stream until ctx ends, reconnecting
// whenever it ends, fails or falls silent, and returns nil then. While it
// runs and the stream is live the cache answers; otherwise every request
// asks the registry. Run it once per Verifier, beside the server.
func (v *Verifier) Run(ctx context.Context) error {
	if !v.running.CompareAndSwap(false, true) {
		return errors.New("keyauth: Run is running already")
	}
	defer v.running.Store(false)
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	var connected atomic.Bool
	go v.reportState(ctx, &connected)
	backoff := backoffMin
	for ctx.Err() == nil {
		beat, err := v.watch(ctx, &connected)
		v.vouched.Store(unvouched)
		if ctx.Err() != nil {
			break
		}
		if beat {
			backoff = backoffMin
		} else {
			backoff = min(2*backoff, backoffMax)
		}
		v.cfg.Logger.Debug("keyauth: change stream ended; reconnecting", "error", err, "after", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
	}
	v.vouched.Store(unvouched)
	return nil
}

// watch runs one change stream until it ends, fails or falls silent. beat
// says whether a heartbeat came: the registry was reached.
func (v *Verifier) watch(ctx context.Context, connected *atomic.Bool) (beat bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// A frozen connection blocks the call, and then Receive, with no
	// error: the stream is given up when nothing came for streamSilence.
	var heard atomic.Int64
	heard.Store(int64(time.Since(v.epoch)))
	go func() {
		tick := time.NewTicker(stateEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if time.Duration(int64(time.Since(v.epoch))-heard.Load()) > streamSilence {
					cancel()
					return
				}
			}
		}
	}()
	v.stats.connects.Add(1)
	stream, err := v.changes.WatchChanges(ctx, &registryv1.WatchChangesRequest{})
	if err != nil {
		return false, err
	}
	defer stream.Close()
	connected.Store(true)
	defer connected.Store(false)
	for stream.Receive() {
		heard.Store(int64(time.Since(v.epoch)))
		if v.apply(stream.Msg()) {
			beat = true
		}
	}
	if err := stream.Err(); err != nil {
		return beat, err
	}
	return beat, errors.New("the registry ended the change stream")
}

// apply applies one message of the stream; it reports whether it was a
// heartbeat.
func (v *Verifier) apply(m *registryv1.WatchChangesResponse) bool {
	switch {
	case m.GetHeartbeat() != nil:
		s := m.GetHeartbeat().GetStaleness()
		if s == nil || s.CheckValid() != nil {
			v.vouched.Store(unvouched) // the registry itself hears no changes now
			return true
		}
		v.vouched.Store(int64(time.Since(v.epoch) - s.AsDuration()))
		return true
	case m.GetChange() != nil:
		v.stats.changes.Add(1)
		c := m.GetChange()
		switch c.GetKind() {
		case registryv1.ChangeKind_CHANGE_KIND_API_KEY_CREATED:
			v.cache.forget("", "", true, false)
		case registryv1.ChangeKind_CHANGE_KIND_API_KEY_REVOKED, registryv1.ChangeKind_CHANGE_KIND_API_KEY_ROTATED,
			registryv1.ChangeKind_CHANGE_KIND_API_KEY_DISABLED, registryv1.ChangeKind_CHANGE_KIND_API_KEY_UPDATED:
			v.cache.forget(c.GetApiKeyId(), "", false, false)
		case registryv1.ChangeKind_CHANGE_KIND_API_KEY_ENABLED:
			// The key's DISABLED answers are cached by plaintext, not by id:
			// drop every refusal an enable can undo.
			v.cache.forget(c.GetApiKeyId(), "", false, true)
		case registryv1.ChangeKind_CHANGE_KIND_TENANT_FROZEN, registryv1.ChangeKind_CHANGE_KIND_ENTITLEMENT_REVOKED:
			v.cache.forget("", c.GetTenantId(), false, false)
		case registryv1.ChangeKind_CHANGE_KIND_TENANT_ACTIVATED, registryv1.ChangeKind_CHANGE_KIND_ENTITLEMENT_GRANTED,
			registryv1.ChangeKind_CHANGE_KIND_ENTITLEMENT_CHANGED:
			v.cache.forget("", c.GetTenantId(), false, true)
		case registryv1.ChangeKind_CHANGE_KIND_PRODUCT_CHANGED:
			// A product's limits changed for every tenant: any answer may
			// name them. Rare enough to forget all, still trusting the stream.
			v.cache.reset()
		default: // a kind of a newer registry: forget everything
			v.reset()
		}
	default: // a reset, or a message of a newer registry
		v.reset()
	}
	return false
}

// reset empties the cache, which answers again only after the next
// heartbeat.
func (v *Verifier) reset() {
	v.stats.resets.Add(1)
	v.vouched.Store(unvouched)
	v.cache.reset()
}

// reportState tracks the stream's state for Stats, the log and
// OnStreamState, until ctx ends.
func (v *Verifier) reportState(ctx context.Context, connected *atomic.Bool) {
	tick := time.NewTicker(stateEvery)
	defer tick.Stop()
	for {
		now := StreamDown
		switch {
		case ctx.Err() != nil:
		case v.Trusted():
			now = StreamLive
		case connected.Load():
			now = StreamStale
		}
		if was := StreamState(v.state.Swap(int32(now))); was != now {
			switch {
			case now == StreamLive:
				v.cfg.Logger.Info("keyauth: change stream live; the cache answers")
			case was == StreamLive:
				v.cfg.Logger.Warn("keyauth: change stream " + now.String() + "; every request asks the registry")
			}
			if v.cfg.OnStreamState != nil {
				v.cfg.OnStreamState(now)
			}
		}
		if ctx.Err() != nil {
			return
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}
