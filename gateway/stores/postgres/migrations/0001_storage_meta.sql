-- One row per store naming the deployment that owns the database, so that two
-- regions' gateways pointed at one database by mistake notice it.
CREATE TABLE storage_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);
