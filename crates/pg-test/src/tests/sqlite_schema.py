"""Prints the shape of the schema the SQLite migrations given as arguments build, in memory, one
fact a line, in the form POSTGRES_SHAPE in schema.rs prints the PostgreSQL schema:

    table things(id INTEGER!, name TEXT!, properties TEXT)    columns in order; ! is NOT NULL
    key thing_locations(thing_id, location_id)                 the primary key
    unique projects(name)
    index thing_locations_location on thing_locations(location_id) [partial]
    foreign datastreams(thing_id) -> things(id) on delete cascade

A column without a declared type is ANY.
"""

import sqlite3
import sys

db = sqlite3.connect(":memory:")
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as migration:
        db.executescript(migration.read())

tables = [
    name
    for (name,) in db.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
    )
]
for table in tables:
    columns = db.execute(f"PRAGMA table_info({table})").fetchall()
    # A key column is NOT NULL in PostgreSQL whatever it says; in SQLite an INTEGER PRIMARY KEY
    # is the rowid, which cannot be NULL either.
    shown = [f"{name} {kind or 'ANY'}{'!' if notnull or pk else ''}" for _, name, kind, notnull, _, pk in columns]
    print(f"table {table}({', '.join(shown)})")
    key = [name for _, name, _, _, _, pk in sorted(columns, key=lambda c: c[5]) if pk]
    if key:
        print(f"key {table}({', '.join(key)})")
    for _, index, _, origin, partial in db.execute(f"PRAGMA index_list({table})"):
        # An indexed expression has no column name.
        indexed = ", ".join(name or "(expression)" for _, _, name in db.execute(f"PRAGMA index_info({index})"))
        if origin == "u":
            print(f"unique {table}({indexed})")
        elif origin == "c":
            print(f"index {index} on {table}({indexed}){' partial' if partial else ''}")
    for row in db.execute(f"PRAGMA foreign_key_list({table})"):
        _, _, target, column, target_column, _, on_delete, _ = row
        print(f"foreign {table}({column}) -> {target}({target_column}) on delete {on_delete.lower()}")
