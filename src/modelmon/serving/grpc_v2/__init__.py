"""The Open Inference Protocol (V2) over gRPC (``modelmon serve --grpc-port``): the .proto,
its generated messages (``scripts/gen_grpc.sh``), the message codec and the service."""
