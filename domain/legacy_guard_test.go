package domain

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestLegacyGuardBudget walks one guard through a sequence of slow-path
// attempts: a prefix may fail LegacyFailuresPerPrefix times per window,
// attempts still running count against it, a match or an attempt that
// got no answer gives its reservation back, and prefixes are independent.
func TestLegacyGuardBudget(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	type step struct {
		name   string
		op     string // "begin", "fail" (end, failed) or "give back" (end, not failed)
		prefix string
		at     time.Duration // after t0
		want   bool          // what begin answers
	}
	steps := []step{
		{"first guess", "begin", "bp_AAAAAAAA", 0, true},
		{"second, while the first runs", "begin", "bp_AAAAAAAA", 0, true},
		{"third", "begin", "bp_AAAAAAAA", time.Second, true},
		{"a fourth while three run", "begin", "bp_AAAAAAAA", time.Second, false},
		{"another prefix is not affected", "begin", "bp_BBBBBBBB", time.Second, true},
		{"the first fails", "fail", "bp_AAAAAAAA", 2 * time.Second, false},
		{"the second fails", "fail", "bp_AAAAAAAA", 2 * time.Second, false},
		{"the third is shed: its reservation comes back", "give back", "bp_AAAAAAAA", 2 * time.Second, false},
		{"so one more may try", "begin", "bp_AAAAAAAA", 3 * time.Second, true},
		{"and fails", "fail", "bp_AAAAAAAA", 3 * time.Second, false},
		{"three failures: refused", "begin", "bp_AAAAAAAA", 30 * time.Second, false},
		{"still refused at the end of the window", "begin", "bp_AAAAAAAA", LegacyFailureWindow - time.Nanosecond, false},
		{"a new window", "begin", "bp_AAAAAAAA", LegacyFailureWindow, true},
		{"the genuine key matches: given back", "give back", "bp_AAAAAAAA", LegacyFailureWindow, false},
		{"nothing counted for the match", "begin", "bp_AAAAAAAA", LegacyFailureWindow, true},
	}
	g := newLegacyGuard()
	for _, s := range steps {
		switch s.op {
		case "begin":
			if got := g.begin(s.prefix, t0.Add(s.at)); got != s.want {
				t.Errorf("%s: begin = %v, want %v", s.name, got, s.want)
			}
		case "fail":
			g.end(s.prefix, true)
		case "give back":
			g.end(s.prefix, false)
		}
	}
	if st := g.stats(); st.Refused != 3 {
		t.Errorf("refused %d verifications, want the 3 refused above", st.Refused)
	}
}

// TestLegacyGuardSheds fills every argon2 slot: as many verifications as
// there are slots may wait for one, the next is shed at once, a waiter
// whose caller gives up gets the caller's error, a waiter gets a slot that
// frees, and a waiter whose wait runs out is shed.
func TestLegacyGuardSheds(t *testing.T) {
	g := newLegacyGuard()
	g.maxWait = time.Hour // only a freed slot or the caller ends a wait here
	fill := func() {
		for len(g.slots) < cap(g.slots) {
			g.slots <- struct{}{}
		}
	}
	waitFor := func(n int64) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); g.waiting.Load() < n; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d waiters after 10 s, want %d", g.waiting.Load(), n)
			}
		}
	}
	fill()
	ctx, cancel := context.WithCancel(context.Background())
	waiters := make(chan error, cap(g.slots))
	for range cap(g.slots) {
		go func() {
			_, err := g.acquire(ctx)
			waiters <- err
		}()
	}
	waitFor(int64(cap(g.slots)))
	if _, err := g.acquire(context.Background()); !errors.Is(err, errLegacyBusy) {
		t.Fatalf("with every slot busy and %d waiting: %v, want it shed", cap(g.slots), err)
	}
	cancel()
	for range cap(g.slots) {
		if err := <-waiters; !errors.Is(err, context.Canceled) {
			t.Errorf("a waiter whose caller gave up: %v, want context.Canceled", err)
		}
	}

	go func() {
		release, err := g.acquire(context.Background())
		if err == nil {
			release()
		}
		waiters <- err
	}()
	waitFor(1)
	<-g.slots // one hash ends
	if err := <-waiters; err != nil {
		t.Errorf("a waiter when a slot freed: %v, want the slot", err)
	}

	fill()
	g.maxWait = time.Millisecond
	if _, err := g.acquire(context.Background()); !errors.Is(err, errLegacyBusy) {
		t.Errorf("a waiter whose wait ran out: %v, want it shed", err)
	}
	if st := g.stats(); st.Shed != 2 {
		t.Errorf("shed %d, want 2", st.Shed)
	}
}
