-- A device class may carry its manufacturer's RFC 8520 MUD file (JSON, as given), as SQLite's
-- 0008_device_mud.sql.
ALTER TABLE device_classes ADD COLUMN mud text;
