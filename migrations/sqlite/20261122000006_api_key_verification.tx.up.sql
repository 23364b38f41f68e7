-- PostgreSQL caches the verification query's plan in a function; SQLite
-- prepares statements itself and needs nothing.
SELECT 1;
