package persistence

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"time"

	"github.com/uptrace/bun/driver/pgdriver"

	"github.com/tenant-registry/tenant-registry/domain"
)

// Heartbeat of the invalidation listener: it pings itself every
// listenPing and distrusts the feed after listenSilence without a word.
const (
	listenPing    = 200 * time.Millisecond
	listenSilence = 600 * time.Millisecond
	listenBackoff = 250 * time.Millisecond
)

// ListenInvalidations delivers the invalidations other replicas commit
// until ctx ends, and reports through trusted whether the feed works: false
// when its connection is lost or silent, true once it is back (a cache
// becoming trusted again flushes, since some may have been missed). On
// SQLite there is one process and it returns at once.
func (db *DB) ListenInvalidations(ctx context.Context, trusted func(bool), log *slog.Logger) {
	if db.Embedded {
		return
	}
	// A channel of this process's own carries its heartbeats, so replicas
	// do not hear each other's.
	ping := "tenant_registry_ping_" + domain.NewID()[24:]
	for ctx.Err() == nil {
		err := db.listen(ctx, ping, trusted)
		trusted(false)
		if ctx.Err() == nil {
			log.Warn("invalidation listener lost; verifications read the database until it is back", "error", err)
			select {
			case <-ctx.Done():
			case <-time.After(listenBackoff):
			}
		}
	}
}

func (db *DB) listen(ctx context.Context, ping string, trusted func(bool)) error {
	ln := pgdriver.NewListener(db.bun)
	defer ln.Close()
	if err := ln.Listen(ctx, invalidationChannel, ping); err != nil {
		return err
	}
	trusted(true) // the cache flushes on becoming trusted: what happened while away is unknown
	heard, pinged := time.Now(), time.Time{}
	for {
		if time.Since(pinged) >= listenPing {
			pinged = time.Now()
			if err := pgdriver.Notify(ctx, db.bun, ping, ""); err != nil {
				return err
			}
		}
		channel, payload, err := ln.ReceiveTimeout(ctx, listenPing)
		var netErr net.Error
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.As(err, &netErr) && netErr.Timeout():
			if time.Since(heard) > listenSilence {
				trusted(false) // silent: maybe dead; keep waiting for a ping
			}
			continue
		case err != nil:
			return err
		}
		heard = time.Now()
		trusted(true)
		if channel == invalidationChannel {
			if inv, ok := parseInvalidation(payload); ok {
				db.subs.deliver(inv)
			}
		}
	}
}
