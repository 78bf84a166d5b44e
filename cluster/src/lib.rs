//! helios-cluster: the database under test.
