-- What tells one shared directory from another: a gateway's on-disk copy
-- records it, and a copy of another directory (a gateway pointed at another
-- database, a restore) is never merged with this one.
ALTER TABLE metergate_version
    ADD COLUMN directory_id text NOT NULL DEFAULT md5(random()::text || clock_timestamp()::text);
