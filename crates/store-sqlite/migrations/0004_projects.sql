-- Projects (tenants): every entity belongs to one, and access rights are granted per project
-- (issue 5). Project 1 is the default project every existing and new entity starts in.
--
-- `project_id` has no REFERENCES clause: SQLite cannot add a referencing column with a
-- non-NULL default while foreign keys are on. The application never deletes a project that
-- still owns entities. Adding a column with a constant default does not rewrite the tables.

CREATE TABLE projects (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    -- Reads of an open-data project are public (ITU-T Y.4461); writes stay authenticated.
    open_data INTEGER NOT NULL DEFAULT 0
);
INSERT INTO projects (id, name) VALUES (1, 'default');

ALTER TABLE things ADD COLUMN project_id INTEGER NOT NULL DEFAULT 1;
ALTER TABLE locations ADD COLUMN project_id INTEGER NOT NULL DEFAULT 1;
ALTER TABLE historical_locations ADD COLUMN project_id INTEGER NOT NULL DEFAULT 1;
ALTER TABLE sensors ADD COLUMN project_id INTEGER NOT NULL DEFAULT 1;
ALTER TABLE observed_properties ADD COLUMN project_id INTEGER NOT NULL DEFAULT 1;
ALTER TABLE datastreams ADD COLUMN project_id INTEGER NOT NULL DEFAULT 1;
ALTER TABLE multi_datastreams ADD COLUMN project_id INTEGER NOT NULL DEFAULT 1;
ALTER TABLE features ADD COLUMN project_id INTEGER NOT NULL DEFAULT 1;
ALTER TABLE observations ADD COLUMN project_id INTEGER NOT NULL DEFAULT 1;
