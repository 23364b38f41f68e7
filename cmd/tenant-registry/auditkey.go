package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/tenant-registry/tenant-registry/domain"
)

// defaultAuditKeyFile is where the embedded default keeps the key it
// generates, beside its database, so that checkpoints signed before a
// restart still verify after it.
const defaultAuditKeyFile = "data/audit-signing.key"

// devAuditKeyName names the key the dev defaults generate.
const devAuditKeyName = "tenant-registry.localhost"

// checkpointSigner returns the signer of audit checkpoints: the key of
// AUDIT_SIGNING_KEY or AUDIT_SIGNING_KEY_FILE; on the embedded default, one
// generated once and kept under ./data; in dev with another database, one
// generated for this process. Elsewhere a key must be configured.
func checkpointSigner(cfg Config, log *slog.Logger) (*domain.CheckpointSigner, error) {
	skey := cfg.AuditSigningKey
	var err error
	switch {
	case skey != "":
	case cfg.AuditSigningKeyFile != "":
		if skey, err = readKeyFile(cfg.AuditSigningKeyFile); err != nil {
			return nil, fmt.Errorf("AUDIT_SIGNING_KEY_FILE: %w", err)
		}
	case cfg.DatabaseURL == "":
		if skey, err = keptKey(defaultAuditKeyFile); err != nil {
			return nil, fmt.Errorf("audit signing key %s: %w", defaultAuditKeyFile, err)
		}
	case cfg.Env == "dev":
		log.Warn("no AUDIT_SIGNING_KEY: audit checkpoints are signed with a key of this process only, which no one can check after a restart")
		if skey, _, err = domain.GenerateCheckpointKey(devAuditKeyName); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("AUDIT_SIGNING_KEY: is required with APP_ENV=%s (or AUDIT_SIGNING_KEY_FILE); make one with `tenant-registry audit keygen NAME`", cfg.Env)
	}
	signer, err := domain.NewCheckpointSigner(skey, cfg.AuditEarlierKeys...)
	if err != nil {
		name := "AUDIT_SIGNING_KEY"
		if cfg.AuditSigningKey == "" {
			name = "AUDIT_SIGNING_KEY_FILE"
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return signer, nil
}

func readKeyFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// keptKey reads the key at path, generating it first if there is none.
func keptKey(path string) (string, error) {
	skey, err := readKeyFile(path)
	if !errors.Is(err, os.ErrNotExist) {
		return skey, err
	}
	skey, _, err = domain.GenerateCheckpointKey(devAuditKeyName)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	// O_EXCL: of two processes starting at once, one key wins.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return readKeyFile(path)
	}
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := fmt.Fprintln(f, skey); err != nil {
		return "", err
	}
	return skey, f.Close()
}
