CREATE TABLE products (
    key          text PRIMARY KEY,
    display_name text NOT NULL,
    description  text NOT NULL DEFAULT '',
    trial_days   integer NOT NULL CHECK (trial_days BETWEEN 0 AND 90),
    create_time  timestamptz NOT NULL,
    update_time  timestamptz NOT NULL
);
