package domain

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Disable disables key id, and the keys it created and theirs, until
// Enable: they verify as DISABLED, so that pausing a key pauses what it
// made. A key disabled on its own is returned unchanged, with no event;
// one disabled with a key it descends from is now disabled on its own as
// well, so that enabling that key leaves it disabled.
func (s *ApiKeyService) Disable(ctx context.Context, id, etag string) (*ApiKey, error) {
	return s.setDisabled(ctx, id, etag, true)
}

// Enable enables a disabled key again, with the keys disabled with it
// (not those disabled on their own, before or since). Enabling hands
// their powers out again, so the caller must hold their scopes, as for a
// rotation.
func (s *ApiKeyService) Enable(ctx context.Context, id, etag string) (*ApiKey, error) {
	return s.setDisabled(ctx, id, etag, false)
}

func (s *ApiKeyService) setDisabled(ctx context.Context, id, etag string, disable bool) (*ApiKey, error) {
	id, err := ParseID("id", id)
	if err != nil {
		return nil, err
	}
	action, kind := "api_key.enabled", ChangeKeyEnabled
	if disable {
		action, kind = "api_key.disabled", ChangeKeyDisabled
	}
	k, err := s.loadKey(ctx, id, action)
	if err != nil {
		return nil, err
	}
	a := tried(action, "u", "api_key", k.ID)
	var out *ApiKey
	err = s.store.Atomically(ctx, func(r Repositories) error {
		k, err := keyToChange(ctx, r, id, etag)
		if err != nil {
			return err
		}
		if !k.RevokeTime.IsZero() {
			return Errorf(KindFailedPrecondition, "API key %s is revoked; a revocation cannot be undone", k.ID)
		}
		out = k
		now := s.now()
		switch {
		case disable && !k.DisableTime.IsZero() && k.DisabledWith != "":
			// Disabled with a key it descends from, now disabled on its
			// own as well: enabling that key leaves it disabled.
			// So are the keys it made that were disabled with that key.
			with := k.DisabledWith
			k.DisabledWith, k.UpdateTime = "", now
			if err := r.ApiKeys().Update(ctx, k); err != nil {
				return err
			}
			descendants, err := r.ApiKeys().Descendants(ctx, k.ID)
			if err != nil {
				return err
			}
			ids := make([]string, len(descendants))
			for i, d := range descendants {
				ids[i] = d.ID
			}
			if err := r.ApiKeys().MoveDisabled(ctx, ids, with, k.ID); err != nil {
				return err
			}
			c := keyChange(k, action, "u", "API key disabled on its own; it was disabled with the key that created it, or one of its creators")
			c.Fields = map[string]string{"disabled_with": with}
			return recordChange(ctx, r, now, c)
		case disable == !k.DisableTime.IsZero():
			return r.Invalidations().Repeat(ctx, staleKey(k, kind)) // already so: a safe retry
		}
		if !disable {
			// Enabling hands the key out again: check it as it is now, in
			// this transaction, and record a refusal once it rolled back.
			if why := handOutRefusal(CallerFrom(ctx).Principal, k.TenantID, k.Scopes, k.ExpireTime); why != "" {
				return &handOutRefused{k.TenantID, why}
			}
		}
		k.DisableTime, k.DisabledWith, k.UpdateTime = time.Time{}, "", now
		description := "API key enabled"
		if disable {
			k.DisableTime, description = now, "API key disabled"
		}
		if err := r.ApiKeys().Update(ctx, k); err != nil {
			return err
		}
		together, err := s.reachDescendants(ctx, r, k, disable, now)
		if err != nil {
			return err
		}
		if err := announceWith(ctx, r, k, together, kind); err != nil {
			return err
		}
		c := keyChange(k, action, "u", description)
		if len(together) > 0 {
			c.Description += fmt.Sprintf(" with %d keys it created, or their keys created", len(together))
			c.Fields = map[string]string{"descendants": strconv.Itoa(len(together))}
		}
		return recordChange(ctx, r, now, c)
	})
	if err != nil {
		return nil, s.refusedAfter(ctx, err, a)
	}
	return out, nil
}

