CREATE TABLE products (
    key          TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    trial_days   INTEGER NOT NULL CHECK (trial_days BETWEEN 0 AND 90),
    create_time  TIMESTAMP NOT NULL,
    update_time  TIMESTAMP NOT NULL
);
