package persistence_test

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/tenant-registry/tenant-registry/internal/testdb"
	"github.com/tenant-registry/tenant-registry/persistence"
)

// schema is what must agree between the dialects' migrations, as their
// catalogs describe it, in one form for both: every table's columns with
// their type family and nullability, and the tables' indexes (primary keys
// and partial ones included), foreign keys and CHECK constraints.
type schema struct {
	Columns     map[string]map[string]column // table → column
	Indexes     []string                     // "tenants (slug) unique", "api_keys (prefix) where hash like 'argon2id|%'"
	ForeignKeys []string                     // "api_keys (tenant_id) references tenants (id) on update no action on delete no action"
	Checks      []string                     // "tenants: status in 'trial', 'active', 'frozen'"
}

// column is a column as the comparison sees it.
type column struct {
	Family  string // see typeFamily
	NotNull bool
}

// typeFamily is the family of a column type as either catalog names it,
// so that PostgreSQL's text, varchar and SQLite's TEXT compare equal, as do
// integer, bigint and INTEGER. A type of no family stays itself, and so
// differs from everything but itself.
func typeFamily(t string) string {
	switch t = strings.ToLower(strings.TrimSpace(t)); {
	case t == "uuid":
		return "uuid"
	case t == "json" || t == "jsonb":
		return "json"
	case t == "boolean" || t == "bool":
		return "bool"
	case t == "bytea" || t == "blob":
		return "bytes"
	case t == "timestamp with time zone" || t == "timestamp" || t == "datetime":
		// PostgreSQL's timestamptz and SQLite's declared TIMESTAMP (which
		// Bun writes with an offset); PostgreSQL's timestamp without time
		// zone is of no family.
		return "timestamp"
	case strings.Contains(t, "int"): // SQLite's rule for INTEGER affinity; smallint to bigint
		return "integer"
	case strings.Contains(t, "char") || strings.Contains(t, "text") || strings.Contains(t, "clob"):
		return "text"
	case t == "real" || t == "double precision" || t == "numeric" || strings.HasPrefix(t, "float"):
		return "number"
	}
	return t
}

// sqliteStandIns are the PostgreSQL type families SQLite has no type for,
// and the family the SQLite migrations declare instead.
var sqliteStandIns = map[string]struct{ family, reason string }{
	"uuid": {"text", "SQLite has no uuid type: ids are stored as their canonical text"},
	"json": {"text", "SQLite has no JSON type (a declared JSON would get NUMERIC affinity): Bun writes maps and lists as JSON text"},
}

// sqliteNullablePrimaryKeys are the primary key columns the SQLite
// migrations declare without NOT NULL. Unlike PostgreSQL (and the SQL
// standard), SQLite lets the single-column TEXT PRIMARY KEY of a rowid
// table hold NULL, for compatibility with its early versions. No code
// writes NULL there: the models' fields are strings, never NULL. Declaring
// NOT NULL now means rebuilding these tables, and SQLite's procedure for
// rebuilding a table that others reference needs foreign keys enforced
// off, which cannot be switched inside the transaction a migration runs
// in. New tables declare NOT NULL; this list keeps them to it.
var sqliteNullablePrimaryKeys = []string{
	"api_keys.id", "audit_chain_heads.tenant_id", "audit_retention.tenant_id",
	"product_requests.id", "products.key", "tenants.id",
}

// sqliteUserTables excludes the migrator's own tables and SQLite's.
const sqliteUserTables = `m.type = 'table' AND m.name NOT LIKE 'bun\_%' ESCAPE '\' AND m.name NOT LIKE 'sqlite\_%' ESCAPE '\'`

// pgUserTables excludes the migrator's tables, and the partitions of the
// audit events, which are their parent table's.
const pgUserTables = `n.nspname = 'public' AND t.relkind IN ('r', 'p') AND t.relname NOT LIKE 'bun\_%' AND NOT t.relispartition`

