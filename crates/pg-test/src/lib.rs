//! Test support only: a throwaway PostgreSQL cluster (work in progress).
