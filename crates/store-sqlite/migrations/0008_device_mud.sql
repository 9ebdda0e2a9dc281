-- A device class may carry its manufacturer's RFC 8520 MUD file (JSON, as given).
ALTER TABLE device_classes ADD COLUMN mud TEXT;