func readPostgresSchema(t *testing.T, db *persistence.DB) schema {
	t.Helper()
	ctx := context.Background()
	scan := func(dest any, query string) {
		t.Helper()
		if err := db.Bun().NewRaw(query).Scan(ctx, dest); err != nil {
			t.Fatalf("read the PostgreSQL catalog: %v\n%s", err, query)
		}
	}
	s := schema{Columns: map[string]map[string]column{}}
	var cols []struct {
		Table, Col, Type string
		NotNull          bool
	}
	scan(&cols, `SELECT t.relname AS "table", a.attname AS col, format_type(a.atttypid, NULL) AS type, a.attnotnull AS not_null
		FROM pg_attribute a JOIN pg_class t ON t.oid = a.attrelid JOIN pg_namespace n ON n.oid = t.relnamespace
		WHERE `+pgUserTables+` AND a.attnum > 0 AND NOT a.attisdropped`)
	for _, c := range cols {
		addColumn(s.Columns, c.Table, c.Col, column{Family: typeFamily(c.Type), NotNull: c.NotNull})
	}
	var indexes []struct {
		Table, Cols, Pred         string
		Unique, Primary, HasExprs bool
	}
	scan(&indexes, `SELECT t.relname AS "table", i.indisunique AS "unique", i.indisprimary AS "primary",
			i.indexprs IS NOT NULL AS has_exprs, coalesce(pg_get_expr(i.indpred, i.indrelid), '') AS pred,
			(SELECT string_agg(a.attname, ',' ORDER BY k.ord) FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
				JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum) AS cols
		FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
		WHERE `+pgUserTables)
	for _, ix := range indexes {
		if ix.HasExprs {
			t.Fatalf("index on %s(%s) has expressions, which this test does not compare yet", ix.Table, ix.Cols)
		}
		s.Indexes = append(s.Indexes, indexText(ix.Table, ix.Cols, ix.Primary, ix.Unique, ix.Pred))
	}
	var fks []struct{ Table, Cols, Ref, RefCols, OnUpdate, OnDelete string }
	scan(&fks, `SELECT t.relname AS "table", r.relname AS ref, c.confupdtype AS on_update, c.confdeltype AS on_delete,
			(SELECT string_agg(a.attname, ',' ORDER BY k.ord) FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
				JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum) AS cols,
			(SELECT string_agg(a.attname, ',' ORDER BY k.ord) FROM unnest(c.confkey) WITH ORDINALITY AS k(attnum, ord)
				JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum) AS ref_cols
		FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid JOIN pg_class r ON r.oid = c.confrelid
			JOIN pg_namespace n ON n.oid = t.relnamespace
		WHERE c.contype = 'f' AND `+pgUserTables)
	// pg_constraint's action codes, in SQLite's words.
	actions := map[string]string{"a": "no action", "r": "restrict", "c": "cascade", "n": "set null", "d": "set default"}
	for _, fk := range fks {
		s.ForeignKeys = append(s.ForeignKeys, foreignKeyText(fk.Table, fk.Cols, fk.Ref, fk.RefCols, actions[fk.OnUpdate], actions[fk.OnDelete]))
	}
	var checks []struct{ Table, Def string }
	scan(&checks, `SELECT t.relname AS "table", pg_get_constraintdef(c.oid) AS def
		FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace
		WHERE c.contype = 'c' AND `+pgUserTables)
	for _, c := range checks {
		expr, ok := strings.CutPrefix(c.Def, "CHECK ")
		if !ok {
			t.Fatalf("check constraint of %s reads %q, not CHECK (...)", c.Table, c.Def)
		}
		s.Checks = append(s.Checks, c.Table+": "+canonicalExpr(expr))
	}
	return s.sorted()
}

