package persistence

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/uptrace/bun/migrate"

	"github.com/tenant-registry/tenant-registry/migrations"
)

// Migrator applies the embedded migrations of the database's dialect.
type Migrator struct{ m *migrate.Migrator }

// Migrator returns the migrator for db's dialect.
func (db *DB) Migrator() (*Migrator, error) {
	ms := migrate.NewMigrations()
	if err := ms.Discover(db.dialect.migrations()); err != nil {
		return nil, fmt.Errorf("read embedded migrations: %w", err)
	}
	migrations.RegisterGo(ms)
	return &Migrator{m: migrate.NewMigrator(db.bun, ms, migrate.WithMarkAppliedOnSuccess(true))}, nil
}

// MigrationState is one migration and whether it has been applied.
type MigrationState struct {
	Name    string // the migration's timestamp
	Comment string // its descriptive name
	Applied bool
}

// Status lists every known migration, oldest first.
func (m *Migrator) Status(ctx context.Context) ([]MigrationState, error) {
	if err := m.m.Init(ctx); err != nil {
		return nil, err
	}
	ms, err := m.m.MigrationsWithStatus(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]MigrationState, len(ms))
	for i, mig := range ms {
		out[i] = MigrationState{Name: mig.Name, Comment: mig.Comment, Applied: mig.IsApplied()}
	}
	return out, nil
}

// Pending lists the migrations not applied yet.
func (m *Migrator) Pending(ctx context.Context) ([]MigrationState, error) {
	all, err := m.Status(ctx)
	if err != nil {
		return nil, err
	}
	var pending []MigrationState
	for _, s := range all {
		if !s.Applied {
			pending = append(pending, s)
		}
	}
	return pending, nil
}

// Up applies every pending migration and returns the names applied.
func (m *Migrator) Up(ctx context.Context) ([]string, error) {
	return m.run(ctx, func() (*migrate.MigrationGroup, error) { return m.m.Migrate(ctx) })
}

// Down rolls back the last group of applied migrations and returns their names.
func (m *Migrator) Down(ctx context.Context) ([]string, error) {
	return m.run(ctx, func() (*migrate.MigrationGroup, error) { return m.m.Rollback(ctx) })
}

func (m *Migrator) run(ctx context.Context, step func() (*migrate.MigrationGroup, error)) ([]string, error) {
	if err := m.m.Init(ctx); err != nil {
		return nil, err
	}
	// The lock keeps two replicas starting together from applying the same
	// migration twice.
	if err := m.m.Lock(ctx); err != nil {
		return nil, fmt.Errorf("another process is migrating this database (%w)", err)
	}
	defer m.m.Unlock(context.WithoutCancel(ctx)) //nolint:errcheck // best effort; a stale lock is reported by the next run
	group, err := step()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, mig := range group.Migrations {
		names = append(names, mig.Name+"_"+mig.Comment)
	}
	return names, nil
}

var migrationNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_]*$`)

// CreateMigration writes empty up and down SQL files named name, with one
// timestamp, under dir/postgres and dir/sqlite, and returns their paths.
func CreateMigration(dir, name string, now time.Time) ([]string, error) {
	if !migrationNamePattern.MatchString(name) {
		return nil, fmt.Errorf("migration name %q: use lower-case letters, digits and underscores", name)
	}
	base := now.UTC().Format("20060102150405") + "_" + name
	var paths []string
	for _, dialect := range []string{"postgres", "sqlite"} {
		for _, direction := range []string{"up", "down"} {
			path := filepath.Join(dir, dialect, base+".tx."+direction+".sql")
			body := fmt.Sprintf("-- %s migration %s (%s). Separate statements with a line --bun:split\n", dialect, name, direction)
			if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
				return nil, err
			}
			paths = append(paths, path)
		}
	}
	return paths, nil
}

// Behind returns how many migrations are not applied yet, without creating
// anything: a database the migrator never touched is an error.
func (m *Migrator) Behind(ctx context.Context) (int, error) {
	ms, err := m.m.MigrationsWithStatus(ctx)
	if err != nil {
		return 0, err
	}
	return len(ms.Unapplied()), nil
}
