//! Root package: it only hosts the seed distributed test suite under `tests/`.