func readSQLiteSchema(t *testing.T, db *persistence.DB) schema {
	t.Helper()
	ctx := context.Background()
	scan := func(dest any, query string, args ...any) {
		t.Helper()
		if err := db.Bun().NewRaw(query, args...).Scan(ctx, dest); err != nil {
			t.Fatalf("read the SQLite schema: %v\n%s", err, query)
		}
	}
	s := schema{Columns: map[string]map[string]column{}}
	var cols []struct {
		Table, Col, Type string
		NotNull          bool
	}
	scan(&cols, `SELECT m.name AS "table", c.name AS col, c.type AS type, c."notnull" AS not_null
		FROM sqlite_master m, pragma_table_info(m.name) c WHERE `+sqliteUserTables)
	for _, c := range cols {
		addColumn(s.Columns, c.Table, c.Col, column{Family: typeFamily(c.Type), NotNull: c.NotNull})
	}
	var indexes []struct {
		Table, Name, Origin string
		Unique, Partial     bool
	}
	scan(&indexes, `SELECT m.name AS "table", l.name AS name, l.origin AS origin, l."unique" AS "unique", l.partial AS partial
		FROM sqlite_master m, pragma_index_list(m.name) l WHERE `+sqliteUserTables)
	for _, ix := range indexes {
		var keyCols []struct {
			Name *string
		}
		scan(&keyCols, `SELECT name FROM pragma_index_info(?) ORDER BY seqno`, ix.Name)
		names := make([]string, len(keyCols))
		for i, c := range keyCols {
			if c.Name == nil {
				t.Fatalf("index %s of %s has expressions, which this test does not compare yet", ix.Name, ix.Table)
			}
			names[i] = *c.Name
		}
		pred := ""
		if ix.Partial {
			var sql []string
			scan(&sql, `SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?`, ix.Name)
			i := strings.LastIndex(strings.ToUpper(sql[0]), " WHERE ")
			if len(sql) != 1 || i < 0 {
				t.Fatalf("partial index %s: no WHERE in %q", ix.Name, sql)
			}
			pred = sql[0][i+len(" WHERE "):]
		}
		s.Indexes = append(s.Indexes, indexText(ix.Table, strings.Join(names, ","), ix.Origin == "pk", ix.Unique, pred))
	}
	var fks []struct {
		Table, Ref, From, To, OnUpdate, OnDelete string
		ID, Seq                                  int
	}
	scan(&fks, `SELECT m.name AS "table", f.id AS id, f.seq AS seq, f."table" AS ref, f."from" AS "from", f."to" AS "to",
			f.on_update AS on_update, f.on_delete AS on_delete
		FROM sqlite_master m, pragma_foreign_key_list(m.name) f WHERE `+sqliteUserTables+` ORDER BY m.name, f.id, f.seq`)
	// One row per column of a key: gather each key's columns, in order.
	type key struct{ table, ref, onUpdate, onDelete, from, to string }
	byID := map[string]*key{}
	for _, fk := range fks {
		id := fmt.Sprint(fk.Table, "|", fk.ID)
		k := byID[id]
		if k == nil {
			k = &key{table: fk.Table, ref: fk.Ref, onUpdate: strings.ToLower(fk.OnUpdate), onDelete: strings.ToLower(fk.OnDelete)}
			byID[id] = k
		} else {
			k.from, k.to = k.from+",", k.to+","
		}
		k.from, k.to = k.from+fk.From, k.to+fk.To
	}
	for _, k := range byID {
		s.ForeignKeys = append(s.ForeignKeys, foreignKeyText(k.table, k.from, k.ref, k.to, k.onUpdate, k.onDelete))
	}
	var tables []struct{ Name, SQL string }
	scan(&tables, `SELECT m.name AS name, m.sql AS sql FROM sqlite_master m WHERE `+sqliteUserTables)
	for _, tb := range tables {
		exprs, err := sqliteChecks(tb.SQL)
		if err != nil {
			t.Fatalf("table %s: %v", tb.Name, err)
		}
		for _, e := range exprs {
			s.Checks = append(s.Checks, tb.Name+": "+canonicalExpr(e))
		}
	}
	return s.sorted()
}

func addColumn(cols map[string]map[string]column, table, name string, c column) {
	if cols[table] == nil {
		cols[table] = map[string]column{}
	}
	cols[table][name] = c
}

func indexText(table, cols string, primary, unique bool, pred string) string {
	s := table + " (" + cols + ")"
	switch {
	case primary:
		s += " primary key"
	case unique:
		s += " unique"
	}
	if pred != "" {
		s += " where " + canonicalExpr(pred)
	}
	return s
}

func foreignKeyText(table, cols, ref, refCols, onUpdate, onDelete string) string {
	return fmt.Sprintf("%s (%s) references %s (%s) on update %s on delete %s", table, cols, ref, refCols, onUpdate, onDelete)
}

func (s schema) sorted() schema {
	slices.Sort(s.Indexes)
	slices.Sort(s.ForeignKeys)
	slices.Sort(s.Checks)
	return s
}

// The rewrites canonicalExpr makes, for the forms in which PostgreSQL
// prints back what the migrations say: casts of literals, LIKE as ~~, IN
// as = ANY (ARRAY[...]), BETWEEN as two comparisons, and parentheses
// everywhere.
var (
	castPattern    = regexp.MustCompile(`::(character varying|timestamp with time zone|[a-z_][a-z0-9_]*)(\[\])?`)
	anyPattern     = regexp.MustCompile(`(\w+) = any \(array\[([^\]]*)\]\)`)
	betweenPattern = regexp.MustCompile(`(\w+) between (\S+) and (\S+)`)
	spacePattern   = regexp.MustCompile(`\s+`)
	commaPattern   = regexp.MustCompile(`\s*,\s*`)
)

