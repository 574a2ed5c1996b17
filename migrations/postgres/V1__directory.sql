-- The directory shared by gateways: the same records as a gateway's local
-- store (key -> JSON). A deleted record keeps its row with value NULL, so
-- a gateway catching up sees the delete.
CREATE TABLE metergate_directory (
    key bytea PRIMARY KEY,
    value bytea,
    changed bigint NOT NULL
);
CREATE INDEX metergate_directory_changed ON metergate_directory (changed);

-- One row: the directory's version, bumped by every change. Every change
-- locks it, so changes from all gateways apply one after the other.
CREATE TABLE metergate_version (
    id int PRIMARY KEY CHECK (id = 1),
    version bigint NOT NULL
);
INSERT INTO metergate_version (id, version) VALUES (1, 0);

-- The gateways sharing the directory, as last seen (directory status).
CREATE TABLE metergate_gateways (
    name text PRIMARY KEY,
    seen timestamptz NOT NULL,
    version bigint NOT NULL
);
