//! helios-workload: clients, nemesis and recorder.