// canonicalExpr writes a CHECK expression or index predicate as either
// catalog gives it in one form: lower case outside string literals,
// without casts or parentheses, IN for = ANY, comparisons for BETWEEN.
func canonicalExpr(e string) string {
	e = lowerOutsideLiterals(e)
	e = castPattern.ReplaceAllString(e, "")
	e = strings.ReplaceAll(e, "!~~", "not like")
	e = strings.ReplaceAll(e, "~~", "like")
	e = anyPattern.ReplaceAllString(e, "$1 in ($2)")
	e = betweenPattern.ReplaceAllString(e, "$1 >= $2 and $1 <= $3")
	e = strings.NewReplacer("(", " ", ")", " ").Replace(e)
	e = commaPattern.ReplaceAllString(e, ", ")
	return strings.TrimSpace(spacePattern.ReplaceAllString(e, " "))
}

// lowerOutsideLiterals lower-cases s but for its '...' literals, whose
// case is part of what they say.
func lowerOutsideLiterals(s string) string {
	b := []byte(s)
	quoted := false
	for i, c := range b {
		switch {
		case c == '\'':
			quoted = !quoted
		case !quoted && c >= 'A' && c <= 'Z':
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// sqliteChecks returns the expressions of the CHECK constraints in a
// CREATE TABLE statement as SQLite keeps it (comments included), which no
// pragma lists.
func sqliteChecks(create string) ([]string, error) {
	var out []string
	code := stripSQLComments(create)
	quoted := false
	for i := 0; i < len(code); i++ {
		switch {
		case code[i] == '\'':
			quoted = !quoted
			continue
		case quoted, !strings.EqualFold(code[i:min(i+5, len(code))], "check"),
			i > 0 && isIdentByte(code[i-1]), i+5 < len(code) && isIdentByte(code[i+5]):
			continue
		}
		open := i + 5 + strings.IndexByte(code[i+5:], '(')
		if open < i+5 || strings.TrimSpace(code[i+5:open]) != "" {
			return nil, fmt.Errorf("CHECK at %d is not followed by (", i)
		}
		end, depth, inLiteral := -1, 0, false
		for k := open; k < len(code) && end < 0; k++ {
			switch c := code[k]; {
			case c == '\'':
				inLiteral = !inLiteral
			case inLiteral:
			case c == '(':
				depth++
			case c == ')':
				if depth--; depth == 0 {
					end = k
				}
			}
		}
		if end < 0 {
			return nil, fmt.Errorf("CHECK at %d has no closing parenthesis", i)
		}
		out = append(out, code[open+1:end])
		i = end
	}
	return out, nil
}

// stripSQLComments removes -- comments, outside string literals.
func stripSQLComments(sql string) string {
	var b strings.Builder
	quoted := false
	for i := 0; i < len(sql); i++ {
		switch {
		case sql[i] == '\'':
			quoted = !quoted
		case !quoted && strings.HasPrefix(sql[i:], "--"):
			for i < len(sql) && sql[i] != '\n' {
				i++
			}
		}
		if i < len(sql) {
			b.WriteByte(sql[i])
		}
	}
	return b.String()
}

func isIdentByte(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// TestSchemasAgree keeps the two dialects' migrations describing the same
// schema, since the same models and repositories serve both: the same
// tables and columns, column types of one family (or a stand-in SQLite
// has for a type it lacks) and nullability, and the same indexes, foreign
// keys and CHECK constraints.
func TestSchemasAgree(t *testing.T) {
	lite := readSQLiteSchema(t, testdb.MustOpen(t, "sqlite"))
	pg := readPostgresSchema(t, testdb.MustOpen(t, "postgres"))
	for name, s := range map[string]schema{"SQLite": lite, "PostgreSQL": pg} {
		// A query that reads nothing would agree with anything.
		if len(s.Columns) < 10 || len(s.Indexes) == 0 || len(s.ForeignKeys) == 0 || len(s.Checks) == 0 {
			t.Fatalf("the %s schema read as %d tables, %d indexes, %d foreign keys and %d checks: the catalog queries miss something",
				name, len(s.Columns), len(s.Indexes), len(s.ForeignKeys), len(s.Checks))
		}
	}
	tables := slices.Sorted(maps.Keys(pg.Columns))
	if got := slices.Sorted(maps.Keys(lite.Columns)); !slices.Equal(got, tables) {
		t.Errorf("tables differ:\nsqlite:   %v\npostgres: %v", got, tables)
	}
	nullablePK := map[string]bool{}
	for _, c := range sqliteNullablePrimaryKeys {
		nullablePK[c] = true
	}
	for _, table := range tables {
		names := slices.Sorted(maps.Keys(pg.Columns[table]))
		if got := slices.Sorted(maps.Keys(lite.Columns[table])); !slices.Equal(got, names) {
			t.Errorf("columns of %s differ:\nsqlite:   %v\npostgres: %v", table, got, names)
			continue
		}
		for _, name := range names {
			p, l, where := pg.Columns[table][name], lite.Columns[table][name], table+"."+name
			if stand, ok := sqliteStandIns[p.Family]; p.Family != l.Family && !(ok && stand.family == l.Family) {
				t.Errorf("%s: type family %s on PostgreSQL, %s on SQLite", where, p.Family, l.Family)
			}
			switch {
			case p.NotNull == l.NotNull:
				if nullablePK[where] {
					t.Errorf("%s is in sqliteNullablePrimaryKeys but agrees: remove it from the list", where)
				}
			case p.NotNull && !l.NotNull && nullablePK[where]:
			default:
				t.Errorf("%s: NOT NULL %v on PostgreSQL, %v on SQLite", where, p.NotNull, l.NotNull)
			}
		}
	}
	for _, part := range []struct {
		what     string
		lite, pg []string
	}{
		{"indexes", lite.Indexes, pg.Indexes},
		{"foreign keys", lite.ForeignKeys, pg.ForeignKeys},
		{"check constraints", lite.Checks, pg.Checks},
	} {
		if !slices.Equal(part.lite, part.pg) {
			t.Errorf("%s differ:\nonly on sqlite:   %q\nonly on postgres: %q", part.what, without(part.lite, part.pg), without(part.pg, part.lite))
		}
	}
	t.Logf("compared %d tables, %d indexes, %d foreign keys and %d check constraints", len(tables), len(pg.Indexes), len(pg.ForeignKeys), len(pg.Checks))
}

// without returns the entries of a that b lacks.
func without(a, b []string) []string {
	var out []string
	for _, s := range a {
		if !slices.Contains(b, s) {
			out = append(out, s)
		}
	}
	return out
}

// TestCanonicalExpr holds canonicalExpr to the forms the two catalogs give
// of one expression.
func TestCanonicalExpr(t *testing.T) {
	for _, pair := range [][2]string{
		{`(status = ANY (ARRAY['TRIAL'::text, 'ACTIVE'::text]))`, `status IN ('TRIAL', 'ACTIVE')`},
		{`(((trial_days >= 0) AND (trial_days <= 90)))`, `trial_days BETWEEN 0 AND 90`},
		{`(hash ~~ 'argon2id|%'::text)`, `hash LIKE 'argon2id|%'`},
		{`(created_by_key IS NOT NULL)`, `created_by_key IS NOT NULL`},
	} {
		if pg, lite := canonicalExpr(pair[0]), canonicalExpr(pair[1]); pg != lite {
			t.Errorf("%s → %q but %s → %q", pair[0], pg, pair[1], lite)
		}
	}
	for _, pair := range [][2]string{
		{`x IN ('a', 'b')`, `x IN ('a', 'c')`},
		{`status IN ('FROZEN')`, `status IN ('Frozen')`},
	} {
		if a := canonicalExpr(pair[0]); a == canonicalExpr(pair[1]) {
			t.Errorf("%s and %s read alike: %q", pair[0], pair[1], a)
		}
	}
	checks, err := sqliteChecks("CREATE TABLE t (\n  -- a check (of a comment)\n  a TEXT CHECK (a IN ('x', ')')),\n  checked INTEGER, CHECK(checked >= 0)\n)")
	if err != nil || !slices.Equal(checks, []string{"a IN ('x', ')')", "checked >= 0"}) {
		t.Errorf("sqliteChecks = %q, %v", checks, err)
	}
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
		all, err := m.Status(ctx)
		if err != nil || len(all) == 0 {
			t.Fatalf("status: %v, %v", all, err)
		}
		for {
			pending, err := m.Pending(ctx)
			if err != nil {
				t.Fatal(err)
			}
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
		pending, err := m.Pending(ctx)
		if err != nil || len(pending) != 0 {
			t.Fatalf("pending after up: %v, %v", pending, err)
		}
	})
}
