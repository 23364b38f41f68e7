package persistence

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect/pgdialect"
	"github.com/uptrace/bun/driver/pgdriver"

	"github.com/tenant-registry/tenant-registry/domain"
)

// The listener's timing. A heartbeat is a NOTIFY this process sends itself
// every heartbeatEvery, on a connection of its own with a deadline, and
// hears back on the listening connection: since PostgreSQL delivers
// notifications in commit order, hearing the one sent at t proves every
// change committed before t has been heard. The feed stops being current
// maxSilence after the last heartbeat heard was sent, whatever the
// listener is doing; a listening connection that hears no heartbeat for
// deadAfter is given up and opened anew.
const (
	heartbeatEvery   = 100 * time.Millisecond
	heartbeatTimeout = 300 * time.Millisecond
	maxSilence       = 500 * time.Millisecond
	deadAfter        = 2 * time.Second
	connectTimeout   = 2 * time.Second
	listenBackoff    = 250 * time.Millisecond
)

// listen starts the listener: it hears the changes every replica
// commits, heartbeats prove it hears them in time, and a watch logs when
// it stops and starts doing so.
func (d postgresDialect) listen(ctx context.Context, db *DB, running *sync.WaitGroup) {
	l := newListener(db, d.connector)
	running.Go(func() { l.run(ctx) })
	running.Go(func() { l.heartbeat(ctx) })
	running.Go(func() { l.watch(ctx) })
}

// listen has nothing to hear: every change to the file is committed by
// this process, and its feed is always current.
func (sqliteDialect) listen(context.Context, *DB, *sync.WaitGroup) {}

// listener feeds a replica's change feed with the changes every replica
// commits, heard through PostgreSQL LISTEN.
type listener struct {
	db        *DB
	connector *pgdriver.Connector // for the heartbeats' connection
	feed      *domain.ChangeFeed
	log       *slog.Logger
	ping      string    // this process's heartbeat channel
	start     time.Time // heartbeats carry their send time relative to it
}

func newListener(db *DB, connector *pgdriver.Connector) *listener {
	return &listener{
		db: db, connector: connector, feed: db.feed, log: db.log,
		// A channel of this process's own, so replicas do not hear each
		// other's heartbeats.
		ping:  "tenant_registry_ping_" + db.origin,
		start: time.Now(),
	}
}

// run listens until ctx ends, starting over whenever the connection is
// lost or falls silent.
func (l *listener) run(ctx context.Context) {
	for ctx.Err() == nil {
		err := l.session(ctx)
		l.feed.Lost()
		if ctx.Err() != nil {
			return
		}
		l.log.Warn("change listener lost; verifications read the database until it is back", "error", err)
		select {
		case <-ctx.Done():
		case <-time.After(listenBackoff):
		}
	}
}

// session listens on one connection until it fails or falls silent.
func (l *listener) session(ctx context.Context) error {
	ln := pgdriver.NewListener(l.db.bun)
	defer ln.Close()
	listenCtx, cancel := context.WithTimeout(ctx, connectTimeout)
	err := ln.Listen(listenCtx, changeChannel, legacyChannel, l.ping)
	cancel()
	if err != nil {
		return err
	}
	// Listening now: what was committed before is unknown.
	l.feed.Reset()
	heard := time.Now()
	var last domain.Change // the last change heard, to skip its legacy twin
	for {
		// The deadline bounds the reconnection pgdriver attempts by itself
		// after an error, which this session discards anyway.
		receiveCtx, cancel := context.WithTimeout(ctx, 2*heartbeatEvery)
		channel, payload, err := ln.ReceiveTimeout(receiveCtx, heartbeatEvery)
		cancel()
		var netErr net.Error
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.As(err, &netErr) && netErr.Timeout():
			if time.Since(heard) > deadAfter {
				return errors.New("no heartbeat heard for " + deadAfter.String())
			}
			continue
		case err != nil:
			return err
		}
		switch channel {
		case l.ping:
			if sent, err := strconv.ParseInt(payload, 10, 64); err == nil {
				heard = time.Now()
				l.feed.CurrentAsOf(l.start.Add(time.Duration(sent)))
			}
			last = domain.Change{}
		case changeChannel:
			if c, origin, ok := decodeChange(payload); ok {
				l.feed.Heard(c, origin == l.db.origin)
				last = c
			}
		case legacyChannel:
			// A replica of this version sends each change on both channels
			// in one transaction, so its legacy payload comes right after
			// the change: only one from an earlier replica is news.
			c, ok := decodeLegacy(payload)
			if ok && c.KeyHash == last.KeyHash && (c.KeyHash != "" || c.TenantID == last.TenantID) {
				ok = false
			}
			if ok {
				l.feed.Heard(c, false)
			}
			last = domain.Change{}
		}
	}
}

// heartbeat sends a heartbeat every heartbeatEvery until ctx ends, on a
// connection of its own: a pool saturated by slow queries must not delay
// it, nor can it wait on one for longer than heartbeatTimeout.
func (l *listener) heartbeat(ctx context.Context) {
	sqldb := sql.OpenDB(l.connector)
	sqldb.SetMaxOpenConns(1)
	conn := bun.NewDB(sqldb, pgdialect.New())
	defer conn.Close()
	tick := time.NewTicker(heartbeatEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		sent := strconv.FormatInt(int64(time.Since(l.start)), 10)
		pingCtx, cancel := context.WithTimeout(ctx, heartbeatTimeout)
		_, err := conn.ExecContext(pingCtx, "SELECT pg_notify(?, ?)", l.ping, sent)
		cancel()
		if err != nil && ctx.Err() == nil {
			// The listener's silence says what matters; this says why.
			l.log.Debug("change listener heartbeat failed", "error", err)
		}
	}
}

// watch logs when the feed stops and starts being current. It reads the
// clock and the feed only, so no blocked call can keep it from noticing.
func (l *listener) watch(ctx context.Context) {
	tick := time.NewTicker(heartbeatEvery)
	defer tick.Stop()
	current := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := l.feed.Current()
		switch {
		case now && !current:
			l.log.Info("change feed current: the key cache answers")
		case !now && current:
			l.log.Warn("change feed not current: verifications read the database", "max_silence", maxSilence)
		}
		current = now
	}
}