// reachDescendants disables (or enables) with k the keys k created, and
// theirs: on disabling, those not disabled; on enabling, those disabled
// with k, each of which the caller must be able to hand out. It walks
// again until a walk finds nothing new, so that a key whose creation
// committed while this ran (its creator locked, then read as active) is
// reached too; after k is written no key it descends from can create
// one.
func (s *ApiKeyService) reachDescendants(ctx context.Context, r Repositories, k *ApiKey, disable bool, now time.Time) ([]*ApiKey, error) {
	p := CallerFrom(ctx).Principal
	seen := map[string]bool{}
	var reached []*ApiKey
	for {
		descendants, err := r.ApiKeys().Descendants(ctx, k.ID)
		if err != nil {
			return nil, err
		}
		var next []*ApiKey
		var ids []string
		for _, d := range descendants {
			if seen[d.ID] || disable && !d.DisableTime.IsZero() || !disable && d.DisabledWith != k.ID {
				continue
			}
			if !disable {
				if why := handOutRefusal(p, d.TenantID, d.Scopes, d.ExpireTime); why != "" {
					return nil, &handOutRefused{d.TenantID, why}
				}
			}
			seen[d.ID] = true
			next, ids = append(next, d), append(ids, d.ID)
		}
		if len(next) == 0 {
			return reached, nil
		}
		if disable {
			err = r.ApiKeys().DisableAll(ctx, ids, k.ID, now)
		} else {
			err = r.ApiKeys().EnableAll(ctx, ids, k.ID, now)
		}
		if err != nil {
			return nil, err
		}
		reached = append(reached, next...)
	}
}

// keyToChange locks key id in r, refusing it with Aborted when it changed
// since the caller read etag.
func keyToChange(ctx context.Context, r Repositories, id, etag string) (*ApiKey, error) {
	k, err := r.ApiKeys().GetForUpdate(ctx, id)
	if err != nil {
		return nil, err
	}
	if err := checkEtag(etag, k.Etag(), "API key"); err != nil {
		return nil, err
	}
	return k, nil
}

// UpdateApiKey is the input of ApiKeyService.Update: the fields Mask names
// change (name, scopes, expire_time, metadata), the others are ignored.
type UpdateApiKey struct {
	ID         string
	Name       string
	Scopes     []string
	ExpireTime time.Time // zero: it does not expire
	Metadata   map[string]string
	Mask       []string
	Etag       string
}

// apiKeyPaths are the fields UpdateApiKey may change.
var apiKeyPaths = []string{"name", "scopes", "expire_time", "metadata"}

