package persistence_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/persistence"
)

// schema is what must agree between the dialects: tables, their columns, and
// their unique keys (primary keys included).
type schema struct {
	Columns    map[string][]string
	UniqueKeys []string // "table(col,col)"
}

func readSchema(t *testing.T, db *persistence.DB) schema {
	t.Helper()
	ctx := context.Background()
	s := schema{Columns: map[string][]string{}}
	type pair struct{ Table, Col string }
	var cols []pair
	var uniques []string
	var err error
	if db.Dialect() == "pg" {
		err = db.Bun().NewRaw(`SELECT table_name AS "table", column_name AS col FROM information_schema.columns
			WHERE table_schema = 'public' AND table_name NOT LIKE 'bun\_%'
				AND table_name NOT IN (SELECT relname FROM pg_class WHERE relispartition)`).Scan(ctx, &cols)
		if err == nil {
			err = db.Bun().NewRaw(`SELECT t.relname || '(' || string_agg(a.attname, ',' ORDER BY a.attname) || ')'
				FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid JOIN pg_class ix ON ix.oid = i.indexrelid
				JOIN pg_namespace n ON n.oid = t.relnamespace
				JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ANY(i.indkey)
				WHERE i.indisunique AND n.nspname = 'public' AND t.relname NOT LIKE 'bun\_%' AND NOT t.relispartition
				GROUP BY t.relname, ix.relname`).Scan(ctx, &uniques)
		}
	} else {
		err = db.Bun().NewRaw(`SELECT m.name AS "table", c.name AS col FROM sqlite_master m, pragma_table_info(m.name) c
			WHERE m.type = 'table' AND m.name NOT LIKE 'bun\_%' ESCAPE '\' AND m.name NOT LIKE 'sqlite\_%' ESCAPE '\'`).Scan(ctx, &cols)
		if err == nil {
			var rows []struct{ Table, Idx, Col string }
			err = db.Bun().NewRaw(`SELECT m.name AS "table", l.name AS idx, i.name AS col
				FROM sqlite_master m, pragma_index_list(m.name) l, pragma_index_info(l.name) i
				WHERE m.type = 'table' AND l."unique" = 1 AND m.name NOT LIKE 'bun\_%' ESCAPE '\'`).Scan(ctx, &rows)
			byIdx := map[string][]string{}
			for _, r := range rows {
				byIdx[r.Table+"|"+r.Idx] = append(byIdx[r.Table+"|"+r.Idx], r.Col)
			}
			for k, c := range byIdx {
				slices.Sort(c)
				uniques = append(uniques, fmt.Sprintf("%s(%s)", strings.Split(k, "|")[0], strings.Join(c, ",")))
			}
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cols {
		s.Columns[c.Table] = append(s.Columns[c.Table], c.Col)
	}
	for _, c := range s.Columns {
		slices.Sort(c)
	}
	slices.Sort(uniques)
	s.UniqueKeys = uniques
	return s
}

// TestSchemasAgree keeps the two dialects' migrations describing the same
// schema: the same models and repositories serve both.
func TestSchemasAgree(t *testing.T) {
	lite := readSchema(t, testdb.MustOpen(t, "sqlite"))
	pg := readSchema(t, testdb.MustOpen(t, "postgres"))
	if len(lite.Columns) == 0 {
		t.Fatal("no tables found in the SQLite schema")
	}
	if fmt.Sprint(lite.Columns) != fmt.Sprint(pg.Columns) {
		t.Errorf("columns differ:\nsqlite:   %v\npostgres: %v", lite.Columns, pg.Columns)
	}
	if fmt.Sprint(lite.UniqueKeys) != fmt.Sprint(pg.UniqueKeys) {
		t.Errorf("unique keys differ:\nsqlite:   %v\npostgres: %v", lite.UniqueKeys, pg.UniqueKeys)
	}
	t.Logf("schema: %v; unique keys: %v", lite.Columns, lite.UniqueKeys)
}

// TestMigrateDownAndUp checks that every migration can be rolled back and
// applied again on both dialects.
func TestMigrateDownAndUp(t *testing.T) {
	testdb.Run(t, func(t *testing.T, db *persistence.DB) {
		ctx := context.Background()
		m, err := db.Migrator()
		if err != nil {
			t.Fatal(err)
		}
		for {
			pending, err := m.Pending(ctx)
			if err != nil {
				t.Fatal(err)
			}
			all, _ := m.Status(ctx)
			if len(pending) == len(all) {
				break
			}
			if _, err := m.Down(ctx); err != nil {
				t.Fatalf("down: %v", err)
			}
		}
		if _, err := m.Up(ctx); err != nil {
			t.Fatalf("up again: %v", err)
		}
		if pending, _ := m.Pending(ctx); len(pending) != 0 {
			t.Fatalf("pending after up: %v", pending)
		}
	})
}
