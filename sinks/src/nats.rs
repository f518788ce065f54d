//! NATS JetStream (or core NATS) sink. Being written — see `NatsOptions`.
