//! Real-engine resilience scenarios: shutdown under load, crash recovery, replicas, an engine
//! restart, and Basic auth.
