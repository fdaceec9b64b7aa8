"""Message queues: ground-truth labels consumed from a broker, prediction events published to
one (docs/streams.md). FastStream speaks to every broker (RabbitMQ, NATS JetStream, Redis
streams, Kafka): one code path, four transports."""