// Update changes the fields of an active or disabled key its mask names.
// The key that results follows the rules of Create, whatever changes: no
// scope the caller does not hold, none of another kind of key, and, when a
// key calls, no expiry later than its own; a new expiry is in the future.
// A change of anything verification answers (scopes, expiry, metadata) is
// felt everywhere as a revocation is.
func (s *ApiKeyService) Update(ctx context.Context, in UpdateApiKey) (*ApiKey, error) {
	var v Violations
	id := checkID(&v, "id", in.ID)
	paths := checkMask(&v, in.Mask, apiKeyPaths, true)
	now := s.now()
	if paths["name"] {
		in.Name = checkName(&v, "name", in.Name, MaxKeyNameLen)
	}
	if paths["metadata"] {
		checkMetadata(&v, in.Metadata)
	}
	expire := s.store.StoredTime(in.ExpireTime) // compared with stored expiries
	if paths["expire_time"] && !expire.IsZero() && !expire.After(now) {
		v.Add("expire_time", "must be in the future")
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	k, err := s.loadKey(ctx, id, "api_key.updated")
	if err != nil {
		return nil, err
	}
	// The key after the update is handed out again: the caller must hold
	// every scope it will carry and not be outlived by it, whichever
	// fields change, as for a rotation.
	a := tried("api_key.updated", "u", "api_key", k.ID)
	scopes, expireAfter := k.Scopes, k.ExpireTime
	if paths["scopes"] {
		var v Violations
		if scopes = checkKeyScopes(&v, "scopes", k.TenantID, in.Scopes); v.Err() != nil {
			return nil, v.Err()
		}
	}
	if paths["expire_time"] {
		expireAfter = expire
	}
	if err := s.handsOut(ctx, k.TenantID, scopes, expireAfter, a); err != nil {
		return nil, err
	}
	checked := k
	var out *ApiKey
	err = s.store.Atomically(ctx, func(r Repositories) error {
		k, err := keyToChange(ctx, r, id, in.Etag)
		if err != nil {
			return err
		}
		switch st := k.StatusAt(s.now()); {
		case st != ApiKeyActive && st != ApiKeyDisabled:
			return Errorf(KindFailedPrecondition, "API key %s is %s and cannot change", k.ID, st)
		case !slices.Equal(k.Scopes, checked.Scopes) || !k.ExpireTime.Equal(checked.ExpireTime):
			// What the caller was checked against changed meanwhile.
			return Errorf(KindAborted, "API key %s changed during the update; read it again and retry", k.ID)
		}
		before := *k
		if paths["name"] {
			k.Name = in.Name
		}
		if paths["scopes"] {
			if err := productScopesExist(ctx, r, "scopes", scopes); err != nil {
				return err
			}
			k.Scopes = scopes
		}
		if paths["expire_time"] {
			k.ExpireTime = expire
		}
		if paths["metadata"] {
			k.Metadata = nonNil(in.Metadata)
		}
		out = k
		var changed []string
		for _, p := range apiKeyPaths {
			if paths[p] && !sameKeyField(p, &before, k) {
				changed = append(changed, p)
			}
		}
		if len(changed) == 0 { // nothing changes: no write, no event
			return r.Invalidations().Repeat(ctx, staleKey(k, ChangeKeyUpdated)) // a retry is felt here before it answers
		}
		k.UpdateTime = s.now()
		if err := r.ApiKeys().Update(ctx, k); err != nil {
			return err
		}
		if !slices.Equal(changed, []string{"name"}) { // verification answers all but the name
			if err := r.Invalidations().Announce(ctx, staleKey(k, ChangeKeyUpdated)); err != nil {
				return err
			}
		}
		c := keyChange(k, "api_key.updated", "u", "API key updated: "+strings.Join(changed, ", "))
		c.Fields = map[string]string{"changed": strings.Join(changed, ",")}
		if paths["scopes"] && !slices.Equal(before.Scopes, k.Scopes) {
			c.Fields["scopes_before"] = strings.Join(before.Scopes, " ")
		}
		return recordChange(ctx, r, k.UpdateTime, c)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func sameKeyField(path string, a, b *ApiKey) bool {
	switch path {
	case "name":
		return a.Name == b.Name
	case "scopes":
		return slices.Equal(a.Scopes, b.Scopes)
	case "expire_time":
		return a.ExpireTime.Equal(b.ExpireTime)
	case "metadata":
		return maps.Equal(a.Metadata, b.Metadata)
	}
	return true
}

// checkMask validates an update mask (AIP-134) against the paths an
// update knows, naming an unknown one, and returns the set it names. A nil
// mask is no mask: required says whether that is allowed.
func checkMask(v *Violations, mask, known []string, required bool) map[string]bool {
	if mask == nil {
		if required {
			v.Add("update_mask", "is required: name the fields to change (%s)", strings.Join(known, ", "))
		}
		return nil
	}
	out := map[string]bool{}
	for _, p := range mask {
		if !slices.Contains(known, p) {
			v.Add("update_mask", "%s is not a field this update changes; it changes %s", fmt.Sprintf("%.60q", p), strings.Join(known, ", "))
			continue
		}
		out[p] = true
	}
	return out
}
