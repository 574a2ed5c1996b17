-- The guard's state that gateways share: Peak Demand Reset slots per meter
-- (two gateways in front of one meter give one allow), failure runs of
-- passwords and codes per principal (a guesser spread over many sites still
-- gets the configured count), and the TOTP steps used (a code counts once
-- across the fleet). Each row is changed under its own row lock.
CREATE TABLE metergate_guard_state (
    key text PRIMARY KEY,
    value bytea,
    changed timestamptz NOT NULL DEFAULT now()
);
