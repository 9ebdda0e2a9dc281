//! The PostgreSQL/PostGIS backend (work in progress): the schema lives in `migrations/`.
