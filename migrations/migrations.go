// Package migrations embeds the SQL migrations of both dialects. Bun's
// migrator applies them; each dialect has its own folder with the same
// migration names, and a test keeps the resulting schemas equal.
package migrations

import (
	"embed"
	"io/fs"
)

//go:embed postgres/*.sql sqlite/*.sql
var files embed.FS

// Postgres holds the PostgreSQL migrations.
var Postgres = sub("postgres")

// SQLite holds the SQLite migrations.
var SQLite = sub("sqlite")

func sub(dir string) fs.FS {
	f, err := fs.Sub(files, dir)
	if err != nil {
		panic(err)
	}
	return f
}
